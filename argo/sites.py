"""The coordinator's side of the sites: registration, the numbered sync, health and placement.

Sites send numbered messages (job events, spawned tasks); ``apply`` applies a batch and records the
highest number in one transaction, so a batch sent twice (after a reconnection) is applied once.
Messages to sites (assignments, kill orders) are numbered per site in ``site_outbox`` by the same
transaction that decides them, and are kept until the site acknowledges them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from balsam.argo import graph, placement
from balsam.argo.auth import PermissionDenied
from balsam.argo.db.models import FINAL, Site, Task
from balsam.argo.store import BadRequest, Coordinator, NotFound
from balsam.argo.wire import from_timestamp, state_name
from balsam.errors import BalsamError
from balsam.protos import argo_pb2 as pb
from balsam.states import JobState

S = JobState


class SyncGap(BalsamError):
    """A site skipped message numbers: it must reconnect and resend from the last acknowledgement."""


class ArgoCoordinator(Coordinator):
    # -- registration and listing ----------------------------------------------------------

    def register(self, request: pb.RegisterRequest) -> bool:
        """Add the site, or update what it offers; True when it is new."""
        if not request.name or len(request.name) > 200 or "/" in request.name or ":" in request.name:
            raise BadRequest(f"site name {request.name!r} must be 1-200 characters without '/' or ':'")
        if request.nodes < 0 or request.max_tasks < 0:
            raise BadRequest("nodes and max_tasks must not be negative")
        values = {
            "apps": json.dumps(sorted(set(request.apps))), "nodes": max(1, request.nodes), "scheduler": request.scheduler,
            "endpoint": request.transfer_endpoint, "max_tasks": request.max_tasks, "name": request.name,
        }  # fmt: skip
        with self.session() as session:
            created = session.execute(
                text(
                    "INSERT INTO sites (name, apps, nodes, scheduler, transfer_endpoint, max_tasks, status, heartbeat)"
                    " VALUES (:name, CAST(:apps AS jsonb), :nodes, :scheduler, :endpoint, :max_tasks, 'up', '{}')"
                    " ON CONFLICT (name) DO UPDATE SET apps = excluded.apps, nodes = excluded.nodes,"
                    "  scheduler = excluded.scheduler, transfer_endpoint = excluded.transfer_endpoint,"
                    "  max_tasks = excluded.max_tasks, last_seen_at = now()"
                    " RETURNING (xmax = 0) AS created"
                ),
                values,
            ).scalar_one()
        self.notify(place=True)
        return bool(created)

    def sites(self) -> list[tuple[Site, int]]:
        """Every site with its count of placed tasks that have not ended."""
        with self.session() as session:
            rows = session.scalars(select(Site).order_by(Site.name)).all()
            assigned = dict(
                session.execute(text(f"SELECT site, count(*) FROM tasks WHERE site IS NOT NULL AND state NOT IN {FINAL} GROUP BY site")).all()
            )
            return [(row, assigned.get(row.name, 0)) for row in rows]

    # -- the sync channel ------------------------------------------------------------------

    def hello(self, site: str, site_applied: int) -> tuple[int, int]:
        """A site (re)connects: it is up; returns the highest of its messages applied here and the
        highest number given to a message for it."""
        with self.session() as session:
            row = session.get(Site, site, with_for_update=True)
            if row is None:
                raise NotFound(f"site {site!r} is not registered (call Register first)")
            row.status, row.last_seen_at = "up", func.now()
            self._acknowledged(session, site, site_applied)
            numbers = row.last_applied, row.last_seq
        self.notify(place=True)
        return numbers

    def acknowledge(self, site: str, seq: int) -> None:
        with self.session() as session:
            self._acknowledged(session, site, seq)

    @staticmethod
    def _acknowledged(session: Session, site: str, seq: int) -> None:
        session.execute(text("DELETE FROM site_outbox WHERE site = :s AND seq <= :seq"), {"s": site, "seq": seq})

    def outbox(self, site: str, after: int, limit: int = 500) -> list[bytes]:
        with self.session() as session:
            return list(session.execute(
                text("SELECT body FROM site_outbox WHERE site = :s AND seq > :after ORDER BY seq LIMIT :n"),
                {"s": site, "after": after, "n": limit},
            ).scalars())  # fmt: skip

    def apply(self, site: str, messages: Sequence[pb.SiteMessage], heartbeat: pb.Heartbeat | None = None) -> int:
        """Apply a batch of the site's numbered messages (skipping those applied before); the new high mark."""
        placed_any = False
        with self.session() as session:
            graph.lock_graph(session)
            row = session.get(Site, site, with_for_update=True)
            if row is None:
                raise NotFound(f"site {site!r} is not registered")
            expected = row.last_applied + 1
            fresh = [m for m in messages if m.seq >= expected]
            for message in fresh:
                if message.seq != expected:
                    raise SyncGap(f"site {site}: expected message {expected}, got {message.seq}")
                expected += 1
            spawned = [m.spawned for m in fresh if m.HasField("spawned")]
            events = [m.event for m in fresh if m.HasField("event")]
            touched: set[int] = set()
            if spawned:
                touched |= self._adopt(session, site, spawned)
            if events:
                touched_events, placed_any = self._apply_events(session, site, events)
                touched |= touched_events
            graph.close_workflows(session, touched)
            row.last_applied = expected - 1
            row.status, row.last_seen_at = "up", func.now()
            if heartbeat is not None:
                row.heartbeat = {
                    "backlog": heartbeat.backlog, "running": heartbeat.running, "queue_wait_s": heartbeat.queue_wait_s,
                    "models": {app: [m.serial_s, m.parallel_s, m.feature] for app, m in heartbeat.models.items()
                               if _usable(m.serial_s) and _usable(m.parallel_s)},
                }  # fmt: skip
                if heartbeat.nodes > 0:
                    row.nodes = heartbeat.nodes
            last = row.last_applied
        if fresh:
            self.notify(place=placed_any)
        return last

    def _apply_events(self, session: Session, site: str, events: Sequence[pb.TaskEvent]) -> tuple[set[int], bool]:
        ids = sorted({e.task_id for e in events})
        tasks = {t.id: t for t in session.execute(
            select(Task.id, Task.workflow_id, Task.site, Task.attempt, Task.state, Task.sites_tried).where(Task.id.in_(ids))
        )}  # fmt: skip
        # A site reports only on tasks it was given: news of a task never placed there is refused
        # (the whole batch: nothing of it is applied), unlike news of its own stale copies.
        foreign = sorted(t.id for t in tasks.values() if t.site != site and site not in (t.sites_tried or []))
        if foreign:
            raise PermissionDenied(f"site {site} reported on task(s) never assigned to it: {', '.join(foreign[:5])}")
        state = {task_id: t.state for task_id, t in tasks.items()}
        updates: dict[str, tuple[str, int, int | None, str]] = {}
        located: dict[str, dict[str, Any]] = {}
        rows, finished, ended = [], [], []
        for event in events:
            task = tasks.get(event.task_id)
            # A stale copy (the task was placed again elsewhere, or killed here): its news is not the task's.
            if task is None or task.site != site or task.attempt != event.attempt or state[task.id] == S.USER_KILLED:
                continue
            old, new = state[task.id], state_name(event.to_state)
            state[task.id] = new
            code = event.return_code if event.has_return_code else None
            updates[task.id] = (new, event.job_id, code, event.message)
            rows.append((task.id, task.workflow_id, site, state_name(event.from_state), new, from_timestamp(event.at), event.message))
            if new == S.JOB_FINISHED and old != S.JOB_FINISHED:
                finished.append(task.id)
                if event.outputs:
                    located[task.id] = {o.name: {"location": o.location, "size": o.size_bytes, "site": site} for o in event.outputs}
            elif new in (S.FAILED, S.USER_KILLED) and old not in (S.FAILED, S.USER_KILLED):
                ended.append(task.id)
        if updates:
            keys = list(updates)
            session.execute(
                text(
                    "UPDATE tasks SET state = v.state, site_job_id = v.job, return_code = coalesce(v.rc, tasks.return_code),"
                    " message = v.msg, updated_at = now()"
                    " FROM (SELECT unnest(CAST(:ids AS text[])) AS id, unnest(CAST(:states AS text[])) AS state,"
                    "  unnest(CAST(:jobs AS bigint[])) AS job, unnest(CAST(:rcs AS int[])) AS rc, unnest(CAST(:msgs AS text[])) AS msg) v"
                    " WHERE tasks.id = v.id"
                ),
                {"ids": keys, "states": [updates[k][0] for k in keys], "jobs": [updates[k][1] for k in keys],
                 "rcs": [updates[k][2] for k in keys], "msgs": [updates[k][3] for k in keys]},
            )  # fmt: skip
            graph.record_events(session, rows)
        if located:
            keys = sorted(located)
            session.execute(
                text(
                    "UPDATE tasks SET output_locations = v.loc FROM (SELECT unnest(CAST(:ids AS text[])) AS id,"
                    " unnest(CAST(:locs AS jsonb[])) AS loc) v WHERE tasks.id = v.id"
                ),
                {"ids": keys, "locs": [json.dumps(located[k]) for k in keys]},
            )
        released = graph.release_children(session, finished)
        graph.block_descendants(session, ended)
        return {tasks[k].workflow_id for k in updates}, bool(released)

    def _adopt(self, session: Session, site: str, spawned: Sequence[pb.SpawnedTask]) -> set[int]:
        """Tasks that running tasks created at the site join the graph, already placed there."""
        touched = set()
        for task in spawned:
            prefix, _, name = task.task_id.partition("/")
            if prefix != str(task.workflow_id) or not name:
                raise BalsamError(f"site {site}: spawned task id {task.task_id!r} does not belong to workflow {task.workflow_id}")
            if not name.startswith(f"{site}:"):
                raise PermissionDenied(f"site {site} may spawn only tasks named {task.workflow_id}/{site}:JOB, not {task.task_id!r}")
            strangers = session.execute(
                text("SELECT id FROM tasks WHERE id = ANY(:ids) AND NOT (coalesce(site, '') = :s OR sites_tried ? :s)"),
                {"ids": list(task.spec.parents), "s": site},
            ).scalars().all()
            if strangers:
                raise PermissionDenied(f"site {site} may spawn children only of its own tasks, not of {', '.join(strangers[:5])}")
            status = session.scalar(text("SELECT status FROM workflows WHERE id = :wf"), {"wf": task.workflow_id})
            if status is None:
                continue  # its workflow was deleted: nothing to join
            spec = task.spec
            try:
                params = json.loads(spec.params_json or "{}")
            except json.JSONDecodeError:
                params = {}
            resources = {f.name: getattr(spec.resources, f.name) for f in spec.resources.DESCRIPTOR.fields if getattr(spec.resources, f.name)}
            parents = session.execute(
                text("SELECT id, state FROM tasks WHERE id = ANY(:ids)"), {"ids": list(spec.parents)}
            ).all()
            pending = sum(1 for p in parents if p.state != S.JOB_FINISHED)
            inserted = session.execute(
                text(
                    "INSERT INTO tasks (id, workflow_id, name, app, params, resources, inputs, outputs, tags, pin, state,"
                    " pending_parents, blocked, site, attempt, site_job_id, sites_tried, message)"
                    " VALUES (:id, :wf, :name, :app, CAST(:params AS jsonb), CAST(:res AS jsonb), CAST(:inputs AS jsonb),"
                    "  CAST(:outputs AS jsonb), CAST(:tags AS jsonb), NULL, 'CREATED', :pending, false, :site, 1, :job,"
                    "  CAST(:tried AS jsonb), :msg)"
                    " ON CONFLICT (id) DO NOTHING RETURNING id"
                ),
                {"id": task.task_id, "wf": task.workflow_id, "name": name, "app": spec.app, "params": json.dumps(params),
                 "res": json.dumps(resources), "inputs": json.dumps(dict(spec.inputs)), "outputs": json.dumps(list(spec.outputs)),
                 "tags": json.dumps(dict(spec.tags)), "pending": pending, "site": site, "job": task.job_id,
                 "tried": json.dumps([site]), "msg": f"spawned at site {site} (job {task.job_id})"},
            ).scalar()  # fmt: skip
            if inserted is None:
                continue
            for parent in parents:
                session.execute(
                    text("INSERT INTO task_parents (child_id, parent_id) VALUES (:c, :p) ON CONFLICT DO NOTHING"),
                    {"c": task.task_id, "p": parent.id},
                )
            graph.record_events(session, [(task.task_id, task.workflow_id, site, "", S.CREATED, None, f"spawned at site {site}")])
            if status != "running":
                self._kill(session, session.scalars(select(Task).where(Task.id == task.task_id)).all(), f"workflow {status}")
            touched.add(task.workflow_id)
        return touched

    # -- health ----------------------------------------------------------------------------

    def forgive_downtime(self) -> None:
        """At start-up: the sites could not reach a stopped coordinator, so their silence until now
        does not count against them (else a restart longer than the timeout would place every task
        again)."""
        with self.session() as session:
            session.execute(text("UPDATE sites SET last_seen_at = now() WHERE status = 'up'"))

    def mark_silent_sites_down(self, timeout_s: float) -> list[str]:
        """Sites silent for longer than ``timeout_s`` are down: their unfinished tasks go back to be placed."""
        with self.session() as session:
            graph.lock_graph(session)
            down = session.execute(
                text("UPDATE sites SET status = 'down' WHERE status = 'up' AND last_seen_at < now() - make_interval(secs => :t) RETURNING name"),
                {"t": timeout_s},
            ).scalars().all()
            for site in sorted(down):
                self._replace_tasks_of(session, site, f"site {site} is down (silent for more than {timeout_s:g} s): placing again")
        if down:
            self.notify(place=True)
        return list(down)

    def _replace_tasks_of(self, session: Session, site: str, reason: str) -> None:
        tasks = session.execute(
            text(f"SELECT id, workflow_id, state, attempt, pending_parents FROM tasks WHERE site = :s AND state NOT IN {FINAL} ORDER BY id FOR UPDATE"),
            {"s": site},
        ).all()
        if not tasks:
            return
        # Should the site come back, these orders reach it first: its copies are killed, not run twice.
        graph.kill_orders(session, ((site, t.id, t.attempt) for t in tasks), f"placed again elsewhere: {reason}")
        session.execute(
            text(
                "UPDATE tasks SET site = NULL, site_job_id = NULL, message = :why, updated_at = now(),"
                " state = CASE WHEN pending_parents > 0 THEN 'AWAITING_PARENTS' ELSE 'READY' END"
                " WHERE id = ANY(:ids)"
            ),
            {"ids": [t.id for t in tasks], "why": reason},
        )
        graph.record_events(session, (
            (t.id, t.workflow_id, site, t.state, S.AWAITING_PARENTS if t.pending_parents else S.READY, None, reason) for t in tasks
        ))  # fmt: skip

    # -- placement -------------------------------------------------------------------------

    def place_round(self, limit: int = 50_000) -> int:
        """Place up to ``limit`` ready tasks on the sites that are up; the number placed."""
        with self.session() as session:
            graph.lock_graph(session)
            sites = session.scalars(select(Site).where(Site.status == "up").order_by(Site.name)).all()
            if not sites:
                return 0
            rows = session.execute(
                text("SELECT id, workflow_id, app, pin, resources, inputs, params FROM tasks WHERE site IS NULL AND state = 'READY'"
                     " ORDER BY workflow_id, created_at, id LIMIT :n"),
                {"n": limit},
            ).all()  # fmt: skip
            if not rows:
                return 0
            result = placement.place(self._ready(session, rows), self._views(session, sites))
            if result.assigned:
                self._assign(session, result.assigned)
        if result.assigned:
            self.notify()
        return len(result.assigned)

    def _views(self, session: Session, sites: Sequence[Site]) -> list[placement.SiteView]:
        in_flight = dict(
            session.execute(text(f"SELECT site, count(*) FROM tasks WHERE site IS NOT NULL AND state NOT IN {FINAL} GROUP BY site")).all()
        )
        views = []
        for site in sites:
            beat: dict[str, Any] = site.heartbeat or {}
            waiting = max(int(beat.get("backlog", 0)), in_flight.get(site.name, 0))
            views.append(placement.SiteView(
                name=site.name, healthy=True, apps=frozenset(site.apps), nodes=site.nodes,
                queue_wait_s=float(beat.get("queue_wait_s", 0.0)), backlog_node_s=waiting * placement.DEFAULT_RUNTIME_S,
                in_flight=in_flight.get(site.name, 0), max_tasks=site.max_tasks,
                runtime_models={app: placement.RuntimeModel(*m) for app, m in beat.get("models", {}).items()},
            ))  # fmt: skip
        return views

    @staticmethod
    def _ready(session: Session, rows: Sequence[Any]) -> list[placement.ReadyTask]:
        located = _parent_outputs(session, rows)
        ready = []
        for row in rows:
            res = row.resources or {}
            inputs = tuple(
                placement.InputFile(site=found["site"], size_bytes=max(0, int(found.get("size") or 0)))
                for ref in _references(row) if (found := located.get(ref))
            )  # fmt: skip
            ready.append(placement.ReadyTask(
                id=row.id, app=row.app, workflow_id=row.workflow_id, pin=row.pin, nodes=res.get("nodes", 1),
                node_packing_count=res.get("node_packing_count", 1), wall_time_min=res.get("wall_time_min"), inputs=inputs,
                params=row.params or {},
            ))  # fmt: skip
        return ready

    def _assign(self, session: Session, assigned: Sequence[tuple[str, str]]) -> None:
        """Send each placed task to its site, its inputs named by where its parents left them.

        A task whose parent finished without leaving an output it reads cannot run anywhere: it
        fails here with that reason instead of at a site, over a file that is not there.
        """
        wanted = session.execute(
            text("SELECT id, workflow_id, inputs FROM tasks WHERE id = ANY(:ids)"), {"ids": [a[0] for a in assigned]}
        ).all()
        located = _parent_outputs(session, wanted)
        resolved: dict[str, dict[str, str]] = {}
        missing: dict[str, str] = {}
        for task in wanted:
            inputs: dict[str, str] = {}
            for local, source in (task.inputs or {}).items():
                if "://" in source:
                    inputs[local] = source
                    continue
                parent, _, output = source.partition("/")
                found = located.get(f"{task.workflow_id}/{parent}/{output}")
                if found is None:
                    missing[task.id] = f"input {local!r}: task {parent!r} finished without leaving its output {output!r}"
                    break
                inputs[local] = found["location"]
            resolved[task.id] = inputs
        if missing:
            self._fail_unplaceable(session, missing)
        assigned = [a for a in assigned if a[0] not in missing]
        if not assigned:
            return
        placed = session.execute(
            text(
                "UPDATE tasks SET site = v.site, attempt = tasks.attempt + 1, sites_tried = tasks.sites_tried || to_jsonb(v.site),"
                " updated_at = now()"
                " FROM (SELECT unnest(CAST(:ids AS text[])) AS id, unnest(CAST(:sites AS text[])) AS site) v"
                " WHERE tasks.id = v.id AND tasks.site IS NULL AND tasks.state = 'READY'"
                " RETURNING tasks.id, tasks.workflow_id, tasks.name, tasks.app, tasks.params, tasks.resources,"
                "  tasks.outputs, tasks.tags, tasks.site, tasks.attempt"
            ),
            {"ids": [a[0] for a in assigned], "sites": [a[1] for a in assigned]},
        ).all()
        names = dict(session.execute(
            text("SELECT id, name FROM workflows WHERE id = ANY(:ids)"), {"ids": sorted({p.workflow_id for p in placed})}
        ).all())  # fmt: skip
        by_site: dict[str, list[pb.CoordinatorMessage]] = {}
        for task in placed:
            spec = pb.TaskSpec(
                name=task.name, app=task.app, params_json=json.dumps(task.params), resources=pb.Resources(**task.resources),
                inputs=resolved.get(task.id, {}), outputs=task.outputs, tags=task.tags,
            )  # fmt: skip
            message = pb.Assignment(task_id=task.id, attempt=task.attempt, workflow_id=task.workflow_id, workflow=names[task.workflow_id], spec=spec)
            by_site.setdefault(task.site, []).append(pb.CoordinatorMessage(assign=message))
        for site in sorted(by_site):
            graph.enqueue(session, site, by_site[site])

    @staticmethod
    def _fail_unplaceable(session: Session, reasons: dict[str, str]) -> None:
        ids = sorted(reasons)
        rows = session.execute(
            text("UPDATE tasks SET state = 'FAILED', message = v.why, updated_at = now()"
                 " FROM (SELECT unnest(CAST(:ids AS text[])) AS id, unnest(CAST(:why AS text[])) AS why) v"
                 " WHERE tasks.id = v.id AND tasks.state = 'READY' RETURNING tasks.id, tasks.workflow_id"),
            {"ids": ids, "why": [reasons[i] for i in ids]},
        ).all()  # fmt: skip
        graph.record_events(session, ((r.id, r.workflow_id, "", S.READY, S.FAILED, None, reasons[r.id]) for r in rows))
        graph.block_descendants(session, [r.id for r in rows])
        graph.close_workflows(session, {r.workflow_id for r in rows})


def _usable(seconds: float) -> bool:
    return math.isfinite(seconds) and seconds >= 0


def _references(row: Any) -> list[str]:
    """The "WORKFLOW/TASK/OUTPUT" keys of a task's inputs that are other tasks' outputs."""
    return [f"{row.workflow_id}/{source}" for source in (row.inputs or {}).values() if "://" not in source]


def _parent_outputs(session: Session, rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """"WORKFLOW/TASK/OUTPUT" -> the recorded location of that output, for every reference in ``rows``."""
    parents = sorted({"/".join(ref.split("/", 2)[:2]) for row in rows for ref in _references(row)})
    if not parents:
        return {}
    found = {}
    for task_id, outputs in session.execute(text("SELECT id, output_locations FROM tasks WHERE id = ANY(:ids)"), {"ids": parents}):
        for name, where in (outputs or {}).items():
            found[f"{task_id}/{name}"] = where
    return found
