"""The PBS Professional adapter: qsub, qselect with qstat, qdel and pbsnodes rendered and read.

Written to PBS Professional 2021-2024 and OpenPBS 20-23 (``qstat -F json`` and ``pbsnodes -F
json`` exist since PBS Pro 14.1); run nothing here.

Whole nodes: ``select=N`` asks for N chunks of the default one cpu each, which PBS may pack onto
one host; ``place=scatter:exclhost`` puts every chunk on a host of its own and keeps other jobs off.

The listing: ``qstat -f`` cannot take ``-u`` (the user filter switches qstat to its one-line
format), and without it ``-x`` would print every user's history. So a short shell step asks
``qselect`` for the user's job ids, with history if the server keeps it, and passes them to
``qstat -f -F json``. A job purged from history between the two calls makes qstat exit with
PBSE_UNKJOBID (15001, seen as 153) after printing the others: that is not a failure.

States: S and U (suspended) still hold their nodes, so they count as running; T (in transit
between queues) has not started. M means the job moved to another server (peer scheduling):
this server says nothing more about it, so it is over as far as this site can follow it.

Backfill: pbsnodes shows which hosts are free but not for how long (PBS keeps its calendar of top
jobs to itself), so a window's minutes are None, as long as the queue allows. Hosts tied to a
reservation are left out, since it may begin at any time.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from balsam.site.scheduler.base import (
    BackfillWindow,
    BatchRequest,
    BatchState,
    BatchStatus,
    SchedulerError,
    error_summary,
    hhmmss,
    mentions_any,
    parse_minutes,
)

NAME = "pbs"

_STATES = {
    "Q": BatchState.QUEUED,
    "H": BatchState.QUEUED,
    "W": BatchState.QUEUED,
    "T": BatchState.QUEUED,
    "R": BatchState.RUNNING,
    "B": BatchState.RUNNING,
    "E": BatchState.RUNNING,
    "S": BatchState.RUNNING,
    "U": BatchState.RUNNING,
    "F": BatchState.FINISHED,
    "X": BatchState.FINISHED,
    "M": BatchState.FINISHED,
}

# $1 is the user. set -f: an array job's id ("12[].pbs01") must reach qstat unglobbed.
_LIST_USER_JOBS = (
    'set -f; live=$(qselect -u "$1") || exit; '
    'if all=$(qselect -x -u "$1" 2>/dev/null) && [ -n "$all" ]; then ids=$all; x=-x; else ids=$live; x=; fi; '
    '[ -n "$ids" ] || exit 0; '
    "qstat -f -F json $x $ids; code=$?; [ $code -eq 153 ] && exit 0; exit $code"
)
_JOB_ID = re.compile(r"^\d+(\[\d*\])?(\.[\w.-]+)?$")
_GONE = ("unknown job id", "has finished")


def submit_argv(req: BatchRequest) -> list[str]:
    argv = ["qsub", "-N", req.name, "-l", f"select={req.nodes}", "-l", "place=scatter:exclhost",
            "-l", f"walltime={hhmmss(req.minutes)}", "-o", str(req.output), "-j", "oe"]  # fmt: skip
    if req.project:
        argv += ["-A", req.project]
    if req.queue:
        argv += ["-q", req.queue]
    return [*argv, str(req.script)]


def parse_submit(stdout: str) -> str:
    """The job id qsub prints alone on a line: ``SEQUENCE.SERVER``."""
    ids = [line.strip() for line in stdout.splitlines() if _JOB_ID.match(line.strip())]
    if not ids:
        raise SchedulerError(f"qsub printed no job id: {error_summary(stdout)}")
    return ids[-1]


def status_argv(user: str) -> list[str]:
    return ["/bin/sh", "-c", _LIST_USER_JOBS, "balsam-pbs-status", user]


def parse_status(stdout: str) -> list[BatchStatus]:
    if not stdout.strip():
        return []  # the user has no jobs: qstat was not asked
    jobs = _json(stdout, "qstat").get("Jobs", {})
    if not isinstance(jobs, dict):
        raise SchedulerError(f"qstat JSON has 'Jobs' that is not an object: {_excerpt(stdout)}")
    return [_status(job_id, attributes) for job_id, attributes in jobs.items()]


def _status(job_id: str, attributes: object) -> BatchStatus:
    if not isinstance(attributes, dict):
        raise SchedulerError(f"qstat JSON job {job_id} is not an object: {attributes!r:.120}")
    native = str(attributes.get("job_state", ""))
    # A state this table does not know is most likely a new way of waiting; keeping the job
    # queued keeps it in view without ending a job that may still run.
    state = _STATES.get(native, BatchState.QUEUED)
    resources = attributes.get("Resource_List") or {}
    if not isinstance(resources, dict):
        raise SchedulerError(f"qstat JSON job {job_id} has a Resource_List that is not an object: {resources!r:.120}")
    try:
        nodes = _nodes(resources)
        minutes = parse_minutes(str(resources["walltime"])) if "walltime" in resources else None
        code = attributes.get("Exit_status")
        exit_code = int(code) if code is not None else None
    except (ValueError, TypeError) as exc:
        raise SchedulerError(f"qstat JSON job {job_id} has an unreadable value ({exc}): {resources!r:.200}") from None
    comment = str(attributes.get("comment", ""))
    reason = _ending(native, exit_code, comment) if state is BatchState.FINISHED else comment
    return BatchStatus(
        id=job_id, state=state, name=str(attributes.get("Job_Name", "")), nodes=nodes, minutes=minutes,
        queue=str(attributes.get("queue", "")), project=str(attributes.get("Account_Name", "")),
        native_state=native, reason=reason, exit_code=exit_code,
    )  # fmt: skip


def _nodes(resources: dict) -> int | None:
    if "nodect" in resources:
        return int(resources["nodect"])
    if "select" in resources:
        # "2:ncpus=64+1:ncpus=8" is three chunks; a chunk without a count is one.
        chunks = str(resources["select"]).split("+")
        return sum(int(c.split(":")[0]) if c.split(":")[0].isdigit() else 1 for c in chunks)
    return None


def _ending(native: str, code: int | None, comment: str) -> str:
    if native == "M":
        how = "moved to another server"
    elif code is None:
        how = "finished"
    elif code == 0:
        how = "completed"
    elif code < 0:
        how = f"PBS could not run it (Exit_status {code})"
    elif code > 256:
        how = f"killed by signal {code - 256}"
    elif 128 < code < 254:
        how = f"killed by signal {code - 128}"
    else:
        how = f"exited with code {code}"
    return f"{how}; {comment}" if comment else how


def delete_argv(job_id: str) -> list[str]:
    return ["qdel", job_id]


def delete_gone(stderr: str) -> bool:
    """qdel refused because the job is unknown (never here, or purged) or already finished."""
    return mentions_any(stderr, _GONE)


def backfill_argv() -> list[str] | None:
    return ["pbsnodes", "-a", "-F", "json"]


def parse_backfill(stdout: str) -> list[BackfillWindow]:
    """Hosts whose every vnode is free, unreserved and unused, counted per queue the host serves."""
    if not stdout.strip():
        return []
    vnodes = _json(stdout, "pbsnodes").get("nodes", {})
    if not isinstance(vnodes, dict):
        raise SchedulerError(f"pbsnodes JSON has 'nodes' that is not an object: {_excerpt(stdout)}")
    idle: dict[str, bool] = {}
    queue_of: dict[str, str] = {}
    for name, vnode in vnodes.items():
        if not isinstance(vnode, dict):
            raise SchedulerError(f"pbsnodes JSON node {name} is not an object: {vnode!r:.120}")
        try:
            host = str((vnode.get("resources_available") or {}).get("host", name))
            free = _vnode_idle(vnode)
        except (ValueError, TypeError, AttributeError):
            raise SchedulerError(f"pbsnodes JSON node {name} has unreadable resources: {vnode!r:.200}") from None
        idle[host] = idle.get(host, True) and free
        queue_of.setdefault(host, str(vnode.get("queue", "")))
    counts = Counter(queue_of[host] for host, free in idle.items() if free)
    return [BackfillWindow(nodes=n, minutes=None, queue=queue) for queue, n in sorted(counts.items())]


def _vnode_idle(vnode: dict) -> bool:
    assigned = vnode.get("resources_assigned") or {}
    return (vnode.get("state") == "free" and not vnode.get("jobs") and "resv" not in vnode
            and not int(assigned.get("ncpus", 0) or 0))  # fmt: skip


def _json(stdout: str, command: str) -> dict:
    try:
        document = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise SchedulerError(f"{command} printed something that is not JSON ({exc.msg}, line {exc.lineno}): {_excerpt(stdout)}") from None
    if not isinstance(document, dict):
        raise SchedulerError(f"{command} JSON is not an object: {_excerpt(stdout)}")
    return document


def _excerpt(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")
