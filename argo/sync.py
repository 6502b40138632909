"""The coordinator's end of the sites' sync channel (the protocol: ``balsam.wire.outbox``).

Up: a site's numbered messages (its jobs' moves, tasks spawned there) are applied in one
transaction with the site's new high mark, so a batch sent twice is applied once. Down: assignments
and kill orders wait in the site's outbox (``graph.SITE_OUTBOX``), numbered by the transaction that
decided them, until the site acknowledges them.

Fencing (docs/argo.md, "What is promised under failures"): every heartbeat is answered with a lease
of ``lease_s`` seconds, counted at the site from when it sent the heartbeat, so the site's lease
always ends before ours; launchers start Argo tasks only while it lasts. An assignment may start only
once we have confirmed its number, which we do when the site acknowledges it, and never past a task
placed again elsewhere before the site applied its kill order (``site_fences``). So what we never
confirmed was surely never started, and after the lease no new start happens at the site at all.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from balsam.argo import graph, placing
from balsam.argo.auth import PermissionDenied
from balsam.argo.database import Database
from balsam.argo.db import taskstore
from balsam.argo.db.models import Site
from balsam.argo.workflows import WorkflowStore
from balsam.errors import BadRequest, NotFound
from balsam.inputs import InputError, check_message
from balsam.protos import argo_pb2 as pb
from balsam.states import TaskMove
from balsam.wire.convert import Report, Spawned, site_message_body
from balsam.wire.outbox import ENVELOPE_BYTES, MAX_BATCH, check_seq, fresh

log = logging.getLogger("balsam.argo.sync")


@dataclass(frozen=True)
class Welcome:
    applied_here: int  # the highest of the site's messages applied here
    last_seq: int  # the highest number given to a message for the site
    site_applied: int  # the highest of our messages the site has applied (0 if it counted another coordinator's)
    coordinator: str  # our instance id
    confirmed: int  # the assignment number it may start up to
    was_down: bool = False  # it had been marked down: what it was handed before does not count against it now


@dataclass
class _Envelope:
    """A site's envelope with what needs no row done before the locks: its messages decoded, its
    moves checked and their event lines made. (Messages applied before are prepared too, and left
    out under the lock: a resent batch is rare.)"""

    site: str
    ack: int
    messages: Sequence[pb.SiteMessage]
    bodies: list[tuple[int, Any]]
    heartbeat: pb.Heartbeat | None
    reports: taskstore.Prepared

    @classmethod
    def of(cls, site: str, envelope: pb.SiteEnvelope) -> _Envelope:
        """Raises BadRequest, or InputError (``check_message``), for a malformed one (nothing of it applied)."""
        check_message(envelope)
        if envelope.ack:
            check_seq(envelope.ack, "ack")
        bodies = [(m.seq, site_message_body(m)) for m in envelope.messages]
        heartbeat = envelope.heartbeat if envelope.HasField("heartbeat") else None
        if heartbeat is not None:
            _check_heartbeat(heartbeat)
        reports = taskstore.prepare_reports(site, [body for _, body in bodies if isinstance(body, Report)])
        return cls(site, envelope.ack, envelope.messages, bodies, heartbeat, reports)

    @property
    def workflows(self) -> set[int]:
        return self.reports.workflows | {body.workflow_id for _, body in self.bodies if isinstance(body, Spawned)}


class SyncEndpoint:
    def __init__(self, db: Database, lease_s: float = 60.0, batches_at_once: int = 2) -> None:
        self.db = db
        self.lease_s = lease_s
        # Batches of different workflows need not wait for each other, but each is Python work as much
        # as the database's: with ten applying at once on two cores they took the server's interpreter
        # from its event loop (watch streams, leases) and from its unary calls. The others wait here,
        # holding no lock of the database (``coordinator.sync_batches_at_once``).
        self.batches_at_once = batches_at_once
        self._applying = threading.BoundedSemaphore(batches_at_once)
        with db.session() as session:
            self.instance = session.scalar(text("SELECT instance FROM coordinator WHERE id = 1"))

    def hello(self, site: str, site_applied: int, coordinator: str = "", channel_error: str = "") -> Welcome:
        """A site (re)connects. What it applied counts only if it counted our messages: a site that
        last synced with another coordinator (or another incarnation of this one) starts afresh, both
        ways. ('' : a site linked before instances had ids; its numbering is taken as ours.)"""
        check_seq(site_applied, "Hello.last_applied")
        afresh = bool(coordinator) and coordinator != self.instance
        with self.db.session() as session:
            if afresh:
                graph.lock_graph(session)  # first, as every writer of the graph does
            row = session.get(Site, site, with_for_update=graph.SITE_ROW_LOCK)
            if row is None:
                raise NotFound(f"site {site!r} is not registered (call Register first)")
            if afresh:
                self._afresh(session, row)
                site_applied = 0
            last_seq = graph.SITE_OUTBOX.last_seq(session, site)
            if site_applied > last_seq:  # checked before anything is acknowledged (deleted)
                raise BadRequest(f"Hello.last_applied {site_applied} is above the highest message sent to site {site!r} ({last_seq})")
            was_down = row.status == "down"
            if was_down:
                graph.site_event(session, site, f"site {site} is up again")
            if row.status != "stalled":
                row.status = "up"
            row.last_seen_at = func.now()
            row.channel_error = channel_error[:1000]
            self._acknowledged(session, row, site_applied)
            welcome = Welcome(row.last_applied, last_seq, site_applied, self.instance, row.confirmed, was_down)
        self.db.notify(place=True)
        return welcome

    @staticmethod
    def _afresh(session: Session, row: Site) -> None:
        """Both ends number from 1 again. The site killed what it held of ours when it went to another
        coordinator, so what we had placed there is placed again, and what waited for it is dropped.
        (The caller holds the graph lock.)"""
        moved = taskstore.replace(session, row.name, f"site {row.name} went to another coordinator and back: placing again",
                                  unconfirmed_only=False)  # fmt: skip
        for table in ("site_outbox", "site_fences"):
            session.execute(text(f"DELETE FROM {table} WHERE site = :s"), {"s": row.name})
        session.execute(text("UPDATE site_counters SET last_seq = 0 WHERE site = :s"), {"s": row.name})
        row.last_applied = row.acked = row.confirmed = 0
        graph.site_event(session, row.name, f"site {row.name} last synced with another coordinator: its sync starts afresh"
                                            + (f"; {len(moved)} task(s) placed again" if moved else ""))  # fmt: skip

    @staticmethod
    def _acknowledged(session: Session, row: Site, seq: int) -> None:
        """Forget what the site applied, and confirm what it may start: up to what it applied, but never
        an assignment from a fence on, until the site has applied that fence's kill order."""
        graph.SITE_OUTBOX.acknowledge(session, seq, row.name)
        if seq > row.acked:
            row.acked, row.acked_at = seq, func.now()
        session.execute(text("DELETE FROM site_fences WHERE site = :s AND kill_seq <= :acked"), {"s": row.name, "acked": row.acked})
        fence = session.scalar(text("SELECT min(assignment_seq) FROM site_fences WHERE site = :s"), {"s": row.name})
        row.confirmed = max(row.confirmed, row.acked if fence is None else min(row.acked, fence - 1))

    def pending(self, site: str, after: int, max_bytes: int = ENVELOPE_BYTES, limit: int = MAX_BATCH) -> list[bytes]:
        """The site's messages after number ``after``: at most ``max_bytes`` of them (at least one)."""
        with self.db.session() as session:
            return graph.SITE_OUTBOX.pending(session, after, site, max_bytes, limit)

    def answer_many(self, envelopes: Sequence[tuple[str, pb.SiteEnvelope]], raising: bool = False) -> list[pb.CoordinatorEnvelope | Exception]:
        """What envelopes of several sites ask (an acknowledgement, messages, a heartbeat), done in one
        transaction; each one's reply, or the refusal of that one alone (``raising``: raised instead).

        With a hundred sites each sending a few events at a time, a transaction (and a wait for the
        workflows' locks) for each was the limit; together they wait once. A refused envelope is
        rolled back to its savepoint: the other sites' parts stand. The site rows are taken in name
        order, after the workflows' locks, as every writer takes its locks."""
        results: list[pb.CoordinatorEnvelope | Exception | None] = [None] * len(envelopes)
        prepared: list[tuple[int, _Envelope]] = []
        for i, (site, envelope) in enumerate(envelopes):
            try:
                prepared.append((i, _Envelope.of(site, envelope)))
            except (BadRequest, InputError) as exc:
                results[i] = exc
        prepared.sort(key=lambda item: item[1].site)
        messages = any(e.messages for _, e in prepared)
        notify = place = False
        with self._applying if messages else nullcontext(), self.db.session() as session:
            if messages:  # a heartbeat or an ack alone touches only the site's row: it waits for no writer of the graph
                # The workflows the messages name (those applied before too: a superset is safe),
                # before the sites' rows, as every writer takes its locks first.
                graph.lock_workflows(session, set().union(*(e.workflows for _, e in prepared)))
            for i, envelope in prepared:
                try:
                    with session.begin_nested():
                        reply, changed, placing = self._answer_locked(session, envelope)
                except (BadRequest, NotFound, PermissionDenied) as exc:
                    results[i] = exc
                else:
                    results[i] = reply
                    notify, place = notify or changed, place or placing
        if notify:
            self.db.notify(place=place)
        if raising:
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results  # type: ignore[return-value]

    def _answer_locked(self, session: Session, envelope: _Envelope) -> tuple[pb.CoordinatorEnvelope, bool, bool]:
        """One site's envelope, under the workflows' locks: the reply, whether anything changed that
        the watchers or placement should look at, and whether placement should."""
        site = envelope.site
        row = session.get(Site, site, with_for_update=graph.SITE_ROW_LOCK)
        if row is None:
            raise NotFound(f"site {site!r} is not registered")
        reply = pb.CoordinatorEnvelope()
        changed = place = False
        if envelope.ack:
            # Read, not locked: a transaction numbering messages to the site holds its counter, and a
            # site acknowledges only numbers committed before they reached it.
            if envelope.ack > row.acked and envelope.ack > (last_seq := graph.SITE_OUTBOX.last_seq(session, site)):
                raise BadRequest(f"ack {envelope.ack} is above the highest message sent to site {site!r} ({last_seq})")
            before = row.confirmed
            if row.status == "stalled" and envelope.ack > row.acked:
                row.status = "up"
                graph.site_event(session, site, f"site {site} applies its messages again")
            self._acknowledged(session, row, envelope.ack)
            if row.confirmed > before:
                reply.confirmed = row.confirmed
            changed = place = row.status == "up"
        if not envelope.messages and envelope.heartbeat is None:
            return reply, changed, place
        messages, bodies = envelope.messages, envelope.bodies
        new = fresh(messages, row.last_applied, f"site {site}")
        unseen = {id(m) for m in new}
        is_new = [id(m) in unseen for m in messages]
        ending: set[int] = set()
        released = False
        spawned = [body for (_, body), keep in zip(bodies, is_new) if keep and isinstance(body, Spawned)]
        if spawned:
            self._adopt(session, site, spawned)  # a new task is not final: no workflow ends by it
        reports = envelope.reports.subset([keep for (_, body), keep in zip(bodies, is_new) if isinstance(body, Report)])
        if reports.reports:
            try:
                applied = taskstore.apply_reports(session, reports)
            except taskstore.ForeignReport as exc:
                raise PermissionDenied(str(exc)) from None
            ending = applied.ended
            released = bool(applied.released)
            if applied.released_at_site:  # their children may go ahead now, as a placed task's do
                placing.send_ahead(session, applied.released_at_site, self.instance)
            for report, why in applied.ignored:
                if why != "a stale copy":
                    log.warning("site %s: report on task %s not applied: %s", site, report.task_id, why)
        graph.close_workflows(session, ending)
        if new:
            row.last_applied = new[-1].seq
        came_back, grant = self._heard(session, row, envelope.heartbeat)
        if messages:
            reply.ack = row.last_applied
        if grant is not None:
            reply.lease.CopyFrom(grant)
        return reply, changed or bool(new) or came_back, place or released or came_back

    def heartbeats(self, beats: Sequence[tuple[str, pb.Heartbeat]]) -> list[pb.LeaseGrant | BadRequest | None]:
        """Heartbeats of many sites, recorded in one transaction: each one's lease, the refusal of a
        malformed one, or None for one not recorded here (``heartbeat`` records each of those alone).

        A hundred sites beat a hundred times a second: one transaction each was most of the
        coordinator's work at that size. Rows another transaction holds (a batch of the site's events,
        a health check marking it down) are skipped, not waited for, so this never holds one
        site's row while waiting for another's, and the other sites' leases do not wait for it."""
        results: list[pb.LeaseGrant | BadRequest | None] = [None] * len(beats)
        for i, (_, beat) in enumerate(beats):
            try:
                _check_heartbeat(beat)
            except BadRequest as exc:
                results[i] = exc
        wanted = sorted({site for (site, _), result in zip(beats, results) if result is None})
        came_back = False
        with self.db.session() as session:
            rows = {row.name: row for row in session.scalars(
                select(Site).where(Site.name.in_(wanted)).order_by(Site.name).with_for_update(skip_locked=True, **graph.SITE_ROW_LOCK)
            )}  # fmt: skip
            for i, (site, beat) in enumerate(beats):
                if results[i] is None and site in rows:
                    back, results[i] = self._heard(session, rows[site], beat)
                    came_back |= back
        if came_back:
            self.db.notify(place=True)
        return results

    def heartbeat(self, site: str, beat: pb.Heartbeat) -> pb.LeaseGrant:
        """One site's heartbeat, recorded alone (waiting for its row): its lease."""
        envelope = pb.SiteEnvelope()
        envelope.heartbeat.CopyFrom(beat)
        return self.answer_many([(site, envelope)], raising=True)[0].lease

    def _heard(self, session: Session, row: Site, heartbeat: pb.Heartbeat | None) -> tuple[bool, pb.LeaseGrant | None]:
        """The site was heard from (and beat): whether it was down, and the lease that answers its heartbeat."""
        row.last_seen_at = func.now()
        came_back = row.status == "down"
        if came_back:
            row.status = "up"
            graph.site_event(session, row.name, f"site {row.name} is up again")
        if heartbeat is None:
            return came_back, None
        _record_heartbeat(row, heartbeat)
        row.lease_until = func.now() + timedelta(seconds=self.lease_s)
        return came_back, pb.LeaseGrant(heartbeat=heartbeat.number, seconds=self.lease_s)

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
    for field in ("backlog", "running", "nodes"):
        if getattr(beat, field) < 0:
            raise BadRequest(f"heartbeat.{field} must be >= 0, got {getattr(beat, field)}")
    if not _usable(beat.queue_wait_s):
        raise BadRequest(f"heartbeat: queue_wait_s must be a finite number >= 0, got {beat.queue_wait_s!r}")
    if not _usable(beat.launchers_end_s) or beat.launchers_end_s > 10 * 365 * 86400:
        raise BadRequest(f"heartbeat: launchers_end_s must be a number of seconds from 0 to ten years, got {beat.launchers_end_s!r}")


def _record_heartbeat(row: Site, heartbeat: pb.Heartbeat) -> None:
    # While heard, its launchers' end is what it says; unknown (never) if it cannot say.
    row.launchers_end = func.now() + timedelta(seconds=heartbeat.launchers_end_s) if heartbeat.launchers_bounded else None
    row.heartbeat = {
        "backlog": heartbeat.backlog, "running": heartbeat.running, "queue_wait_s": heartbeat.queue_wait_s,
        "models": {app: [m.serial_s, m.parallel_s, m.feature] for app, m in heartbeat.models.items()
                   if _usable(m.serial_s) and _usable(m.parallel_s)},
    }  # fmt: skip
    if heartbeat.nodes > 0:
        row.nodes = heartbeat.nodes


def _usable(seconds: float) -> bool:
    return math.isfinite(seconds) and seconds >= 0

