"""Runs a command-line scheduler's commands: the thin shell around an adapter's pure functions.

``get_scheduler(name, state_dir)`` gives an object with ``submit``, ``status``, ``delete`` and
``backfill``. Every failure (the command missing, timing out, exiting non-zero, or printing what
the parser cannot read) is a ``SchedulerError`` naming the command and what it said.
"""

from __future__ import annotations

import getpass
import importlib
import logging
import subprocess
from pathlib import Path
from types import ModuleType

from balsam.site.scheduler.base import (
    BackfillWindow,
    BatchRequest,
    BatchStatus,
    SchedulerError,
    error_summary,
)
from balsam.site.scheduler.local import LocalScheduler

ADAPTERS = ("slurm", "pbs", "cobalt", "lsf")  # each a module of this package
SCHEDULERS = ("local", *ADAPTERS)

log = logging.getLogger("balsam.site.scheduler")


class CommandScheduler:
    """A batch scheduler driven through its commands (sbatch, qsub, bsub and their kin)."""

    def __init__(self, adapter: ModuleType, timeout: float = 60.0, user: str | None = None) -> None:
        self.adapter = adapter
        self.name: str = adapter.NAME
        self.timeout = timeout
        self.user = user or getpass.getuser()

    def submit(self, request: BatchRequest) -> str:
        argv = self.adapter.submit_argv(request)
        # The site's own options go just before the script, which every adapter puts last.
        argv = [*argv[:-1], *request.extra_args, argv[-1]]
        return self.adapter.parse_submit(self._run(argv))

    def status(self) -> list[BatchStatus]:
        try:
            output = self._run(self.adapter.status_argv(self.user))
        except _Failed as failed:
            # Some schedulers (LSF's bjobs) exit non-zero just because the user has no jobs.
            empty = getattr(self.adapter, "listing_is_empty", None)
            if empty is None or not empty(failed.output):
                raise SchedulerError(str(failed)) from None
            return []
        return self.adapter.parse_status(output)

    def delete(self, job_id: str) -> None:
        try:
            self._run(self.adapter.delete_argv(job_id))
        except _Failed as failed:
            if not self.adapter.delete_gone(failed.output):
                raise SchedulerError(str(failed)) from None
            log.info("%s job %s was already gone: %s", self.name, job_id, error_summary(failed.output))

    def backfill(self) -> list[BackfillWindow]:
        argv = self.adapter.backfill_argv()
        return self.adapter.parse_backfill(self._run(argv)) if argv else []

    def _run(self, argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise SchedulerError(f"{argv[0]} not found: is {self.name} installed here (and on PATH)?") from None
        except subprocess.TimeoutExpired:
            raise SchedulerError(f"{argv[0]} did not answer within {self.timeout:g} s") from None
        if done.returncode != 0:
            raise _Failed(argv[0], done.returncode, done.stderr + done.stdout)
        return done.stdout


class _Failed(SchedulerError):
    def __init__(self, command: str, code: int, output: str) -> None:
        super().__init__(f"{command} failed (exit {code}): {error_summary(output)}")
        self.output = output


def get_scheduler(name: str, state_dir: Path) -> LocalScheduler | CommandScheduler:
    """The scheduler called ``name``; the local one keeps its records in ``state_dir``."""
    if name == "local":
        return LocalScheduler(state_dir)
    if name not in ADAPTERS:
        raise SchedulerError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
    return CommandScheduler(importlib.import_module(f"balsam.site.scheduler.{name}"))
