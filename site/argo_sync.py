"""The site's side of the Argo sync channel, run by the site agent in a thread of its own.

Up: the ``job_events_to_argo`` trigger copies every job event into ``argo_raw_events`` while the
site is linked; ``pump`` turns those of Argo tasks into numbered ``SiteMessage``s in
``argo_outbox`` (a job whose parent is an Argo task joins the global graph as a spawned task
first). Messages stay there until the coordinator acknowledges them, and after a reconnection
are sent again from the coordinator's last acknowledgement (its ``Welcome``).

Down: assignments become local jobs and kill orders kill them; each batch is applied together with
the new ``argo_link.last_applied`` in one transaction, so nothing is applied twice.

The site talks to Argo only through ``balsam.protos`` over gRPC, never through Argo's internals.

Security: with ``argo.ca_file`` the channel is TLS (with ``cert_file``/``key_file``, mutual TLS).
Every call carries the site's credential (``SITE/argo-credential.json``, mode 600), bought once with
an enrolment token (``enrol``, from ``balsam site start --enrol-token``) and renewed by the agent at
half its life (``Refresh``), without a restart: the running stream goes on with the old token until
the coordinator ends it at that token's expiry, and the next stream uses the new one.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from balsam.errors import BalsamError
from balsam.private_files import read_private, write_private
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.protos import auth_pb2 as apb
from balsam.protos import auth_pb2_grpc as arpc
from balsam.site.api import Site
from balsam.site.db import jobstore
from balsam.site.db.models import App, ArgoLink, Job
from balsam.site.db.notify import ARGO_CHANNEL, LAUNCHERS_CHANNEL, Listener
from balsam.site.specs import JobSpec, check_batch, check_shape
from balsam.site.templates import CommandTemplate
from balsam.site.transfers import SiteLocations
from balsam.site.workdir import workdir
from balsam.transfer.base import Location
from balsam.states import FINAL_STATES, JobState
from balsam.wire import channel as wire_channel
from balsam.wire.convert import (
    Assignment, KillOrder, OutputFile, Report, Spawned, coordinator_message_body, report_message, spawned_message,
)  # fmt: skip
from balsam.wire.outbox import Outbox, fresh

log = logging.getLogger("balsam.site.argo")
S = JobState
PUMP_BATCH = 5000
WINDOW = 5000  # messages sent and not yet acknowledged
# Reconnection attempts back off up to this many heartbeats (and at most 30 s): well inside the
# coordinator's site timeout, so a restarted coordinator sees the site again before it gives up on it.
BACKOFF_HEARTBEATS = 5
_ACTIVE = "('READY', 'STAGED_IN', 'PREPROCESSED', 'RESTART_READY', 'RUNNING')"
_FINAL = "('JOB_FINISHED', 'FAILED', 'USER_KILLED')"
MODELS_EVERY_S = 60.0
# Our messages to the coordinator, numbered by the link's row (``argo_link.last_seq``).
ARGO_OUTBOX = Outbox("argo_outbox", "argo_link")


def open_channel(settings, token: str = "") -> grpc.Channel:
    """A channel to the coordinator (``balsam.wire.channel``): TLS when the site has the CA that signed
    its certificate, ``token`` on every call."""
    argo = settings.argo
    try:
        return wire_channel.open_channel(argo.address, ca_file=argo.ca_file or None, cert_file=argo.cert_file or None,
                                         key_file=argo.key_file or None, token=token)  # fmt: skip
    except BalsamError as exc:
        raise BalsamError(f"argo {exc}") from None


def load_credential(settings) -> dict[str, Any] | None:
    """The site's Argo credential, or None before it enrolled; refused when others can read it."""
    path = settings.argo_credential_file
    if not path.exists():
        return None
    try:
        return json.loads(read_private(path))
    except json.JSONDecodeError as exc:
        raise BalsamError(f"{path} is malformed: {exc}") from None


def save_credential(settings, reply: apb.Token) -> dict[str, Any]:
    doc = {"site": reply.name, "address": settings.argo.address, "token": reply.token, "issued_at": time.time(),
           "expires_at": reply.expires_at.seconds if reply.HasField("expires_at") else None}  # fmt: skip
    write_private(settings.argo_credential_file, json.dumps(doc, indent=1))
    return doc


def enrol(settings, enrol_token: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Exchange a one-time enrolment token for this site's credential, kept in argo-credential.json."""
    channel = open_channel(settings, enrol_token.strip())
    try:
        reply = arpc.AuthStub(channel).Enrol(apb.EnrolRequest(site=settings.name), timeout=timeout_s)
    except grpc.RpcError as exc:
        raise BalsamError(f"enrolling with Argo at {settings.argo.address} failed: {exc.code().name}: {exc.details()}") from None
    finally:
        channel.close()
    return save_credential(settings, reply)


def _token(credential: dict[str, Any] | None) -> str:
    return credential["token"] if credential else ""


def link(site: Site, address: str) -> None:
    """Link the site to the coordinator at ``address``: its job events are kept for Argo from now on.

    Another address is another coordinator, whose numbering has nothing to do with the old one's:
    the sync starts afresh (what waited for the old coordinator is dropped).
    """
    with site.session() as session:
        current = session.execute(select(ArgoLink.address).with_for_update()).scalar()
        if current == address:
            return
        _forget(session)
        session.execute(text("INSERT INTO argo_link (id, address, last_applied, last_seq) VALUES (1, :a, 0, 0)"), {"a": address})


def unlink(site: Site) -> None:
    """The site works alone again: stop keeping its events for Argo."""
    with site.session() as session:
        _forget(session)


def _forget(session: Session) -> None:
    for table in ("argo_link", "argo_raw_events", "argo_outbox"):
        session.execute(text(f"DELETE FROM {table}"))


class ArgoSync:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.settings = site.settings
        self.name = site.settings.name
        self.address = site.settings.argo.address
        # Set once what the coordinator had for us when we connected is applied (kill orders first).
        self.first_sync = threading.Event()
        self.status: dict[str, Any] = {"address": self.address, "connected": False, "last_error": ""}
        self.locations = SiteLocations(site.settings)
        self._models: dict[str, pb.RuntimeModel] = {}
        self._models_due = 0.0
        self.credential = load_credential(site.settings)  # refused at start when others can read it
        self._refresh_due = 0.0
        # Heartbeat number -> when it was sent (monotonic) and the launchers it counted.
        self._beats: dict[int, tuple[float, list[int]]] = {}
        self._beat_number = 0

    # -- the connection --------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Keep a sync stream open until ``stop``, reconnecting with backoff."""
        link(self.site, self.address)
        backoff = min(1.0, self.settings.argo.heartbeat_s)
        while not stop.is_set():
            started = time.monotonic()
            try:
                self._session(stop)
            except grpc.RpcError as exc:
                if stop.is_set():
                    break
                hint = wire_channel.unreachable_hint(exc.details() or "", bool(self.settings.argo.ca_file))
                self.status["last_error"] = f"{exc.code().name}: {exc.details()}{hint if exc.code() == grpc.StatusCode.UNAVAILABLE else ''}"
                log.warning("sync with Argo at %s lost: %s", self.address, self.status["last_error"])
            except Exception as exc:  # the database restarting, a bug: log, wait, reconnect
                self.status["last_error"] = f"{type(exc).__name__}: {exc}"
                log.exception("sync with Argo at %s failed", self.address)
            self.status["connected"] = False
            if time.monotonic() - started > 30:
                backoff = min(1.0, self.settings.argo.heartbeat_s)  # it had been working: retry soon
            stop.wait(backoff)
            backoff = min(30.0, BACKOFF_HEARTBEATS * self.settings.argo.heartbeat_s, backoff * 2)

    def _session(self, stop: threading.Event) -> None:
        # The token goes with each call, not with the channel: a credential renewed mid-stream is the
        # one the next call (a later renewal, the next stream) must carry.
        channel = open_channel(self.settings)
        self.credential = load_credential(self.settings)
        try:
            self.refresh(channel)  # a credential that expired while the agent was down cannot be renewed: say so
            metadata = wire_channel.bearer(_token(self.credential))
            rpc.SitesStub(channel).Register(self.registration(), timeout=10, metadata=metadata)
            with self.site.session() as session:
                applied, coordinator = session.execute(select(ArgoLink.last_applied, ArgoLink.coordinator)).one()
            out: queue.Queue[pb.SiteEnvelope | None] = queue.Queue()
            hello = pb.SiteEnvelope(hello=pb.Hello(site=self.name, last_applied=applied, coordinator=coordinator,
                                                   channel_error=self.status["last_error"][:1000]))  # fmt: skip

            def envelopes() -> Iterator[pb.SiteEnvelope]:
                yield hello
                while (envelope := out.get()) is not None:
                    yield envelope

            responses = rpc.SitesStub(channel).Sync(envelopes(), metadata=metadata)
            done = threading.Event()

            def cancel_on_stop() -> None:  # the stream may be idle: nothing else would wake the reader
                while not done.wait(0.5):
                    if stop.is_set():
                        responses.cancel()
                        return

            threading.Thread(target=cancel_on_stop, name="argo-stop", daemon=True).start()
            try:
                first = next(responses)
                if not first.HasField("welcome"):
                    raise BalsamError("the coordinator did not answer Hello with Welcome")
                if coordinator and first.welcome.coordinator != coordinator:
                    self.switch(coordinator, first.welcome.coordinator)
                    applied = 0
                elif not coordinator:
                    self._adopt_coordinator(first.welcome.coordinator)
                self.confirm(first.confirmed)
                acked = {"up": first.welcome.last_applied}
                self._acknowledged(acked["up"])
                if applied >= first.welcome.last_seq:
                    self.first_sync.set()  # nothing waits for us at the coordinator
                self.status.update(connected=True, last_error="", connected_at=time.time())
                log.info("synced with Argo at %s (it applied %d of our messages)", self.address, acked["up"])
                sender = threading.Thread(target=self._send, args=(out, acked, done, stop, channel), name="argo-send", daemon=True)
                sender.start()
                for envelope in responses:
                    if envelope.HasField("lease"):
                        self.hold_lease(envelope.lease)
                    if envelope.confirmed:
                        self.confirm(envelope.confirmed)
                    if envelope.ack:
                        acked["up"] = max(acked["up"], envelope.ack)
                        self._acknowledged(envelope.ack)
                    if envelope.messages:
                        applied = self.apply(envelope.messages)
                        out.put(pb.SiteEnvelope(ack=applied))
                        if applied >= first.welcome.last_seq:
                            self.first_sync.set()
                    if stop.is_set():
                        break
            finally:
                done.set()
                out.put(None)
                responses.cancel()
        finally:
            channel.close()

    # -- the coordinator's instance, the lease and confirmations (fencing: docs/argo.md) ----------------

    def _adopt_coordinator(self, instance: str) -> None:
        """A fresh link (or one made before coordinators had ids) counts for the coordinator it meets."""
        with self.site.session() as session:
            session.execute(text("UPDATE argo_link SET coordinator = :c"), {"c": instance})
            session.execute(text("UPDATE jobs SET argo_coordinator = :c WHERE argo_task_id IS NOT NULL AND argo_coordinator IS NULL"),
                            {"c": instance})  # fmt: skip

    def switch(self, old: str, new: str) -> None:
        """Another coordinator (or a new incarnation of ours) answers: start clean for it. Our numbering
        starts again from 1 both ways and what waited for the old one is dropped; the old one's unfinished
        jobs are killed (nobody could hear of them any more); every job keeps its history."""
        with self.site.session() as session:
            for table in ("argo_raw_events", "argo_outbox"):
                session.execute(text(f"DELETE FROM {table}"))
            session.execute(text("UPDATE argo_link SET coordinator = :c, last_applied = 0, last_seq = 0, confirmed = 0, lease_until = NULL,"
                            " lease_launchers = '{}'"),
                            {"c": new})  # fmt: skip
            stale = session.execute(
                text(f"SELECT id FROM jobs WHERE argo_coordinator IS DISTINCT FROM :c AND argo_task_id IS NOT NULL AND state NOT IN {_FINAL}"),
                {"c": new},
            ).scalars().all()  # fmt: skip
            jobstore.transition(session, stale, S.USER_KILLED, f"its Argo coordinator {old} was replaced by another ({new})")
            session.execute(text("DELETE FROM argo_raw_events"))  # those kills are news for nobody
        log.warning("Argo at %s is another coordinator (%s, was %s): sync started afresh, %d unfinished job(s) of the old one killed",
                    self.address, new, old, len(stale))  # fmt: skip

    def confirm(self, confirmed: int) -> None:
        """Assignments up to ``confirmed`` may start: the coordinator knows we applied them."""
        if not confirmed:
            return
        with self.site.session() as session:
            grew = session.execute(
                text("UPDATE argo_link SET confirmed = :c WHERE confirmed < :c RETURNING id"), {"c": confirmed}
            ).first()
            if grew:
                jobstore.notify_runnable(session)

    def hold_lease(self, grant: pb.LeaseGrant) -> None:
        """The coordinator answered heartbeat ``grant.heartbeat``: our lease runs ``grant.seconds`` from
        when we sent it (never from now: the reply may have been slow, and the coordinator counts from
        when it answered, later), for the launchers that heartbeat counted: the coordinator's bound
        on how long our tasks may run is theirs. Kept in the database's clock, which the launchers read."""
        beat = self._beats.pop(grant.heartbeat, None)
        for number in [n for n in self._beats if n < grant.heartbeat]:
            del self._beats[number]  # answers to older ones will not come
        if beat is None or not 0 < grant.seconds < 86400 * 365:
            return
        sent, launchers = beat
        left = sent + grant.seconds - time.monotonic()
        if left <= 0:
            return
        with self.site.session() as session:
            session.execute(text("UPDATE argo_link SET lease_until = now() + make_interval(secs => :s), lease_launchers = :l"),
                            {"s": left, "l": launchers})  # fmt: skip
            jobstore.notify_runnable(session)

    def refresh(self, channel: grpc.Channel) -> None:
        """Renew the credential once half its life has passed (a failure is logged and retried)."""
        cred = self.credential
        if not cred or not cred.get("expires_at") or time.monotonic() < self._refresh_due:
            return
        issued = float(cred.get("issued_at") or 0)
        if time.time() < issued + (float(cred["expires_at"]) - issued) / 2:
            return
        try:
            reply = arpc.AuthStub(channel).Refresh(apb.RefreshRequest(), metadata=wire_channel.bearer(_token(cred)), timeout=10)
        except grpc.RpcError as exc:
            self._refresh_due = time.monotonic() + 5.0
            self.status["last_error"] = f"refreshing the Argo credential: {exc.code().name}: {exc.details()}"
            log.warning("%s", self.status["last_error"])
            return
        self.credential = save_credential(self.settings, reply)
        log.info("Argo credential renewed (expires at %s)", self.credential["expires_at"])

    def _send(self, out: queue.Queue, acked: dict[str, int], done: threading.Event, stop: threading.Event,
              channel: grpc.Channel | None = None) -> None:  # fmt: skip
        sent = acked["up"]
        next_beat = 0.0
        # Woken by the database the moment a job event is kept for us (the job_events_to_argo
        # trigger NOTIFYs): no poll interval between a job's move and its message.
        listener = Listener(self.site.engine, [ARGO_CHANNEL, LAUNCHERS_CHANNEL])
        try:
            while not done.is_set() and not stop.is_set():
                if channel is not None:
                    self.refresh(channel)
                self.pump()
                bodies = [] if sent - acked["up"] >= WINDOW else self.outbox(sent)
                envelope = pb.SiteEnvelope(messages=[pb.SiteMessage.FromString(body) for body in bodies])
                if time.monotonic() >= next_beat:
                    beat, launchers = self.heartbeat()
                    envelope.heartbeat.CopyFrom(beat)
                    self._beat_number += 1
                    envelope.heartbeat.number = self._beat_number
                    self._beats[self._beat_number] = (time.monotonic(), launchers)
                    next_beat = time.monotonic() + self.settings.argo.heartbeat_s
                if envelope.messages or envelope.HasField("heartbeat"):
                    out.put(envelope)
                if envelope.messages:
                    sent = envelope.messages[-1].seq
                    continue  # there may be more: send until the outbox (or the window) is empty
                # Until something is kept for us, the next heartbeat is due, or (at most 0.5 s) the
                # stream ends: `done` has no file descriptor to wait on. A launcher that started is
                # counted in a heartbeat at once: until then it starts no Argo task.
                if listener.wait(max(0.0, min(0.5, next_beat - time.monotonic()))) and LAUNCHERS_CHANNEL in listener.heard:
                    next_beat = 0.0
        except Exception:
            log.exception("sending to Argo failed; reconnecting")
            out.put(None)
        finally:
            listener.close()

    # -- what is sent ----------------------------------------------------------------------

    def registration(self) -> pb.RegisterRequest:
        settings = self.settings
        with self.site.session() as session:
            apps = sorted(session.scalars(select(App.name)))
        return pb.RegisterRequest(
            name=self.name, apps=apps, nodes=settings.argo.nodes or settings.elastic_queue.max_nodes,
            scheduler=settings.scheduler.name, transfer_endpoint=settings.transfer.globus_endpoint or settings.argo.transfer_endpoint,
            max_tasks=settings.argo.max_tasks,
        )  # fmt: skip

    def heartbeat(self) -> tuple[pb.Heartbeat, list[int]]:
        """What we tell the coordinator, and the launchers it counted: only they may start Argo tasks
        under the lease that answers it (``hold_lease``)."""
        with self.site.session() as session:
            # Grouped over the state index: a site with millions of finished jobs does not scan them.
            counts = dict(session.execute(text(f"SELECT state, count(*) FROM jobs WHERE state IN {_ACTIVE} GROUP BY state")).all())
            running = counts.pop(S.RUNNING.value, 0)
            backlog = sum(counts.values())
            launchers, unbounded, end_s = session.execute(text(
                "SELECT coalesce(array_agg(l.id ORDER BY l.id), '{}'), count(*) FILTER (WHERE b.started_at IS NULL),"
                " coalesce(max(extract(epoch FROM b.started_at + make_interval(mins => b.wall_time_min) - now())), 0)"
                " FROM launchers l LEFT JOIN batch_jobs b ON b.id = l.batch_job_id WHERE l.state = 'running'"
            )).one()  # fmt: skip
        wait = 0.0 if launchers else self.settings.argo.queue_wait_s
        nodes = self.settings.argo.nodes or self.settings.elastic_queue.max_nodes
        # When every launcher running now has surely ended (its batch job's wall time): known only if
        # each runs in a batch job that has started; lets the coordinator place our tasks elsewhere
        # without fear, should we fall silent for good. A launcher that starts later, while the lease
        # this heartbeat earns holds, is not in that bound: it starts no Argo task under this lease.
        beat = pb.Heartbeat(backlog=backlog, running=running, queue_wait_s=wait, nodes=nodes, models=self.models(),
                            launchers_end_s=max(0.0, float(end_s)), launchers_bounded=not unbounded)  # fmt: skip
        return beat, list(launchers)

    def models(self) -> dict[str, pb.RuntimeModel]:
        """The apps' performance models for placement, refitted every MODELS_EVERY_S (runs accumulate
        slowly; a fit per heartbeat would cost more than it tells). Only models that know how the
        run time changes with the node count are sent: Argo sizes nothing, but compares sites."""
        if time.monotonic() < self._models_due:
            return self._models
        self._models_due = time.monotonic() + MODELS_EVERY_S
        try:
            from balsam.site.perf_data import backlog_models

            with self.site.session() as session:
                apps = list(session.scalars(select(App.name)))
                fitted = backlog_models(session, self.settings, apps)
        except Exception:  # no model is no loss: placement falls back to the task's own estimate
            log.exception("performance models for Argo unavailable")
            return self._models
        self._models = {
            app: pb.RuntimeModel(serial_s=m.serial_s, parallel_s=m.parallel_s, feature=m.feature or "")
            for app, m in fitted.items() if m.node_dependent
        }  # fmt: skip
        return self._models

    def outbox(self, after: int) -> list[bytes]:
        """Our messages after number ``after``, as many as fit in one envelope."""
        with self.site.session() as session:
            return ARGO_OUTBOX.pending(session, after)

    def _acknowledged(self, seq: int) -> None:
        with self.site.session() as session:
            ARGO_OUTBOX.acknowledge(session, seq)

    def pump(self) -> int:
        """Turn raw job events into numbered messages; the number of messages made."""
        with self.site.session() as session:
            coordinator = session.execute(select(ArgoLink.coordinator).with_for_update()).scalar()
            if coordinator is None:
                return 0
            raws = session.execute(
                text(
                    "SELECT r.id, r.job_id, r.from_state, r.to_state, r.message, r.at, j.return_code, j.workflow, j.output_files,"
                    # A job of another (older) coordinator is news for nobody here: its task id means another task.
                    " CASE WHEN j.argo_coordinator = l.coordinator THEN j.argo_task_id END AS argo_task_id, j.argo_attempt,"
                    " j.argo_task_id IS NOT NULL AND j.argo_coordinator IS DISTINCT FROM l.coordinator AS foreign_job"
                    " FROM argo_raw_events r LEFT JOIN jobs j ON j.id = r.job_id CROSS JOIN argo_link l ORDER BY r.id LIMIT :n"
                ),
                {"n": PUMP_BATCH},
            ).all()
            if not raws:
                return 0
            messages: list[pb.SiteMessage] = []
            orphans = {r.job_id for r in raws if r.argo_task_id is None and not r.foreign_job}
            linked = self._adopt_children(session, orphans, coordinator, messages)
            for raw in raws:
                task_id, attempt = (raw.argo_task_id, raw.argo_attempt) if raw.argo_task_id else linked.get(raw.job_id, (None, None))
                if task_id is None:
                    continue  # a job of this site alone
                final = raw.to_state in FINAL_STATES or raw.to_state in (S.RUN_DONE, S.RUN_ERROR)
                outputs = self.outputs(raw.job_id, raw.workflow, raw.output_files) if raw.to_state == S.JOB_FINISHED else ()
                messages.append(report_message(Report(
                    task_id, attempt, raw.job_id, S(raw.from_state), S(raw.to_state), raw.at, raw.message,
                    raw.return_code if final else None, outputs,
                )))  # fmt: skip
            ARGO_OUTBOX.enqueue(session, messages)
            session.execute(text("DELETE FROM argo_raw_events WHERE id = ANY(:ids)"), {"ids": [r.id for r in raws]})
            return len(messages)

    def outputs(self, job_id: int, workflow: str | None, declared: list[str] | None) -> tuple[OutputFile, ...]:
        """The declared outputs a finished job left in its folder, with where other sites fetch them.

        A declared output that is not there is left out: a task that reads it is then refused by
        the coordinator with that reason, instead of failing on a missing file at another site.
        """
        if not declared or workflow is None:
            return ()
        folder = workdir(self.settings.data_dir, workflow, job_id)
        found = []
        for name in declared:
            path = folder / name
            try:
                size = _size(path)
                location = self.locations.output_location(path).uri
            except (OSError, BalsamError):
                continue
            found.append(OutputFile(name, location, size))
        return tuple(found)

    def _adopt_children(self, session: Session, job_ids: set[int], coordinator: str,
                        messages: list[pb.SiteMessage]) -> dict[int, tuple[str, int]]:  # fmt: skip
        """Jobs created by a running Argo task with it as parent join the global graph."""
        if not job_ids:
            return {}
        rows = session.execute(
            text(
                "SELECT p.child_id, array_agg(pj.argo_task_id ORDER BY pj.argo_task_id) AS parents"
                " FROM job_parents p JOIN jobs pj ON pj.id = p.parent_id"
                " WHERE p.child_id = ANY(:ids) AND pj.argo_task_id IS NOT NULL AND pj.argo_coordinator = :c GROUP BY p.child_id"
            ),
            {"ids": sorted(job_ids), "c": coordinator},
        ).all()
        linked = {}
        for child_id, parents in rows:
            job = session.get(Job, child_id)
            workflow = parents[0].split("/", 1)[0]
            task_id = f"{workflow}/{self.name}:{child_id}"
            job.argo_task_id, job.argo_attempt, job.argo_coordinator = task_id, 1, coordinator
            messages.append(spawned_message(Spawned(
                task_id, int(workflow), child_id, job.app.name, dict(job.parameters), job.resources, tuple(parents),
                tuple(str(o) for o in job.output_files), {k: str(v) for k, v in job.tags.items()},
            )))  # fmt: skip
            linked[child_id] = (task_id, 1)
        session.flush()
        return linked

    # -- what is received ------------------------------------------------------------------

    def apply(self, messages: Sequence[pb.CoordinatorMessage]) -> int:
        """Apply a batch of the coordinator's messages (those not applied before); the new high mark."""
        with self.site.session() as session:
            link_row = session.execute(select(ArgoLink).with_for_update()).scalar_one()
            new = fresh(messages, link_row.last_applied, "Argo")
            assigns: list[tuple[int, Assignment]] = []
            refused: list[tuple[pb.Assignment, str]] = []
            for message in new:
                try:
                    body = coordinator_message_body(message)
                except BalsamError as exc:  # a message we cannot read is refused with why, never skipped silently
                    if message.HasField("assign"):
                        refused.append((message.assign, str(exc)))
                    else:
                        log.warning("message %d from Argo cannot be applied, skipped: %s", message.seq, exc)
                    continue
                if isinstance(body, KillOrder):
                    self._create(session, assigns, link_row.coordinator)  # in order: an assignment before its kill
                    assigns = []
                    self._kill(session, body, link_row.coordinator)
                elif body.coordinator and body.coordinator != link_row.coordinator:
                    refused.append((message.assign, f"it comes from coordinator {body.coordinator}, not {link_row.coordinator}"))
                else:
                    assigns.append((message.seq, body))
            self._create(session, assigns, link_row.coordinator)
            self._refuse(session, [(a.task_id, a.attempt, why) for a, why in refused])
            if new:
                link_row.last_applied = new[-1].seq
            return link_row.last_applied

    def _create(self, session: Session, assigns: Sequence[tuple[int, Assignment]], coordinator: str) -> None:
        """Each assignment (with its number) becomes a job of ours, or is refused with why.

        One sent ahead waits for the jobs of the tasks it names (``waits_for``), made before it: from an
        earlier envelope, or earlier in this one (then what comes before it is made first)."""
        if not assigns:
            return
        apps = session.execute(select(App.name, App.id, App.command_template)).all()
        app_ids = {row.name: row.id for row in apps}
        templates = {row.name: CommandTemplate.parse(row.command_template) for row in apps}
        wanted = sorted({a.task_id for _, a in assigns} | {t for _, a in assigns for t in a.waits_for})
        made = {(row.argo_task_id, row.argo_attempt): row.id for row in session.execute(
            text("SELECT id, argo_task_id, argo_attempt FROM jobs WHERE argo_coordinator = :c AND argo_task_id = ANY(:ids)"),
            {"c": coordinator, "ids": wanted},
        )}  # fmt: skip
        specs: list[JobSpec] = []
        links: list[tuple[str, int, int]] = []
        refused = []
        for seq, assign in assigns:
            if (assign.task_id, assign.attempt) in made:
                log.warning("Argo task %s attempt %d is here already (job made before); not made again", assign.task_id, assign.attempt)
                continue
            if any((task_id, attempt) not in made for task_id, attempt in assign.waits_for.items()):
                self._make(session, specs, links, app_ids, coordinator, made)  # its parents may be among them
                specs, links = [], []
            absent = [f"{task_id} (attempt {attempt})" for task_id, attempt in assign.waits_for.items() if (task_id, attempt) not in made]
            try:
                if absent:
                    raise BalsamError(f"it waits for task {absent[0]}, which has no job here")
                parents = {task_id: made[(task_id, attempt)] for task_id, attempt in assign.waits_for.items()}
                spec = _job_spec(assign, sorted(parents.values()), self._inputs(assign, parents))
                check_shape(spec)
                check_batch([spec], templates)
            except BalsamError as exc:
                refused.append((assign.task_id, assign.attempt, str(exc)))
                continue
            specs.append(spec)
            links.append((assign.task_id, assign.attempt, seq))
        self._make(session, specs, links, app_ids, coordinator, made)
        self._refuse(session, refused)

    def _inputs(self, assign: Assignment, parents: dict[str, int]) -> dict[str, str]:
        """The assignment's inputs as locations: those named ``TASK/OUTPUT`` (sent ahead) are in the
        folder of that task's job here (``parents``: task id -> job id), once it ends."""
        inputs = {}
        for local, source in assign.spec.inputs.items():
            if "://" in source:
                inputs[local] = source
                continue
            task, _, output = source.partition("/")
            job_id = parents.get(f"{assign.workflow_id}/{task}")
            if job_id is None or not output:
                raise BalsamError(f"input {local!r} names {source!r}, which is no output of a task it waits for here")
            inputs[local] = Location.local(str(workdir(self.settings.data_dir, assign.workflow or str(assign.workflow_id), job_id) / output)).uri
        return inputs

    @staticmethod
    def _make(session: Session, specs: list[JobSpec], links: list[tuple[str, int, int]], app_ids: dict[str, int], coordinator: str,
              made: dict[tuple[str, int], int]) -> None:  # fmt: skip
        """Insert the jobs of ``specs``, linked to their tasks (``links``: task id, attempt, assignment
        number), and add them to ``made``."""
        if not specs:
            return
        # No launcher may start them before the coordinator confirms their numbers: `confirm` wakes
        # the launchers then; woken now, each would look and find nothing it may take. The transfer
        # service, which listens too, may fetch inputs at once: woken for jobs that have some.
        wake = any(spec.inputs or spec.stage_in for spec in specs)
        ids = jobstore.insert_jobs(session, specs, app_ids, wake=wake)
        session.execute(
            text(
                "UPDATE jobs SET argo_task_id = v.t, argo_attempt = v.a, argo_seq = v.seq, argo_coordinator = :c"
                " FROM (SELECT unnest(CAST(:ids AS bigint[])) AS id, unnest(CAST(:tasks AS text[])) AS t,"
                " unnest(CAST(:attempts AS int[])) AS a, unnest(CAST(:seqs AS bigint[])) AS seq) v WHERE jobs.id = v.id"
            ),
            {"ids": ids, "tasks": [t for t, _, _ in links], "attempts": [a for _, a, _ in links], "seqs": [q for _, _, q in links],
             "c": coordinator},
        )  # fmt: skip
        made.update({(task_id, attempt): job_id for (task_id, attempt, _), job_id in zip(links, ids)})

    def _refuse(self, session: Session, refused: Sequence[tuple[str, int, str]]) -> None:
        """Assignments that cannot become jobs here fail, with the reason: no job carries it, so we tell Argo directly."""
        if not refused:
            return
        ARGO_OUTBOX.enqueue(session, [
            report_message(Report(task_id, attempt, 0, S.READY, S.FAILED, None, f"site {self.name} refused it: {why}"))
            for task_id, attempt, why in refused
        ])  # fmt: skip
        for task_id, _, why in refused:
            log.warning("refused Argo task %s: %s", task_id, why)

    def _kill(self, session: Session, order: KillOrder, coordinator: str) -> None:
        job_id = session.scalar(
            text("SELECT id FROM jobs WHERE argo_coordinator = :c AND argo_task_id = :t AND argo_attempt = :a FOR UPDATE"),
            {"c": coordinator, "t": order.task_id, "a": order.attempt},
        )
        if job_id is None:
            return
        state = session.scalar(text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id})
        if state not in FINAL_STATES:
            jobstore.transition(session, [job_id], S.USER_KILLED, f"killed by Argo: {order.reason}")


def _job_spec(assign: Assignment, parents: list[int], inputs: dict[str, str]) -> JobSpec:
    """The job of an assignment; ``parents``: the jobs here of the tasks it waits for (sent ahead);
    ``inputs``: its inputs as locations."""
    spec = assign.spec
    return JobSpec(
        app=spec.app, name=spec.name, workflow=assign.workflow or str(assign.workflow_id), params=dict(spec.params),
        resources=spec.resources, tags={**spec.tags, "argo_task": assign.task_id}, inputs=inputs,
        outputs=list(spec.outputs), source=f"Argo task {assign.task_id}", parents=list(parents),
    )  # fmt: skip


def _size(path: Path) -> int:
    """Bytes of a file, or of everything under a folder."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
