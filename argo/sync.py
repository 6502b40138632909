"""The coordinator's end of the sites' sync channel (the protocol: ``balsam.wire.outbox``).

Up: a site's numbered messages (its jobs' moves, tasks spawned there) are applied in one
transaction with the site's new high mark, so a batch sent twice is applied once. Down: assignments
and kill orders wait in the site's outbox (``graph.SITE_OUTBOX``), numbered by the transaction that
decided them, until the site acknowledges them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from sqlalchemy import func, text
from sqlalchemy.orm import Session

from balsam.argo import graph
from balsam.argo.auth import PermissionDenied
from balsam.argo.database import Database
from balsam.argo.db import taskstore
from balsam.argo.db.models import Site
from balsam.argo.workflows import WorkflowStore
from balsam.errors import BadRequest, NotFound
from balsam.protos import argo_pb2 as pb
from balsam.states import TaskMove
from balsam.wire.convert import Report, Spawned, site_message_body
from balsam.wire.outbox import ENVELOPE_BYTES, MAX_BATCH, check_seq, fresh

log = logging.getLogger("balsam.argo.sync")


class SyncEndpoint:
    def __init__(self, db: Database) -> None:
        self.db = db

    def hello(self, site: str, site_applied: int) -> tuple[int, int]:
        """A site (re)connects: it is up; returns the highest of its messages applied here and the
        highest number given to a message for it."""
        check_seq(site_applied, "Hello.last_applied")
        with self.db.session() as session:
            row = session.get(Site, site, with_for_update=True)
            if row is None:
                raise NotFound(f"site {site!r} is not registered (call Register first)")
            row.status, row.last_seen_at = "up", func.now()
            graph.SITE_OUTBOX.acknowledge(session, site_applied, site)
            numbers = row.last_applied, row.last_seq
        self.db.notify(place=True)
        return numbers

    def acknowledge(self, site: str, seq: int) -> None:
        check_seq(seq, "ack")
        with self.db.session() as session:
            graph.SITE_OUTBOX.acknowledge(session, seq, site)

    def pending(self, site: str, after: int, max_bytes: int = ENVELOPE_BYTES, limit: int = MAX_BATCH) -> list[bytes]:
        """The site's messages after number ``after``: at most ``max_bytes`` of them (at least one)."""
        with self.db.session() as session:
            return graph.SITE_OUTBOX.pending(session, after, site, max_bytes, limit)

    def apply(self, site: str, messages: Sequence[pb.SiteMessage], heartbeat: pb.Heartbeat | None = None) -> int:
        """Apply a batch of the site's numbered messages (skipping those applied before); the new high mark."""
        bodies = [(m.seq, site_message_body(m)) for m in messages]  # malformed: BadRequest, nothing applied
        if heartbeat is not None:
            _check_heartbeat(heartbeat)
        released = False
        with self.db.session() as session:
            graph.lock_graph(session)
            row = session.get(Site, site, with_for_update=True)
            if row is None:
                raise NotFound(f"site {site!r} is not registered")
            new = fresh(messages, row.last_applied, f"site {site}")
            numbers = {m.seq for m in new}
            touched: set[int] = set()
            spawned = [body for seq, body in bodies if seq in numbers and isinstance(body, Spawned)]
            reports = [body for seq, body in bodies if seq in numbers and isinstance(body, Report)]
            if spawned:
                touched |= self._adopt(session, site, spawned)
            if reports:
                self._refuse_foreign(session, site, reports)
                applied = taskstore.apply_reports(session, site, reports)
                touched |= applied.workflows
                released = bool(applied.released)
                for report, why in applied.ignored:
                    if why != "a stale copy":
                        log.warning("site %s: report on task %s not applied: %s", site, report.task_id, why)
            graph.close_workflows(session, touched)
            if new:
                row.last_applied = new[-1].seq
            row.status, row.last_seen_at = "up", func.now()
            if heartbeat is not None:
                _record_heartbeat(row, heartbeat)
            last = row.last_applied
        if new:
            self.db.notify(place=released)
        return last

    @staticmethod
    def _refuse_foreign(session: Session, site: str, reports: Sequence[Report]) -> None:
        """A site reports only on tasks it was given: news of a task never placed there is refused
        (the whole batch: nothing of it is applied), unlike news of its own stale copies."""
        foreign = session.execute(
            text("SELECT id FROM tasks WHERE id = ANY(:ids) AND NOT (coalesce(site, '') = :s OR sites_tried ? :s) ORDER BY id"),
            {"ids": sorted({r.task_id for r in reports}), "s": site},
        ).scalars().all()
        if foreign:
            raise PermissionDenied(f"site {site} reported on task(s) never assigned to it: {', '.join(foreign[:5])}")

    @staticmethod
    def _adopt(session: Session, site: str, spawned: Sequence[Spawned]) -> set[int]:
        """Tasks that running tasks created at the site join the graph, already placed there."""
        touched = set()
        for task in spawned:
            prefix, _, name = task.task_id.partition("/")
            if prefix != str(task.workflow_id) or not name:
                raise BadRequest(f"site {site}: spawned task id {task.task_id!r} does not belong to workflow {task.workflow_id}")
            if not name.startswith(f"{site}:"):
                raise PermissionDenied(f"site {site} may spawn only tasks named {task.workflow_id}/{site}:JOB, not {task.task_id!r}")
            parents = session.execute(
                text("SELECT id, state, site, sites_tried FROM tasks WHERE id = ANY(:ids)"), {"ids": list(task.parents)}
            ).all()
            strangers = [p.id for p in parents if not (p.site == site or site in (p.sites_tried or []))]
            if strangers:
                raise PermissionDenied(f"site {site} may spawn children only of its own tasks, not of {', '.join(strangers[:5])}")
            status = session.scalar(text("SELECT status FROM workflows WHERE id = :wf"), {"wf": task.workflow_id})
            if status is None:
                continue  # its workflow was deleted: nothing to join
            if not taskstore.insert_spawned(session, site, task, parents):
                continue
            if status != "running":
                WorkflowStore.kill(session, [task.task_id], f"workflow {status}", TaskMove.KILLED)
            touched.add(task.workflow_id)
        return touched


def _check_heartbeat(beat: pb.Heartbeat) -> None:
    if beat.backlog < 0 or beat.running < 0 or beat.nodes < 0:
        raise BadRequest("heartbeat: backlog, running and nodes must not be negative")
    if not _usable(beat.queue_wait_s):
        raise BadRequest(f"heartbeat: queue_wait_s must be a finite number >= 0, got {beat.queue_wait_s!r}")


def _record_heartbeat(row: Site, heartbeat: pb.Heartbeat) -> None:
    row.heartbeat = {
        "backlog": heartbeat.backlog, "running": heartbeat.running, "queue_wait_s": heartbeat.queue_wait_s,
        "models": {app: [m.serial_s, m.parallel_s, m.feature] for app, m in heartbeat.models.items()
                   if _usable(m.serial_s) and _usable(m.parallel_s)},
    }  # fmt: skip
    if heartbeat.nodes > 0:
        row.nodes = heartbeat.nodes


def _usable(seconds: float) -> bool:
    return math.isfinite(seconds) and seconds >= 0

