"""Launcher leases: a launcher holds jobs only while it keeps renewing its heartbeat.

Used by launchers (register, renew, end) and by anyone who may find a lost one: other
launchers and the site agent both call ``reap_lost``, so jobs come back even with no launcher
running. Times come from the database's clock, so hosts with skewed clocks agree.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from balsam.site.db import journal, jobstore
from balsam.site.db.jobstore import Change
from balsam.site.db.notify import LAUNCHERS_CHANNEL
from balsam.states import FINAL_STATES, Step
from balsam.states import JobState as S

log = logging.getLogger("balsam.site.leases")


def register(
    session: Session, hostname: str, pid: int, job_mode: str, node_count: int, lease_seconds: float,
    batch_job_id: int | None = None,
) -> int:  # fmt: skip
    launcher_id = session.execute(
        text(
            "INSERT INTO launchers (hostname, pid, job_mode, node_count, lease_seconds, state, message, batch_job_id) "
            "VALUES (:host, :pid, :mode, :nodes, :lease, 'running', '', "
            "  (SELECT id FROM batch_jobs WHERE id = :batch)) RETURNING id"
        ),
        {"host": hostname, "pid": pid, "mode": job_mode, "nodes": node_count, "lease": lease_seconds, "batch": batch_job_id},
    ).scalar_one()
    # The Argo sync beats at once: this launcher starts Argo tasks only once a heartbeat counted it.
    session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": LAUNCHERS_CHANNEL})
    return launcher_id


def renew(session: Session, launcher_id: int) -> bool:
    """Extend the lease; False if it was already declared lost (the launcher must stop its tasks)."""
    return (
        session.execute(
            text("UPDATE launchers SET heartbeat_at = now() WHERE id = :id AND state = 'running' RETURNING id"),
            {"id": launcher_id},
        ).first()
        is not None
    )


def reap_lost(session: Session, logs_dir: Path | None = None, me: int | None = None) -> list[tuple[int, list[int]]]:
    """Declare every launcher with an expired lease lost and take back its jobs.

    A lease runs from the launcher's last heartbeat, or from the database server's start if that is
    later: while the server was down no launcher could renew, so an outage alone never makes one lost.
    What a lost launcher journaled (``balsam.site.db.journal``, under ``logs_dir``) is applied first:
    what it finished stays finished. Then its running jobs go to RESTART_READY and the rest are let
    go, each with an event saying why. ``me``: the launcher asking, which is alive whatever its
    heartbeat says (it may not have renewed yet after an outage). Returns (lost launcher id, jobs
    taken back) pairs.
    """
    lost = session.execute(
        text(
            "UPDATE launchers SET state = 'lost', ended_at = now(), "
            "message = 'no heartbeat for ' || round(extract(epoch FROM now() - heartbeat_at)) || ' s' "
            "WHERE id IN (SELECT id FROM launchers WHERE state = 'running' AND id IS DISTINCT FROM :me"
            "  AND greatest(heartbeat_at, pg_postmaster_start_time()) < now() - make_interval(secs => lease_seconds)"
            "  FOR UPDATE SKIP LOCKED) "
            "RETURNING id, hostname, pid, lease_seconds"
        ),
        {"me": me},
    ).all()
    taken = []
    for launcher in lost:
        if logs_dir is not None:
            _apply_journal(session, launcher.id, journal.journal_path(logs_dir, launcher.id))
        why = f"launcher {launcher.id} (pid {launcher.pid} on {launcher.hostname}) lost: no heartbeat for over {launcher.lease_seconds:g} s"
        rows = session.execute(
            text("SELECT id, state FROM jobs WHERE launcher_id = :id ORDER BY id FOR UPDATE"), {"id": launcher.id}
        ).all()
        running = [row.id for row in rows if row.state == S.RUNNING]
        others = [row.id for row in rows if row.state != S.RUNNING]
        jobstore.apply_changes(
            session, [Change(i, [Step(S.RESTART_READY, why + "; run it again")], {"launcher_id": None}) for i in running], owner=launcher.id
        )
        if others:
            # A job killed while its launcher was gone (Argo's kill orders reach a returning site first)
            # keeps the kill as its last word: letting go of it changes nothing a user reads.
            unended = [row.id for row in rows if row.state != S.RUNNING and row.state not in FINAL_STATES]
            if unended:
                jobstore.note(session, unended, why + "; released")
            session.execute(text("UPDATE jobs SET launcher_id = NULL WHERE id = ANY(:ids)"), {"ids": others})
            jobstore.notify_runnable(session)
        taken.append((launcher.id, [row.id for row in rows]))
    return taken


def _apply_journal(session: Session, launcher_id: int, path: Path) -> None:
    changes, rescues = journal.read(path)
    if not changes:
        return
    written, skipped = jobstore.apply_changes(session, changes, owner=launcher_id, rescues=rescues)
    log.warning("launcher %d was lost with %d change(s) in its journal: %d applied, %d no longer its to write",
                launcher_id, len(changes), len(written), len(skipped))  # fmt: skip
    path.unlink(missing_ok=True)


def end(session: Session, launcher_id: int, message: str) -> list[int]:
    """Mark the launcher exited and let go of every job it still holds (none is running by now)."""
    released = session.execute(
        text("UPDATE jobs SET launcher_id = NULL WHERE launcher_id = :id RETURNING id"), {"id": launcher_id}
    ).scalars().all()
    if released:
        jobstore.note(session, released, f"released by launcher {launcher_id}: {message}")
        jobstore.notify_runnable(session)
    session.execute(
        text("UPDATE launchers SET state = 'exited', ended_at = now(), message = :msg WHERE id = :id AND state = 'running'"),
        {"id": launcher_id, "msg": message},
    )
    return list(released)
