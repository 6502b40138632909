"""Progress of ``balsam job add --from FILE`` on the terminal: reading, checking, storing.

Shown on stderr, and only when stderr is a terminal: stdout stays one job id per line for scripts,
and a log or a pipe gets no bar. The bar is transient (it is gone once the jobs are stored; the
line "added N jobs" stays). Checking is counted job by job (``balsam.site.specs.read_job_file``
reports every thousand); storing is one transaction, so it is shown as a running clock.
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

    def checked(self, done: int, total: int) -> None:
        """``read_job_file``'s report: ``done`` of ``total`` jobs checked."""
        if self.progress is not None:
            self.progress.update(self.task, description="checking jobs", completed=done, total=total)

    def storing(self, count: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"storing {count:,} jobs", completed=0, total=None)

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
