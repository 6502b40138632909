"""The Slurm adapter: sbatch, squeue, scancel and sinfo rendered and read, no process run here.

squeue and sinfo are asked for fields separated by the ASCII unit separator (0x1f), which no
partition, account, state or reason contains. A job name can hold anything, the separator and
newlines included, so it comes last (split off with a bounded split) and each squeue record ends
with the record separator (0x1e) before its newline: a record is over only at that pair.

Slurm prints a two-part duration as minutes and seconds (``5:00`` is five minutes).
squeue has no exit code field in ``-o`` formats, so ``exit_code`` stays None; the state says
how a job ended (COMPLETED, FAILED, TIMEOUT...) and the reason often adds why.
"""

from __future__ import annotations

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

NAME = "slurm"

_SEP = "\x1f"
_END = "\x1e"
# id, state (long form), nodes, time limit, partition, account, reason, then the name last.
_STATUS_FIELDS = ("%i", "%T", "%D", "%l", "%P", "%a", "%r", "%j")
_BACKFILL_FIELDS = ("%R", "%a", "%l", "%D", "%T")  # partition (no '*'), availability, limit, nodes, state

_STATES = {
    # Waiting for an allocation, held, or put back in the queue.
    "PENDING": BatchState.QUEUED,
    "REQUEUED": BatchState.QUEUED,
    "REQUEUE_HOLD": BatchState.QUEUED,
    "REQUEUE_FED": BatchState.QUEUED,
    "RESV_DEL_HOLD": BatchState.QUEUED,
    "SPECIAL_EXIT": BatchState.QUEUED,  # requeued and held after an exit value the site singles out
    # The allocation exists: booting, running, paused, resizing or being torn down.
    "CONFIGURING": BatchState.RUNNING,
    "RUNNING": BatchState.RUNNING,
    "COMPLETING": BatchState.RUNNING,
    "RESIZING": BatchState.RUNNING,
    "SIGNALING": BatchState.RUNNING,
    "STAGE_OUT": BatchState.RUNNING,
    "SUSPENDED": BatchState.RUNNING,
    "STOPPED": BatchState.RUNNING,
    # Over, one way or another.
    "COMPLETED": BatchState.FINISHED,
    "CANCELLED": BatchState.FINISHED,
    "FAILED": BatchState.FINISHED,
    "TIMEOUT": BatchState.FINISHED,
    "NODE_FAIL": BatchState.FINISHED,
    "PREEMPTED": BatchState.FINISHED,
    "BOOT_FAIL": BatchState.FINISHED,
    "DEADLINE": BatchState.FINISHED,
    "OUT_OF_MEMORY": BatchState.FINISHED,
    "REVOKED": BatchState.FINISHED,  # a federation sibling started it elsewhere: nothing runs here
}

_GONE = ("invalid job id specified", "already completing or completed")


def submit_argv(req: BatchRequest) -> list[str]:
    # sbatch expands %j, %x... in the output path; %% is a literal percent sign.
    argv = ["sbatch", "--parsable", "-N", str(req.nodes), "-t", str(req.minutes), "-J", req.name,
            "-o", str(req.output).replace("%", "%%")]  # fmt: skip
    if req.project:
        argv += ["-A", req.project]
    if req.queue:
        argv += ["-p", req.queue]
    return [*argv, str(req.script)]


def parse_submit(stdout: str) -> str:
    """The job id from ``sbatch --parsable``: ``ID`` or, on a multi-cluster setup, ``ID;cluster``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    job_id = lines[-1].split(";", 1)[0].strip() if lines else ""
    if not job_id.isdigit():
        raise SchedulerError(f"sbatch printed no job id: {error_summary(stdout)}")
    return job_id


def status_argv(user: str) -> list[str]:
    return ["squeue", "-h", "-u", user, "-t", "all", "-o", _SEP.join(_STATUS_FIELDS) + _END]


def parse_status(stdout: str) -> list[BatchStatus]:
    text = stdout.rstrip("\n")
    if not text.strip():
        return []
    if not text.endswith(_END):
        raise SchedulerError(f"squeue output does not end a record where expected: {text[-120:]!r}")
    listing = []
    for number, record in enumerate(text[: -len(_END)].split(_END + "\n"), 1):
        fields = record.split(_SEP, len(_STATUS_FIELDS) - 1)
        if len(fields) != len(_STATUS_FIELDS):
            raise SchedulerError(
                f"squeue record {number} has {len(fields)} fields, expected {len(_STATUS_FIELDS)} "
                f"(id, state, nodes, time limit, partition, account, reason, name): {record!r}"
            )
        listing.append(_status(number, record, fields))
    return listing


def _status(number: int, record: str, fields: list[str]) -> BatchStatus:
    job_id, native, nodes, limit, partition, account, reason = (f.strip() for f in fields[:-1])
    name = fields[-1]  # as given, spaces and all
    if not job_id:
        raise SchedulerError(f"squeue record {number} has no job id: {record!r}")
    try:
        node_count = int(nodes.split("-")[0]) if nodes else None  # a pending range "2-4" prints its minimum
        minutes = parse_minutes(limit, two_parts="mm:ss")
    except ValueError:
        raise SchedulerError(f"squeue record {number} has unreadable nodes {nodes!r} or time limit {limit!r}: {record!r}") from None
    # A state newer than this list: keep the job in view as waiting, neither holding nodes nor
    # over, so the site neither forgets it nor counts on it; native_state says what Slurm said.
    state = _STATES.get(native, BatchState.QUEUED)
    if reason == "None":
        reason = ""
    if state is BatchState.FINISHED:
        # A cancelled job keeps the reason it was waiting for ("JobHeldUser"): not how it ended.
        detail = reason if native != "CANCELLED" else ""
        reason = native.lower() + (f" ({detail})" if detail else "")
    return BatchStatus(
        id=job_id, state=state, name=name, nodes=node_count, minutes=minutes, queue=partition,
        project="" if account == "(null)" else account, native_state=native, reason=reason,
    )  # fmt: skip


def delete_argv(job_id: str) -> list[str]:
    # Plain scancel exits 0 without a word for a finished or unknown id (Slurm 22.05).
    return ["scancel", job_id]


def delete_gone(stderr: str) -> bool:
    """Whether scancel failed only because the job is already over or unknown."""
    return mentions_any(stderr, _GONE)


def backfill_argv() -> list[str] | None:
    return ["sinfo", "-h", "-t", "idle", "-o", _SEP.join(_BACKFILL_FIELDS)]


def parse_backfill(stdout: str) -> list[BackfillWindow]:
    """Idle nodes per partition, each usable up to the partition's time limit.

    sinfo cannot see the reservations Slurm's backfill scheduler plans for pending jobs, so a
    window is what the partition allows on nodes idle now, not a promise. A node in two
    partitions is counted in each.
    """
    idle: dict[str, int] = {}
    limits: dict[str, int | None] = {}
    for number, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(_SEP)
        if len(fields) != len(_BACKFILL_FIELDS):
            raise SchedulerError(
                f"sinfo line {number} has {len(fields)} fields, expected {len(_BACKFILL_FIELDS)} "
                f"(partition, availability, time limit, nodes, state): {line!r}"
            )
        partition, avail, limit, nodes, node_state = (f.strip() for f in fields)
        # "idle" only: idle* (not responding), idle~ (powered off) and idle# (booting) cannot start a job now.
        if avail != "up" or node_state != "idle":
            continue
        try:
            count, minutes = int(nodes), parse_minutes(limit, two_parts="mm:ss")
        except ValueError:
            raise SchedulerError(f"sinfo line {number} has unreadable nodes {nodes!r} or time limit {limit!r}: {line!r}") from None
        idle[partition] = idle.get(partition, 0) + count
        limits[partition] = minutes  # None: the partition has no time limit
    return [BackfillWindow(nodes=n, minutes=limits[p], queue=p) for p, n in idle.items() if n > 0]
