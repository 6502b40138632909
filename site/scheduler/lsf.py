"""The IBM Spectrum LSF adapter: bsub, bjobs, bkill and bslots rendered and read, no process run here.

Written to IBM Spectrum LSF 10.1 (``bjobs -o ... -json``, ``bslots -l``).

Whole nodes: ``bsub -nnodes`` exists only with the IBM CSM integration (Summit and Sierra class
machines), so this asks what any LSF cluster understands: N tasks, one per host (``span[ptile=1]``),
with the hosts kept from other jobs (``-x``; the queue must accept exclusive jobs). LSF then
reports N requested slots and, once running, N execution hosts.

The listing is ``bjobs -a`` (recently finished jobs too, for CLEAN_PERIOD, an hour by default) as
JSON. The run limit prints in minutes (``60.0``), with a host name after it under ABS_RUNLIMIT
(``60.0/hostA``), or as ``hh:mm:ss`` where LSB_HMS_TIME_FORMAT is set; all three are read. A
DONE job's exit code is blank: zero. USUSP and SSUSP (suspended) keep their hosts; UNKWN (its
host stopped answering) and ZOMBI (killed while unreachable) still hold them until LSF cleans up.

Backfill: ``bslots -l`` lists each window with the hosts in it and their free slots. LSF counts
slots, not hosts, and says nothing of a host's size, so a host is taken as wholly free when it
shows as many free slots as the emptiest host in the listing; the window of a host is the longest
one it appears in. bslots is not per queue.
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
    mentions_any,
    parse_minutes,
)

NAME = "lsf"

_FIELDS = ("jobid", "stat", "queue", "job_name", "proj_name", "nreq_slot", "nexec_host", "runtimelimit",
           "exit_code", "exit_reason", "pend_reason")  # fmt: skip

_STATES = {
    "PEND": BatchState.QUEUED,
    "PSUSP": BatchState.QUEUED,
    "WAIT": BatchState.QUEUED,
    "RUN": BatchState.RUNNING,
    "USUSP": BatchState.RUNNING,
    "SSUSP": BatchState.RUNNING,
    "UNKWN": BatchState.RUNNING,
    "ZOMBI": BatchState.RUNNING,
    "DONE": BatchState.FINISHED,
    "EXIT": BatchState.FINISHED,
}

_SUBMITTED = re.compile(r"Job <(\d+)> is submitted to")
_NO_JOBS = ("no job found", "no unfinished job found", "no matching job found")
_GONE = ("has already finished", "no matching job found", "is not found")
_NO_WINDOW = "no backfill window"
_RUNTIME = re.compile(r"(?:(\d+) hours?)?\s*(?:(\d+) minutes?)?\s*(?:(\d+) seconds?)?")


def submit_argv(req: BatchRequest) -> list[str]:
    argv = ["bsub", "-J", req.name, "-n", str(req.nodes), "-R", "span[ptile=1]", "-x",
            "-W", f"{req.minutes // 60}:{req.minutes % 60:02d}", "-o", str(req.output)]  # fmt: skip
    if req.project:
        argv += ["-P", req.project]
    if req.queue:
        argv += ["-q", req.queue]
    return [*argv, str(req.script)]


def parse_submit(stdout: str) -> str:
    """The id from ``Job <ID> is submitted to [default ]queue <QUEUE>.``"""
    found = _SUBMITTED.findall(stdout)
    if not found:
        raise SchedulerError(f"bsub printed no job id: {error_summary(stdout)}")
    return found[-1]


def status_argv(user: str) -> list[str]:
    return ["bjobs", "-u", user, "-a", "-o", " ".join(_FIELDS), "-json"]


def parse_status(stdout: str) -> list[BatchStatus]:
    text = stdout.strip()
    if not text or text.lower().rstrip(".") in _NO_JOBS:
        return []
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchedulerError(f"bjobs printed something that is not JSON ({exc.msg}, line {exc.lineno}): {_excerpt(text)}") from None
    records = document.get("RECORDS") if isinstance(document, dict) else None
    if not isinstance(records, list):
        raise SchedulerError(f"bjobs JSON has no list of RECORDS: {_excerpt(text)}")
    # A record that only holds ERROR ("Job <7> is not found") is bjobs reporting on a job, not a job.
    return [_status(number, record) for number, record in enumerate(records, 1) if not _error_only(record)]


def _error_only(record: object) -> bool:
    return isinstance(record, dict) and "ERROR" in record and "JOBID" not in record


def _status(number: int, record: object) -> BatchStatus:
    if not isinstance(record, dict) or not str(record.get("JOBID", "")).strip():
        raise SchedulerError(f"bjobs record {number} has no JOBID: {record!r:.200}")
    native = str(record.get("STAT", ""))
    # A state this table does not know is most likely a new way of waiting; keeping the job
    # queued keeps it in view without ending a job that may still run.
    state = _STATES.get(native, BatchState.QUEUED)
    try:
        hosts, slots = _count(record.get("NEXEC_HOST")), _count(record.get("NREQ_SLOT"))
        minutes = _run_limit(str(record.get("RUNTIMELIMIT", "")))
        code = str(record.get("EXIT_CODE", "")).strip()
        exit_code = int(code) if code else (0 if native == "DONE" else None)
    except ValueError:
        raise SchedulerError(f"bjobs record {number} has unreadable slots, hosts, run limit or exit code: {record!r:.300}") from None
    if state is BatchState.FINISHED:
        reason = _ending(native, exit_code, str(record.get("EXIT_REASON", "")).strip())
    else:
        reason = str(record.get("PEND_REASON", "")).strip().rstrip(";").strip()
    return BatchStatus(
        id=str(record["JOBID"]).strip(), state=state, name=str(record.get("JOB_NAME", "")),
        nodes=hosts or slots, minutes=minutes, queue=str(record.get("QUEUE", "")),
        project=str(record.get("PROJ_NAME", "")), native_state=native, reason=reason, exit_code=exit_code,
    )  # fmt: skip


def _count(value: object) -> int | None:
    text = str(value or "").strip()
    return int(text) if text and text != "-" else None


def _run_limit(text: str) -> int | None:
    limit = text.split("/", 1)[0].strip()
    if ":" in limit:
        return parse_minutes(limit)
    return int(float(limit)) if limit and limit != "-" else None


def _ending(native: str, code: int | None, why: str) -> str:
    if native == "DONE":
        return "completed"
    how = f"exited with code {code}" if code is not None else "exited"
    return f"{why} ({how})" if why else how


def delete_argv(job_id: str) -> list[str]:
    return ["bkill", job_id]


def delete_gone(stderr: str) -> bool:
    """bkill refused because the job already finished or LSF no longer knows it."""
    return mentions_any(stderr, _GONE)


def backfill_argv() -> list[str] | None:
    return ["bslots", "-l"]


def parse_backfill(stdout: str) -> list[BackfillWindow]:
    """Wholly free hosts grouped by the longest window each appears in."""
    if not stdout.strip() or _NO_WINDOW in stdout.lower():
        return []
    longest: dict[str, int | None] = {}
    free_slots: dict[str, int] = {}
    for number, (runtime, hosts) in enumerate(_windows(stdout), 1):
        minutes = _window_minutes(runtime, number)
        for slots, host in hosts:
            free_slots[host] = max(free_slots.get(host, 0), slots)
            if host not in longest or _longer(minutes, longest[host]):
                longest[host] = minutes
    if not free_slots:
        return []
    whole = max(free_slots.values())
    counts = Counter(longest[host] for host, slots in free_slots.items() if slots == whole and longest[host] != 0)
    unlimited_then_longest = sorted(counts, key=lambda minutes: (minutes is not None, -(minutes or 0)))
    return [BackfillWindow(nodes=counts[minutes], minutes=minutes) for minutes in unlimited_then_longest]


def _windows(stdout: str) -> list[tuple[str, list[tuple[int, str]]]]:
    """(RUNTIME, [(free slots, host)]) of each ``SLOTS:`` block; a long HOSTS list may wrap."""
    windows: list[tuple[str, list[tuple[int, str]]]] = []
    key = ""
    for line in stdout.splitlines():
        if not line.strip():
            continue
        head, sep, rest = line.partition(":")
        if sep and head.strip() in ("SLOTS", "RUNTIME", "HOSTS"):
            key = head.strip()
            if key == "SLOTS":
                windows.append(("", []))
        elif key != "HOSTS" or not windows:
            raise SchedulerError(f"bslots -l printed a line outside a SLOTS/RUNTIME/HOSTS block: {line!r}")
        else:
            rest = line
        if key == "RUNTIME" and sep:
            windows[-1] = (rest.strip(), windows[-1][1])
        elif key == "HOSTS":
            windows[-1][1].extend(_hosts(rest, line))
    return windows


def _hosts(text: str, line: str) -> list[tuple[int, str]]:
    hosts = []
    for word in text.split():
        count, star, host = word.partition("*")
        if not (star and count.isdigit() and host):
            raise SchedulerError(f"bslots -l lists a host not as SLOTS*HOST: {word!r} in {line!r}")
        hosts.append((int(count), host))
    return hosts


def _window_minutes(runtime: str, number: int) -> int | None:
    if runtime.upper() == "UNLIMITED":
        return None
    match = _RUNTIME.fullmatch(runtime.strip())
    if not runtime.strip() or not match or not any(match.groups()):
        raise SchedulerError(f"bslots -l window {number} has an unreadable RUNTIME: {runtime!r}")
    hours, minutes, _seconds = (int(g or 0) for g in match.groups())
    return hours * 60 + minutes


def _longer(a: int | None, b: int | None) -> bool:
    return b is not None and (a is None or a > b)


def _excerpt(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def listing_is_empty(output: str) -> bool:
    """bjobs exits non-zero when the user has no jobs at all; that is an empty listing, not an error."""
    return mentions_any(output, _NO_JOBS)
