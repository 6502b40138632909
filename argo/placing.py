"""The shell around the placement policy: a snapshot of the sites and ready tasks in, assignments out.

One round, in one transaction holding the locks of the ready tasks' workflows: read the sites
and what is placed at each (grouped by shape, for the backlog), then the ready tasks, let
``balsam.argo.placement`` decide, then place the chosen tasks (``taskstore.place``), send each site
its assignments with the inputs resolved to where the parents left them, send ahead the waiting
children that follow them (``balsam.argo.ahead``), and record why the others wait.

After a round that placed nothing, while the sites keep the same ``placement.candidacy`` (nobody
came up or went down, no slot under a cap freed), a task told why it waits would wait again for
the same reason: the next rounds read only the ready tasks not told yet, and only when the caller
says something may have made some ready (a submission, a finish: the change signal), or every
UNSIGNALLED_LOOK_S in case something did so without saying. So a
backlog no site can take (every site down, or all at their caps) costs the coordinator a look
at its sites a round, not a read of a round's worth of tasks; and every task of it, not only the
first round's worth, is told why it waits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from balsam.argo import ahead, graph, placement
from balsam.argo.database import Database
from balsam.argo.db import taskstore
from balsam.argo.db.models import FINAL, Site
from balsam.resources import Resources
from balsam.taskspec import TaskSpec
from balsam.wire.convert import Assignment, assignment_message


# The most tasks one round sends ahead (a chain that can go nowhere else goes ahead whole): the rest go
# as their parents are released at their site.
AHEAD_LIMIT = 10_000

# While no task can be placed, how often a round still looks for tasks not told why they wait without
# being signalled: a task made ready by a writer that forgot the signal waits at most this long to be told.
UNSIGNALLED_LOOK_S = 30.0


class Placer:
    def __init__(self, db: Database, instance: str = "") -> None:
        self.db = db
        self.instance = instance  # the coordinator's id, carried by every assignment
        # The sites' candidacy when the last round read tasks and placed none of them (None: it placed some).
        self._stuck_at: tuple | None = None
        self._looked_at = 0.0  # time.monotonic() of the last read of the ready tasks
        self._read_all = True  # whether that read was short of its limit (False: more may wait untold)

    def place_round(self, limit: int = 50_000, signalled: bool = True) -> int:
        """Place up to ``limit`` ready tasks on the sites that are up; the number placed.
        ``signalled``: something may have made tasks ready since the last round (False: only time passed)."""
        with self.db.session() as session:
            # Most rounds (woken by every finish and acknowledgement) find nothing to place: that is
            # seen without any lock, so they do not queue behind the sites' event batches.
            if not session.scalar(text("SELECT EXISTS (SELECT 1 FROM tasks WHERE site IS NULL AND state = 'READY')")):
                return 0
        with self.db.session() as session:
            views = _views(session, session.scalars(select(Site).order_by(Site.name)).all())
            candidacy = placement.candidacy(views)
            stuck = candidacy == self._stuck_at
            if stuck and self._read_all and not signalled and time.monotonic() - self._looked_at < UNSIGNALLED_LOOK_S:
                return 0
            self._looked_at = time.monotonic()
            # Only a task READY and unplaced is told why it waits, and placing, failing or killing it clears that
            # (taskstore): a reason kept belongs to a task that has waited since.
            untold = " AND waiting = ''" if stuck else ""
            rows = session.execute(
                text("SELECT id, workflow_id, app, pin, resources, inputs, params FROM tasks WHERE site IS NULL AND state = 'READY'"
                     f"{untold} ORDER BY workflow_id, created_at, id LIMIT :n"),
                {"n": limit},
            ).all()  # fmt: skip
            self._read_all = len(rows) < limit
            if not rows:
                return 0
            # The workflows of the tasks read, locked before anything is written: what changed in them
            # meanwhile (a task killed, placed) is seen by the writes, which touch only tasks still READY.
            # A site that changed since its view was read (a slot freed, gone down) is seen by the next round.
            graph.lock_workflows(session, {row.workflow_id for row in rows})
            located = _parent_outputs(session, rows)
            result = placement.place(_ready(rows, located), views)
            if result.assigned:
                # What was read serves the assignments too: a task's spec never changes once stored.
                placed = self._assign(session, result.assigned, {row.id: row for row in rows}, located)
                send_ahead(session, [row.id for row in placed], self.instance)
            taskstore.set_waiting(session, result.waiting)
        self._stuck_at = None if result.assigned else candidacy
        if result.assigned or result.waiting:
            self.db.notify()
        return len(result.assigned)

    def _assign(self, session: Session, assigned: Sequence[tuple[str, str]], read: dict[str, Any],
                located: dict[str, dict[str, Any]]) -> list[Any]:  # fmt: skip
        """Send each placed task to its site, its inputs named by where its parents left them
        (``read``: the tasks' rows as the round read them; ``located``: their parents' outputs); the
        placed rows.

        A task whose parent finished without leaving an output it reads cannot run anywhere: it
        fails here with that reason instead of at a site, over a file that is not there.
        """
        resolved: dict[str, dict[str, str]] = {}
        missing: dict[str, str] = {}
        for task in (read[task_id] for task_id, _ in assigned):
            inputs, why = _resolve(task, located)
            if why:
                missing[task.id] = why
            else:
                resolved[task.id] = inputs
        if missing:
            failed = taskstore.fail_unplaceable(session, missing)
            graph.close_workflows(session, {t.workflow_id for t in failed})
        return taskstore.place(session, [a for a in assigned if a[0] not in missing],
                               then=lambda placed: send_assignments(session, placed, read, resolved, {}, self.instance))


def send_ahead(session: Session, parents_of: Sequence[str], instance: str) -> int:
    """Send the waiting children of ``parents_of`` (tasks just placed, or just released at their site)
    ahead to their parents' site (``balsam.argo.ahead``), and theirs in turn, up to AHEAD_LIMIT; the
    number sent. The caller holds their workflows' locks."""
    # Plain rows, not the ORM's: a caller that locks site rows later (a batch of envelopes) must find none loaded.
    rooms = {row.name: ahead.SiteRoom(row.status == "up", frozenset(row.apps), row.max_tasks > 0)
             for row in session.execute(text("SELECT name, status, apps, max_tasks FROM sites"))}  # fmt: skip
    frontier = list(parents_of)
    sent = 0
    while frontier and sent < AHEAD_LIMIT:
        rows = session.execute(
            text("SELECT id, workflow_id, app, pin, resources, inputs, params FROM tasks"
                 " WHERE id IN (SELECT child_id FROM task_parents WHERE parent_id = ANY(:ids))"
                 " AND state = 'AWAITING_PARENTS' AND site IS NULL AND NOT blocked ORDER BY id LIMIT :n"),
            {"ids": frontier, "n": AHEAD_LIMIT - sent},
        ).all()  # fmt: skip
        if not rows:
            break
        parents: dict[str, list[ahead.Parent]] = {}
        located: dict[str, dict[str, Any]] = {}  # as _parent_outputs gives it, from the same rows
        for child, *fields, outputs, locations in session.execute(
            text("SELECT l.child_id, p.id, p.name, p.site, p.state, p.attempt, p.outputs, p.output_locations FROM task_parents l"
                 " JOIN tasks p ON p.id = l.parent_id WHERE l.child_id = ANY(:ids) ORDER BY l.child_id, p.id"),
            {"ids": [row.id for row in rows]},
        ):  # fmt: skip
            parents.setdefault(child, []).append(ahead.Parent(*fields, frozenset(outputs or ())))
            located.update({f"{fields[0]}/{name}": where for name, where in (locations or {}).items()})
        resolved: dict[str, dict[str, str]] = {}
        candidates = []
        for row in rows:
            inputs, why = _resolve(row, located, skip={p.name for p in parents.get(row.id, ()) if p.state != "JOB_FINISHED"})
            if not why:  # a missing output of a finished parent: its release fails it, with the reason
                resolved[row.id] = inputs
                candidates.append((row.id, row.app, row.pin, row.inputs or {}))
        chosen = ahead.choose(candidates, parents, rooms)
        went = taskstore.place_ahead(session, [(a.task_id, a.site) for a in chosen])
        by_id = {row.id: row for row in rows}
        send_assignments(session, went, by_id, resolved, {a.task_id: a.waits_for for a in chosen}, instance)
        sent += len(went)
        frontier = [row.id for row in went]
    return sent


def send_assignments(session: Session, placed: Sequence[Any], read: dict[str, Any], resolved: dict[str, dict[str, str]],
                     waits: dict[str, Mapping[str, int]], instance: str) -> None:  # fmt: skip
    """The assignments of ``placed`` (rows of ``taskstore.place`` or ``place_ahead``), sent to their
    sites in this transaction, and each one's number recorded."""
    if not placed:
        return
    names = dict(session.execute(
        text("SELECT id, name FROM workflows WHERE id = ANY(:ids)"), {"ids": sorted({p.workflow_id for p in placed})}
    ).all())  # fmt: skip
    by_site: dict[str, list] = {}
    for task in placed:
        row = read[task.id]
        spec = TaskSpec(name=task.name, app=row.app, params=row.params, resources=Resources(**row.resources),
                        inputs=resolved.get(task.id, {}), outputs=tuple(task.outputs), tags=task.tags)  # fmt: skip
        assignment = Assignment(task.id, task.attempt, task.workflow_id, names[task.workflow_id], spec, instance,
                                waits.get(task.id, {}))  # fmt: skip
        by_site.setdefault(task.site, []).append((task.id, assignment_message(assignment)))
    numbers = []
    for site in sorted(by_site):
        graph.send(session, site, [message for _, message in by_site[site]])
        numbers += [(task_id, message.seq) for task_id, message in by_site[site]]
    taskstore.record_assignments(session, numbers)


def _resolve(task: Any, located: dict[str, dict[str, Any]], skip: set[str] = frozenset()) -> tuple[dict[str, str], str]:
    """A task's inputs named by where its parents left them, or why one cannot be: (inputs, "") or ({}, why).
    ``skip``: parents that have not finished (sent ahead): their outputs stay ``TASK/OUTPUT``, for the site."""
    inputs: dict[str, str] = {}
    for local, source in (task.inputs or {}).items():
        if "://" in source:
            inputs[local] = source
            continue
        parent, _, output = source.partition("/")
        if parent in skip:
            inputs[local] = source
            continue
        found = located.get(f"{task.workflow_id}/{parent}/{output}")
        if found is None:
            return {}, f"input {local!r}: task {parent!r} finished without leaving its output {output!r}"
        inputs[local] = found["location"]
    return inputs, ""


def _views(session: Session, sites: Sequence[Site]) -> list[placement.SiteView]:
    """What placement needs of each site: health, apps, nodes, heartbeat estimates, and the tasks
    placed there and not finished, grouped by shape (its backlog, costed by the policy itself)."""
    models = {site.name: (site.heartbeat or {}).get("models", {}) for site in sites}
    # A model that reads a parameter (its feature) costs each task by that parameter's value: group by it too.
    features: dict[str, set[str]] = {}
    for by_app in models.values():
        for app, (_serial, _parallel, feature) in by_app.items():
            if feature:
                features.setdefault(app, set()).add(feature)
    args: dict[str, Any] = {}
    cases = []
    for i, (app, names) in enumerate(sorted(features.items())):
        pairs = []
        for j, name in enumerate(sorted(names)):
            args[f"f{i}_{j}"] = name
            pairs.append(f"CAST(:f{i}_{j} AS text), params -> CAST(:f{i}_{j} AS text)")
        args[f"a{i}"] = app
        cases.append(f"WHEN app = :a{i} THEN jsonb_build_object({', '.join(pairs)})")
    feature = f"CASE {' '.join(cases)} END" if cases else "NULL::jsonb"
    placed: dict[str, list[placement.Queued]] = {}
    counted: dict[str, int] = {}
    for row in session.execute(
        text(f"SELECT site, app, resources, {feature} AS feature, count(*) AS n FROM tasks"
             # A task sent ahead waits for its parents, which are counted: it is not work the site can do yet.
             f" WHERE site IS NOT NULL AND state NOT IN {FINAL} AND state <> 'AWAITING_PARENTS' GROUP BY 1, 2, 3, 4"),
        args,
    ):  # fmt: skip
        res = row.resources or {}
        shape = placement.ReadyTask(id="", app=row.app, nodes=res.get("nodes", 1), node_packing_count=res.get("node_packing_count", 1),
                                    wall_time_min=res.get("wall_time_min"), params=row.feature or {})  # fmt: skip
        placed.setdefault(row.site, []).append(placement.Queued(shape, row.n))
        counted[row.site] = counted.get(row.site, 0) + row.n
    views = []
    for site in sites:
        beat: dict[str, Any] = site.heartbeat or {}
        # The site's own jobs: what it reports beyond the Argo tasks placed there.
        other = max(0, int(beat.get("backlog", 0)) + int(beat.get("running", 0)) - counted.get(site.name, 0))
        views.append(placement.SiteView.loaded(
            placed=placed.get(site.name, ()), other_jobs=other, name=site.name, healthy=site.status == "up", apps=frozenset(site.apps),
            nodes=site.nodes, queue_wait_s=float(beat.get("queue_wait_s", 0.0)), max_tasks=site.max_tasks,
            runtime_models={app: placement.RuntimeModel(*m) for app, m in models[site.name].items()},
        ))  # fmt: skip
    return views


def _ready(rows: Sequence[Any], located: dict[str, dict[str, Any]]) -> list[placement.ReadyTask]:
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
