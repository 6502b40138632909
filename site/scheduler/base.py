"""What every scheduler adapter speaks: a batch request, a job's status, a backfill window.

An adapter for a command-line scheduler is a module of pure functions, each pair rendering one
command and parsing what it prints (``submit_argv``/``parse_submit``, ``status_argv``/
``parse_status``, ``delete_argv``, ``backfill_argv``/``parse_backfill``); ``commands.py`` runs
them. Parsers take the text a real scheduler printed and are tested on captured copies of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from balsam.errors import BalsamError


class SchedulerError(BalsamError):
    """A scheduler command failed or printed something we cannot read."""


class BatchState(str, Enum):
    """A batch job's state as the site cares about it; each scheduler's own states map onto these."""

    QUEUED = "queued"  # waiting, held or about to start
    RUNNING = "running"  # the allocation exists (including while it is being torn down)
    FINISHED = "finished"  # over: completed, failed, cancelled or timed out; `reason` says which


@dataclass(frozen=True)
class BatchRequest:
    """One batch job to submit: a script to run on an allocation of ``nodes`` for ``minutes``."""

    script: Path
    nodes: int
    minutes: int
    name: str
    output: Path  # the scheduler writes the batch job's stdout and stderr here
    project: str = ""
    queue: str = ""
    # Site-specific options passed to the submit command as they are (e.g. PBS `-l filesystems=home`).
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchStatus:
    """One job of the scheduler's listing."""

    id: str
    state: BatchState
    name: str = ""
    nodes: int | None = None
    minutes: int | None = None  # the wall time it asked for
    queue: str = ""
    project: str = ""
    native_state: str = ""  # the scheduler's own word, e.g. PENDING, Q, PEND
    reason: str = ""  # why it waits, or how it ended
    exit_code: int | None = None


@dataclass(frozen=True)
class BackfillWindow:
    """Nodes idle now that a job could use for up to ``minutes`` without delaying anyone."""

    nodes: int
    minutes: int | None  # None: the scheduler does not say how long (the site's limits decide)
    queue: str = ""


def parse_minutes(text: str, two_parts: str = "hh:mm") -> int | None:
    """Minutes in a scheduler's duration: ``[D-]HH:MM:SS``, two parts, ``MM`` or ``UNLIMITED``.

    Schedulers differ on two parts: Slurm prints ``30:00`` for half an hour (``two_parts="mm:ss"``),
    others mean hours and minutes.
    Seconds are dropped: a window of 29:30 holds a 29-minute job, not a 30-minute one.
    None for unlimited or unset.
    """
    text = text.strip()
    if not text or text.upper() in {"UNLIMITED", "INFINITE", "NOT_SET", "N/A", "-", "NONE"}:
        return None
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        days = int(head)
    parts = [int(p) for p in text.split(":")]
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"not a duration: {text!r}")
    if len(parts) == 3:
        hours, minutes = parts[0], parts[1]
    elif len(parts) == 2 and two_parts == "hh:mm":
        hours, minutes = parts
    else:
        hours, minutes = 0, parts[0]
    return days * 1440 + hours * 60 + minutes


def hhmmss(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def mentions_any(text: str, phrases) -> bool:
    """Whether ``text`` contains any of ``phrases`` (lower case), ignoring case."""
    lowered = text.lower()
    return any(phrase in lowered for phrase in phrases)


def error_summary(text: str, limit: int = 300) -> str:
    """The lines of a failed command's output that say what went wrong, as one short line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if any(w in line.lower() for w in ("error", "fatal", "invalid", "denied", "illegal"))]
    summary = " / ".join(errors or lines[-2:]) or "(no output)"
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."
