"""A site's launcher batch jobs: submit, follow, cancel; the rows of ``batch_jobs`` kept true.

The thin shell between the database and a scheduler adapter, used by ``balsam submit-launch``,
``balsam queue`` and the site agent. A row is written before its job is submitted, so a crash
in between leaves a ``pending_submission`` row, not an untracked job. Before retrying it, the
agent looks for it in the scheduler's listing by its name, ``balsam-SITE-ID-TOKEN`` (the random
token keeps other sites' jobs from matching), in case the submission went through. A failed
submission keeps the row pending with the scheduler's message; after ``MAX_SUBMIT_ATTEMPTS`` it
becomes ``submit_failed``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from balsam.errors import BalsamError
from balsam.site.api import Site
from balsam.site.db.models import BatchJob
from balsam.site.scheduler.base import BatchRequest, BatchState, BatchStatus, SchedulerError
from balsam.site.scheduler.commands import get_scheduler
from balsam.site.settings import CREDENTIALS_ENV

log = logging.getLogger("balsam.site.batch")

MAX_SUBMIT_ATTEMPTS = 5
LIVE_STATES = ("pending_submission", "queued", "running", "pending_deletion")
BATCH_JOB_VARIABLE = "BALSAM_BATCH_JOB_ID"


@dataclass(frozen=True)
class LaunchRequest:
    """A launcher batch job as a user or the elastic queue asks for it."""

    nodes: int
    minutes: int
    job_mode: str = "mpi"
    project: str = ""
    queue: str = ""
    until_idle: bool = False  # the launcher exits once nothing is left to run, giving the nodes back
    linger_s: float = 0.0  # ... after being idle this long (work coming soon, a DAG's next level, finds it)
    origin: str = "user"

    def check(self) -> None:
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise BalsamError(f"a batch job needs a whole number of nodes >= 1, got {self.nodes!r}")
        if isinstance(self.minutes, bool) or not isinstance(self.minutes, int) or self.minutes < 1:
            raise BalsamError(f"a batch job needs a wall time of at least 1 minute, got {self.minutes!r}")
        if self.job_mode not in ("mpi", "serial"):
            raise BalsamError(f"job mode must be 'mpi' or 'serial', got {self.job_mode!r}")


class BatchQueue:
    """The site's batch jobs and the scheduler they live in."""

    def __init__(self, site: Site, scheduler=None) -> None:
        self.site = site
        self.settings = site.settings
        self.scheduler = scheduler or get_scheduler(self.settings.scheduler.name, self.settings.batch_dir / "local")

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, request: LaunchRequest, retry_later: bool = False) -> BatchJob:
        """Record and submit one launcher batch job.

        A scheduler error raises, after marking the row ``submit_failed``; with ``retry_later``
        the row stays ``pending_submission`` for the agent to try again.
        """
        request.check()
        defaults = self.settings.scheduler
        project, queue = request.project or defaults.project, request.queue or defaults.queue
        defaults.check_allowed(project, queue)
        with self.site.session() as session:
            row = BatchJob(
                scheduler=self.scheduler.name, project=project, queue=queue, nodes=request.nodes,
                wall_time_min=request.minutes, job_mode=request.job_mode, origin=request.origin,
                state="pending_submission",
                status_info={"attempts": 0, "until_idle": request.until_idle, "linger_s": request.linger_s, "token": secrets.token_hex(3)},
            )  # fmt: skip
            session.add(row)
            session.flush()
            batch_id = row.id
        return self._submit_row(batch_id, retry_later)

    def submit_pending(self) -> list[BatchJob]:
        """Try again every row still waiting for its submission (oldest first)."""
        with self.site.session() as session:
            ids = session.scalars(
                select(BatchJob.id).where(BatchJob.state == "pending_submission", BatchJob.scheduler == self.scheduler.name).order_by(BatchJob.id)
            ).all()
        done = []
        for batch_id in ids:
            try:
                done.append(self._submit_row(batch_id, retry_later=True))
            except SchedulerError:
                pass  # logged and recorded on the row
        return done

    def _submit_row(self, batch_id: int, retry_later: bool) -> BatchJob:
        row = self.get(batch_id)
        script, output = self.write_script(row)
        request = BatchRequest(
            script=script, nodes=row.nodes, minutes=row.wall_time_min, name=self.job_name(row),
            output=output, project=row.project, queue=row.queue, extra_args=tuple(self.settings.scheduler.submit_args),
        )  # fmt: skip
        try:
            scheduler_id = self.scheduler.submit(request)
        except SchedulerError as exc:
            attempts = int(row.status_info.get("attempts", 0)) + 1
            gave_up = not retry_later or attempts >= MAX_SUBMIT_ATTEMPTS
            state = "submit_failed" if gave_up else "pending_submission"
            self._update(batch_id, state=state, message=str(exc), status_info={**row.status_info, "attempts": attempts})
            log.warning("batch job %s: submission %d failed%s: %s", batch_id, attempts, "" if gave_up else " (will retry)", exc)
            raise
        self._update(batch_id, state="queued", scheduler_id=scheduler_id, submitted_at=_now(), message="")
        log.info("batch job %s submitted to %s as %s: %d node(s), %d min, %s mode",
                 batch_id, self.scheduler.name, scheduler_id, row.nodes, row.wall_time_min, row.job_mode)  # fmt: skip
        return self.get(batch_id)

    def job_name(self, row: BatchJob) -> str:
        """Unique to the row: the id alone repeats across sites (and a site made again)."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.settings.name)[:20]
        return f"balsam-{safe}-{row.id}-{row.status_info.get('token', '')}"

    def write_script(self, row: BatchJob) -> tuple[Path, Path]:
        """The batch script (``batch/ID.sh``) that starts the launcher, and where its output goes."""
        folder = self.settings.batch_dir
        folder.mkdir(exist_ok=True)
        script, output = folder / f"{row.id}.sh", folder / f"{row.id}.out"
        launcher = [sys.executable, "-m", "balsam.site.cli.main", "launcher", "--job-mode", row.job_mode,
                    "--wall-time", str(row.wall_time_min)]  # fmt: skip
        if row.status_info.get("until_idle"):
            launcher += ["--until-idle", "--linger", f"{float(row.status_info.get('linger_s') or 0):g}"]
        text = "\n".join([
            "#!/bin/bash",
            f"# Launcher batch job {row.id} of Balsam site {self.settings.name}: {row.nodes} node(s), "
            f"{row.wall_time_min} min, {row.job_mode} mode.",
            f"export BALSAM_SITE={shlex.quote(str(self.settings.path))}",
            f"export {BATCH_JOB_VARIABLE}={row.id}",
            # A collaborator's launcher logs in as them, whatever environment the scheduler passes on.
            *([f"export {CREDENTIALS_ENV}={shlex.quote(str(self.settings.credentials.file))}"] if self.settings.credentials else []),
            # The launcher finds mpirun (and mpi4py's python) next to its own interpreter first.
            f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"",
            f"cd {shlex.quote(str(self.settings.path))}",
            "exec " + shlex.join(launcher),
            "",
        ])  # fmt: skip
        tmp = script.with_suffix(".sh.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o755)
        tmp.replace(script)
        return script, output

    # -- following -------------------------------------------------------------------------------

    def sync(self) -> list[tuple[int, str, str]]:
        """Bring every live row up to date with the scheduler's listing; returns (id, old, new) changes."""
        listing = self.scheduler.status()
        by_id = {job.id: job for job in listing}
        by_name = {job.name: job for job in listing if job.name}
        changes = []
        with self.site.session() as session:
            rows = session.scalars(
                select(BatchJob).where(BatchJob.state.in_(LIVE_STATES), BatchJob.scheduler == self.scheduler.name)
                .order_by(BatchJob.id).with_for_update(skip_locked=True)
            ).all()  # fmt: skip
            for row in rows:
                old = row.state
                if row.state == "pending_submission":
                    found = by_name.get(self.job_name(row))
                    if found is None:
                        continue
                    # It went through before we could record it: adopt it rather than submit twice.
                    row.scheduler_id, row.submitted_at = found.id, _now()
                    _apply(row, found)
                else:
                    status = by_id.get(row.scheduler_id or "")
                    if status is None:
                        row.state, row.ended_at = "finished", row.ended_at or _now()
                        row.message = row.message or "no longer listed by the scheduler"
                    else:
                        _apply(row, status)
                if row.state != old:
                    changes.append((row.id, old, row.state))
                    log.info("batch job %s (%s %s): %s -> %s %s", row.id, self.scheduler.name, row.scheduler_id, old, row.state, row.message)
        return changes

    # -- cancelling ------------------------------------------------------------------------------

    def cancel(self, batch_id: int) -> BatchJob:
        """Cancel a batch job; if the scheduler refuses now, the agent keeps trying."""
        row = self.get(batch_id)
        if row.state not in LIVE_STATES:
            raise BalsamError(f"batch job {batch_id} is {row.state}; only queued or running ones can be cancelled")
        if row.state == "pending_submission" or not row.scheduler_id:
            self._update(batch_id, state="finished", ended_at=_now(), message="cancelled before submission")
            return self.get(batch_id)
        self._update(batch_id, state="pending_deletion")
        try:
            self.scheduler.delete(row.scheduler_id)
        except SchedulerError as exc:
            self._update(batch_id, message=f"cancel failed, will retry: {exc}")
            raise
        self._update(batch_id, message="cancel requested")
        return self.get(batch_id)

    def cancel_and_wait(self, ids: list[int], wait_s: float = 60.0) -> list[BatchJob]:
        """Cancel these batch jobs, and wait up to ``wait_s`` for those of the local scheduler to end
        (processes of this host: their launchers give their jobs back first)."""
        cancelled = [self.cancel(batch_id) for batch_id in ids]
        deadline = time.monotonic() + wait_s
        while self.scheduler.name == "local" and any(row.id in ids for row in self.list()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
            self.sync()
        return cancelled

    def retry_deletions(self) -> None:
        with self.site.session() as session:
            rows = session.execute(
                select(BatchJob.id, BatchJob.scheduler_id).where(BatchJob.state == "pending_deletion", BatchJob.scheduler == self.scheduler.name)
            ).all()
        for batch_id, scheduler_id in rows:
            try:
                self.scheduler.delete(scheduler_id)
            except SchedulerError as exc:
                log.warning("batch job %s: cancel failed again: %s", batch_id, exc)

    # -- reading ---------------------------------------------------------------------------------

    def get(self, batch_id: int) -> BatchJob:
        with self.site.session() as session:
            row = session.get(BatchJob, batch_id)
            if row is None:
                raise BalsamError(f"no batch job {batch_id}")
            return row

    def list(self, all_states: bool = False) -> list[BatchJob]:
        query = select(BatchJob).order_by(BatchJob.id)
        if not all_states:
            query = query.where(BatchJob.state.in_(LIVE_STATES))
        with self.site.session() as session:
            return list(session.scalars(query))

    def counts(self) -> dict[str, int]:
        """How many live batch jobs there are in each state."""
        query = select(BatchJob.state, func.count()).where(BatchJob.state.in_(LIVE_STATES)).group_by(BatchJob.state)
        with self.site.session() as session:
            return {state: n for state, n in session.execute(query)}

    def _update(self, batch_id: int, **values) -> None:
        with self.site.session() as session:
            row = session.get(BatchJob, batch_id, with_for_update=True)
            for key, value in values.items():
                setattr(row, key, value)


def _apply(row: BatchJob, status: BatchStatus) -> None:
    info = {**row.status_info, "native_state": status.native_state}
    if status.exit_code is not None:
        info["exit_code"] = status.exit_code
    row.status_info = info
    if status.state == BatchState.FINISHED:
        row.state, row.ended_at = "finished", _now()
        row.message = status.reason or status.native_state
    elif status.state == BatchState.RUNNING:
        if row.state != "pending_deletion":
            row.state = "running"
        row.started_at = row.started_at or _now()
    elif row.state != "pending_deletion":
        row.state = "queued"
        row.message = status.reason


def _now() -> datetime:
    return datetime.now(UTC)
