"""The Cobalt adapter (ALCF): qsub, qstat, qdel and nodelist rendered and read, no process run here.

Written to the Cobalt clients of its final releases (cluster and Cray/ALPS systems: Cooley, Theta).
qsub prints only the job id on stdout; everything else goes to stderr.

qstat and nodelist print tables in which every column is left-justified to its widest cell and
followed by two spaces, under a header and a line of ``=``. Cells are read by the header's column
positions, so an empty cell (a node in no queue) does not shift the others. The columns asked of
qstat are named with ``--header``, which overrides QSTAT_HEADER and cobalt.conf; the job name,
the one cell a user chose, comes last.

qstat lists jobs until they leave the queue manager; it has no exit status column, so a finished
job shows as ``done`` for a moment and then is simply gone. ``starting`` (prologue scripts before
the job runs) and ``preempted`` (waiting to resume) are not running yet; ``killing`` and
``exiting`` are an allocation being torn down.

Backfill: nodelist exists on cluster and Cray systems (a Blue Gene answers on stderr with nothing
on stdout). Its Backfill column is how long an idle node stays free before a drain for a waiting
job; ``-`` on an idle node means no drain is planned, so the window is None (as long as the queue
allows). A node in several queues (``default:backfill``) counts in each.
"""

from __future__ import annotations

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

NAME = "cobalt"

_STATUS_COLUMNS = ("JobID", "State", "Nodes", "WallTime", "Queue", "Project", "JobName")

_STATES = {
    "queued": BatchState.QUEUED,
    "user_hold": BatchState.QUEUED,
    "admin_hold": BatchState.QUEUED,
    "dep_hold": BatchState.QUEUED,
    "dep_fail": BatchState.QUEUED,
    "maxrun_hold": BatchState.QUEUED,
    "starting": BatchState.QUEUED,
    "preempted": BatchState.QUEUED,
    "running": BatchState.RUNNING,
    "preempting": BatchState.RUNNING,
    "killing": BatchState.RUNNING,
    "exiting": BatchState.RUNNING,
    "done": BatchState.FINISHED,
}

_UNSET = ("None", "N/A", "-")
_GONE = ("not found",)


def submit_argv(req: BatchRequest) -> list[str]:
    # Cobalt opens the output and error files for appending, so both can be the one file.
    output = str(req.output)
    argv = ["qsub", "-n", str(req.nodes), "-t", str(req.minutes), "--mode", "script", "--jobname", req.name,
            "-o", output, "-e", output, "--debuglog", str(req.output.with_suffix(".cobaltlog"))]  # fmt: skip
    if req.project:
        argv += ["-A", req.project]
    if req.queue:
        argv += ["-q", req.queue]
    return [*argv, str(req.script)]


def parse_submit(stdout: str) -> str:
    ids = [line.strip() for line in stdout.splitlines() if line.strip().isdigit()]
    if not ids:
        raise SchedulerError(f"qsub printed no job id: {error_summary(stdout)}")
    return ids[-1]


def status_argv(user: str) -> list[str]:
    return ["qstat", "--header", ":".join(_STATUS_COLUMNS), "-u", user]


def parse_status(stdout: str) -> list[BatchStatus]:
    rows = _table(stdout, "qstat", required=("JobID", "State"))
    return [_status(number, row) for number, row in rows]


def _status(number: int, row: dict[str, str]) -> BatchStatus:
    native = row["State"]
    # A state this table does not know is most likely a new kind of hold; keeping the job
    # queued keeps it in view without ending a job that may still run.
    state = _STATES.get(native, BatchState.QUEUED)
    try:
        nodes = int(row["Nodes"]) if _given(row.get("Nodes")) else None
        minutes = parse_minutes(row["WallTime"]) if _given(row.get("WallTime")) else None
    except ValueError:
        raise SchedulerError(f"qstat row {number} has unreadable nodes or wall time: {row}") from None
    if not row["JobID"].isdigit():
        raise SchedulerError(f"qstat row {number} has no job id: {row}")
    return BatchStatus(
        id=row["JobID"], state=state, name=_cell(row, "JobName"), nodes=nodes, minutes=minutes,
        queue=_cell(row, "Queue"), project=_cell(row, "Project"), native_state=native,
    )  # fmt: skip


def delete_argv(job_id: str) -> list[str]:
    return ["qdel", job_id]


def delete_gone(stderr: str) -> bool:
    """qdel found no such job of this user: already finished, or never known."""
    return mentions_any(stderr, _GONE)


def backfill_argv() -> list[str] | None:
    return ["nodelist"]


def parse_backfill(stdout: str) -> list[BackfillWindow]:
    """Idle nodes grouped by queue and by how long they stay free."""
    windows: Counter[tuple[str, int | None]] = Counter()
    for number, row in _table(stdout, "nodelist", required=("Backfill",)):
        state = row.get("Status", row.get("State", ""))
        if state != "idle":
            continue
        try:
            minutes = parse_minutes(row["Backfill"]) if _given(row["Backfill"]) else None
        except ValueError:
            raise SchedulerError(f"nodelist row {number} has an unreadable Backfill: {row}") from None
        if minutes == 0:
            continue
        queues = row.get("Queues", row.get("Queue", ""))
        for queue in queues.split(":") if queues else [""]:
            windows[(queue, minutes)] += 1
    by_queue_longest_first = sorted(windows, key=lambda window: (window[0], window[1] is not None, -(window[1] or 0)))
    return [BackfillWindow(nodes=windows[(queue, minutes)], minutes=minutes, queue=queue) for queue, minutes in by_queue_longest_first]


def _table(stdout: str, command: str, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a Cobalt table as {column: cell}, cut at the header's column positions."""
    lines = [line.rstrip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return []
    header_at = next((i for i, line in enumerate(lines) if set(required) <= set(line.split())), None)
    if header_at is None:
        raise SchedulerError(f"{command} printed no table with the columns {', '.join(required)}: {error_summary(stdout)}")
    header = lines[header_at]
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+", header)]
    body = [line for line in lines[header_at + 1 :] if set(line.strip()) != {"="}]
    rows = []
    for number, line in enumerate(body, 1):
        # Every cell starts where its header word starts: a non-blank just before means the
        # row does not line up, and cutting it would split a word.
        if any(start <= len(line) and line[start - 1] != " " for _, start in columns[1:]):
            raise SchedulerError(f"{command} row {number} does not line up with the header {header!r}: {line!r}")
        ends = [start for _, start in columns[1:]] + [len(line)]
        rows.append((number, {name: line[start:end].strip() for (name, start), end in zip(columns, ends)}))
    return rows


def _given(cell: str | None) -> bool:
    return bool(cell) and cell not in _UNSET


def _cell(row: dict[str, str], name: str) -> str:
    value = row.get(name, "")
    return value if _given(value) else ""
