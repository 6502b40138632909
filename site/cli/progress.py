"""Progress of ``balsam job add --from FILE`` on the terminal: reading, then checking and storing.

Shown on stderr, and only when stderr is a terminal: stdout stays one job id per line for scripts,
and a log or a pipe gets no bar. The bar is transient (it is gone once the jobs are stored; the
line "added N jobs" stays). Reading is a spinner; each job is checked as it is stored (one
transaction, ``balsam.site.specs.Request``), counted every thousand jobs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from balsam.terminal import shown


class AddProgress:
    def __init__(self, progress, path: Path) -> None:
        self.progress = progress
        self.started = time.monotonic()
        self.task = None if progress is None else progress.add_task(f"reading {shown(str(path))}", total=None)

    def stored(self, done: int, total: int) -> None:
        """``Site.add_jobs``'s report: ``done`` of ``total`` jobs checked and sent to the database."""
        if self.progress is not None:
            self.progress.update(self.task, description="storing jobs", completed=done, total=total)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


@contextmanager
def add_progress(console, path: Path) -> Iterator[AddProgress]:
    """An ``AddProgress`` drawing on ``console`` (stderr) when it is a terminal; silent otherwise."""
    if not console.is_terminal:
        yield AddProgress(None, path)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=getattr(console, "made", console), transient=True) as progress:
        yield AddProgress(progress, path)
