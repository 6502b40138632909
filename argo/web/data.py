"""What the dashboard shows, read from the coordinator's own tables (never a copy of them).

Every function takes ``projects``: the projects whose workflows the caller may see (None: all, the
owner). Callers check a single workflow's project before asking for it (``balsam.argo.web.access``);
the listings filter by ``projects`` themselves, so nothing of another project reaches a page.

Large workflows stay cheap to show: the task table is one page of rows (filtered, sorted and counted
in the database), a DAG of more than ``DAG_DETAIL_LIMIT`` tasks is drawn as groups of tasks (same app,
same level), and only the plots read every attempt of a workflow (after the page has painted).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Numeric, cast, func, select, text

from balsam.argo.coordinator import Coordinator
from balsam.argo.db.models import Task, TaskEvent, TaskParent, Workflow
from balsam.errors import NotFound
from balsam.states import JobState
from balsam.tails import output_tails
from balsam.web.pages import FINAL, STATES, check_table_query

DAG_DETAIL_LIMIT = 500  # tasks drawn one by one; above this, groups
DAG_MAX_GROUPS = 400  # groups by (level, app); above this, by app alone
MAX_PER_PAGE = 500
GANTT_LIMIT = 2000  # attempts drawn in a Gantt chart (the earliest started)
TAIL_BYTES = 4096
THROUGHPUT_WINDOW_S = 300  # "current throughput": tasks finished over the last five minutes
# A task's id as a person reads it: the workflow's tasks by name, a trailing number compared as a
# number (t2 before t10), then the name itself (a tie-break: every id once, in one order).
NATURAL_ORDER = [func.regexp_replace(Task.name, "[0-9]+$", ""), cast(func.nullif(func.substring(Task.name, "([0-9]+)$"), ""), Numeric),
                 Task.name]  # fmt: skip
# Sortable columns of the task table, by the name the page uses.
SORTS = {"id": "id", "name": "name", "app": "app", "state": "state", "site": "site", "attempt": "attempt",
         "return_code": "return_code", "created": "created_at", "updated": "updated_at"}  # fmt: skip


def iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else None


def _age_s(when: datetime | None) -> float | None:
    return None if when is None else max(0.0, (datetime.now(UTC) - when).total_seconds())


def _visible(projects: Sequence[str] | None, project: str) -> bool:
    return projects is None or project in projects


class DashboardData:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.store = coordinator.workflows
        self.db = coordinator.db
        self._dag_cache: dict[int, tuple[int, dict[str, Any]]] = {}  # workflow -> (task count, its layout)
        self._lock = threading.Lock()

    # -- the overview ------------------------------------------------------------------------

    def sites(self) -> list[dict[str, Any]]:
        found = []
        for site, assigned in self.coordinator.sites.sites():
            beat = site.heartbeat or {}
            found.append({
                "name": site.name, "status": site.status, "nodes": site.nodes, "apps": list(site.apps or []),
                "backlog": int(beat.get("backlog", 0)), "running": int(beat.get("running", 0)),
                "queue_wait_s": float(beat.get("queue_wait_s", 0.0)), "assigned": assigned, "max_tasks": site.max_tasks,
                "last_seen": iso(site.last_seen_at), "last_seen_age_s": _age_s(site.last_seen_at),
                "channel_error": site.channel_error or "", "scheduler": site.scheduler,
            })  # fmt: skip
        return found

    def workflows(self, projects: Sequence[str] | None, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.store.workflows(limit, projects)
        running = [w.id for w, _ in rows if w.status == "running"]
        rates = self._throughput(running)
        return [self._workflow_dict(w, counts, rates.get(w.id, 0)) for w, counts in rows]

    def workflow(self, workflow_id: int) -> dict[str, Any]:
        workflow, counts = self.store.workflow(workflow_id)
        rate = self._throughput([workflow_id]).get(workflow_id, 0) if workflow.status == "running" else 0
        return self._workflow_dict(workflow, counts, rate)

    def _throughput(self, workflow_ids: list[int]) -> dict[int, int]:
        """Tasks of each running workflow that finished in the last ``THROUGHPUT_WINDOW_S`` seconds."""
        if not workflow_ids:
            return {}
        with self.db.session() as session:
            return dict(session.execute(text(
                "SELECT workflow_id, count(*) FROM task_events WHERE workflow_id = ANY(:ids) AND to_state = 'JOB_FINISHED'"
                " AND at > now() - make_interval(secs => :w) GROUP BY workflow_id"), {"ids": workflow_ids, "w": THROUGHPUT_WINDOW_S}).all())  # fmt: skip

    @staticmethod
    def _workflow_dict(w: Workflow, counts: list[tuple[str, str, int]], finished_recently: int) -> dict[str, Any]:
        by_state: Counter[str] = Counter()
        by_site: dict[str, Counter[str]] = defaultdict(Counter)
        for site, state, n in counts:
            by_state[state] += n
            by_site[site or "(unplaced)"][state] += n
        return {
            "id": w.id, "name": w.name, "status": w.status, "project": w.project, "owner": w.submitted_by or "",
            "tasks": sum(by_state.values()), "counts": {s: by_state[s] for s in STATES if by_state[s]},
            "by_site": {site: dict(c) for site, c in sorted(by_site.items())},
            "created_at": iso(w.created_at), "ended_at": iso(w.ended_at), "age_s": _age_s(w.created_at),
            "finished_per_min": round(finished_recently * 60 / THROUGHPUT_WINDOW_S, 2),
        }  # fmt: skip

    # -- the task table ----------------------------------------------------------------------

    def tasks_page(self, workflow_id: int, state: str = "", site: str = "", app: str = "", search: str = "", sort: str = "id",
                   descending: bool = False, page: int = 1, per_page: int = 50) -> dict[str, Any]:  # fmt: skip
        check_table_query(sort, SORTS, state, page, per_page, MAX_PER_PAGE)
        query = select(Task).where(Task.workflow_id == workflow_id)
        if state:
            query = query.where(Task.state == state)
        if site:
            query = query.where(Task.site.is_(None) if site == "(unplaced)" else Task.site == site)
        if app:
            query = query.where(Task.app == app)
        if search:
            query = query.where(Task.name.contains(search, autoescape=True))
        columns = NATURAL_ORDER if sort == "id" else [getattr(Task, SORTS[sort])]
        order = [c.desc().nulls_last() if descending else c.asc().nulls_first() for c in columns]
        if sort != "id":
            order.append(Task.id)
        with self.db.session() as session:
            if session.get(Workflow, workflow_id) is None:
                raise NotFound(f"no workflow {workflow_id}")
            total = session.scalar(select(text("count(*)")).select_from(query.subquery()))
            tasks = session.scalars(query.order_by(*order).limit(per_page).offset((page - 1) * per_page)).all()
            attempts = self.store.attempts_of(session, [t.id for t in tasks])
            apps = session.scalars(select(Task.app).where(Task.workflow_id == workflow_id).distinct().order_by(Task.app)).all()
            sites = session.scalars(select(Task.site).where(Task.workflow_id == workflow_id, Task.site.is_not(None)).distinct().order_by(Task.site)).all()
        rows = []
        for t in tasks:
            current = next((a for a in attempts.get(t.id, []) if a.number == t.attempt), None)
            rows.append({
                "id": t.id, "name": t.name, "app": t.app, "state": t.state, "site": t.site or "", "attempt": t.attempt,
                "return_code": t.return_code, "waiting": t.waiting or "", "message": (t.message or "")[:300],
                "created_at": iso(t.created_at), "updated_at": iso(t.updated_at),
                "started_at": iso(current.started_at) if current else None, "ended_at": iso(current.ended_at) if current else None,
            })  # fmt: skip
        pages = max(1, -(-total // per_page))
        return {"workflow_id": workflow_id, "total": total, "page": page, "pages": pages, "per_page": per_page, "tasks": rows,
                "apps": list(apps), "sites": list(sites), "filters": {"state": state, "site": site, "app": app, "search": search},
                "sort": sort, "descending": descending}  # fmt: skip

    # -- the DAG -----------------------------------------------------------------------------

    def dag(self, workflow_id: int) -> dict[str, Any]:
        """The workflow's graph, laid out by level (a task's level: the longest path from a root to
        it), coloured by state. Up to ``DAG_DETAIL_LIMIT`` tasks, every task is a node; above, a node
        is a group (level and app, or app alone when there would be too many) with its counts by state."""
        with self.db.session() as session:
            states = session.execute(select(Task.id, Task.app, Task.state).where(Task.workflow_id == workflow_id)).all()
            if not states and session.get(Workflow, workflow_id) is None:
                raise NotFound(f"no workflow {workflow_id}")
            with self._lock:
                cached = self._dag_cache.get(workflow_id)
            if cached is None or cached[0] != len(states):
                edges = session.execute(select(TaskParent.child_id, TaskParent.parent_id).join(Task, Task.id == TaskParent.child_id)
                                        .where(Task.workflow_id == workflow_id)).all()  # fmt: skip
                cached = (len(states), _layout(states, edges))
                with self._lock:
                    self._dag_cache[workflow_id] = cached
        layout = cached[1]
        if len(states) <= DAG_DETAIL_LIMIT:
            nodes = [{"id": tid, "app": app, "state": state, "level": layout["level"][tid]} for tid, app, state in states]
            return {"grouped": False, "nodes": nodes, "edges": layout["edges"], "levels": layout["levels"]}
        group_of = layout["group_of"]
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for tid, _app, state in states:
            counts[group_of[tid]][state] += 1
        groups = [{**g, "counts": dict(counts[g["id"]]), "size": sum(counts[g["id"]].values())} for g in layout["groups"]]
        return {"grouped": True, "by": layout["grouped_by"], "nodes": groups, "edges": layout["group_edges"], "levels": layout["levels"]}

    # -- one task ----------------------------------------------------------------------------

    def task(self, task_id: str) -> dict[str, Any]:
        task, parents, attempts = self.store.task(task_id)
        with self.db.session() as session:
            events = session.scalars(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id).limit(2000)).all()
            children = session.scalars(select(TaskParent.child_id).where(TaskParent.parent_id == task_id).order_by(TaskParent.child_id)).all()
            sources = {}
            wanted = {src.split("/", 1)[0] for src in (task.inputs or {}).values() if "://" not in src and "/" in src}
            if wanted:
                ids = [f"{task.workflow_id}/{name}" for name in wanted]
                sources = dict(session.execute(select(Task.id, Task.output_locations).where(Task.id.in_(ids))).all())
        inputs = []
        for local, source in sorted((task.inputs or {}).items()):
            where = source
            if "://" not in source and "/" in source:
                parent, _, output = source.partition("/")
                found = (sources.get(f"{task.workflow_id}/{parent}") or {}).get(output)
                where = found["location"] if found else "not produced yet"
            inputs.append({"file": local, "source": source, "location": where})
        located = task.output_locations or {}
        outputs = [{"file": name, "location": (located.get(name) or {}).get("location", ""), "size": (located.get(name) or {}).get("size"),
                    "site": (located.get(name) or {}).get("site", "")} for name in task.outputs or []]  # fmt: skip
        return {
            "id": task.id, "workflow_id": task.workflow_id, "name": task.name, "app": task.app, "state": task.state,
            "site": task.site or "", "attempt": task.attempt, "return_code": task.return_code, "message": task.message,
            "waiting": task.waiting or "", "params": task.params, "resources": task.resources, "tags": task.tags, "pin": task.pin or "",
            "parents": parents, "children": list(children), "sites_tried": list(task.sites_tried or []), "blocked": task.blocked,
            "final": task.state in FINAL, "inputs": inputs, "outputs": outputs,
            "attempts": [{"number": a.number, "site": a.site, "state": a.state, "ready_at": iso(a.ready_at), "placed_at": iso(a.placed_at),
                          "started_at": iso(a.started_at), "ended_at": iso(a.ended_at)} for a in attempts],
            "events": [event_dict(e) for e in events], "output_tail": output_tail(located),
        }  # fmt: skip

    # -- plots -------------------------------------------------------------------------------

    def plots(self, workflow_id: int) -> dict[str, Any]:
        """Utilisation (busy nodes over time per site), throughput (tasks finished per minute), the
        Gantt chart (attempts per site) and each app's runtimes beside the sites' models of it,
        all from the attempts of this workflow's tasks (``balsam.argo.timeline``)."""
        with self.db.session() as session:
            tasks = session.execute(select(Task.id, Task.app, Task.params, Task.resources).where(Task.workflow_id == workflow_id)).all()
            attempts = self.store.attempts_where(session, TaskEvent.workflow_id == workflow_id)
            models = {name: (beat or {}).get("models", {}) for name, beat in session.execute(text("SELECT name, heartbeat FROM sites"))}
        info = {t.id: t for t in tasks}
        runs = []  # (task, attempt, site, started, ended, state)
        for tid, tries in attempts.items():
            for a in tries:
                if a.started_at is not None:
                    runs.append((tid, a.number, a.site, a.started_at, a.ended_at, a.state))
        runs.sort(key=lambda r: r[3])
        now = datetime.now(UTC)
        # utilisation: a step function per site (+nodes at each start, -nodes at each end)
        steps: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for tid, _n, site, started, ended, _s in runs:
            nodes = int((info[tid].resources or {}).get("nodes", 1)) if tid in info else 1
            steps[site].append((started.timestamp(), nodes))
            steps[site].append(((ended or now).timestamp(), -nodes))
        utilisation = {}
        for site, changes in steps.items():
            changes.sort()
            busy, series = 0, []
            for at, delta in changes:
                busy += delta
                if series and series[-1][0] == at:
                    series[-1] = (at, busy)
                else:
                    series.append((at, busy))
            utilisation[site] = _thin(series, 400)
        # throughput: tasks finished per minute
        per_minute: Counter[int] = Counter()
        for _tid, _n, _site, _started, ended, state in runs:
            if ended is not None and state == JobState.JOB_FINISHED:
                per_minute[int(ended.timestamp() // 60) * 60] += 1
        throughput = []
        if per_minute:
            for minute in range(min(per_minute), max(per_minute) + 60, 60):
                throughput.append((minute, per_minute.get(minute, 0)))
        gantt = [{"task": tid, "attempt": n, "site": site, "start": started.timestamp(), "end": (ended or now).timestamp(),
                  "state": state, "running": ended is None} for tid, n, site, started, ended, state in runs[:GANTT_LIMIT]]  # fmt: skip
        # runtime model: each app's finished runs (feature value, seconds) and the sites' fitted models
        apps: dict[str, dict[str, Any]] = {}
        for tid, _n, site, started, ended, state in runs:
            if ended is None or state != JobState.JOB_FINISHED or tid not in info:
                continue
            task = info[tid]
            entry = apps.setdefault(task.app, {"runs": [], "models": {}})
            entry["runs"].append({"task": tid, "site": site, "seconds": (ended - started).total_seconds(), "params": task.params,
                                  "nodes": int((task.resources or {}).get("nodes", 1))})  # fmt: skip
        for app in {t.app for t in tasks}:
            entry = apps.setdefault(app, {"runs": [], "models": {}})
            for site, fitted in models.items():
                if app in fitted:
                    serial, parallel, feature = fitted[app]
                    entry["models"][site] = {"serial_s": serial, "parallel_s": parallel, "feature": feature}
        for entry in apps.values():
            features = {m["feature"] for m in entry["models"].values() if m["feature"]}
            feature = sorted(features)[0] if features else ""
            entry["feature"] = feature
            for run in entry["runs"]:
                run["x"] = _number(run["params"].get(feature)) if feature else 1.0
                del run["params"]
        return {"utilisation": utilisation, "throughput": throughput, "gantt": gantt, "gantt_total": len(runs),
                "gantt_limit": GANTT_LIMIT, "apps": apps, "now": now.timestamp()}  # fmt: skip


def event_dict(e: Any) -> dict[str, Any]:
    return {"id": e.id, "task_id": e.task_id, "workflow_id": e.workflow_id, "site": e.site, "from": e.from_state or "", "to": e.to_state or "",
            "at": iso(e.at), "message": e.message, "attempt": e.attempt or 0, "move": e.move or "",
            "workflow_status": e.workflow_status or ""}  # fmt: skip


def output_tail(located: dict[str, Any]) -> dict[str, Any]:
    """The tail of the job's stdout and stderr (``job.out``, ``job.err`` in its folder at its site),
    when the coordinator can read that folder. It knows the folder only from where the site says
    the task's outputs are (a local path); a task without outputs, or at a site on another machine
    (or behind Globus), has none to show, and the page says so."""
    from balsam.transfer.base import Location

    folders = set()
    for entry in located.values():
        try:
            where = Location.parse(str((entry or {}).get("location", "")))
        except Exception:  # noqa: BLE001 (whatever a site wrote: not a place we read)
            continue
        if where.scheme == "file":
            folders.add(where.path.rsplit("/", 1)[0] or "/")
    if not folders:
        return {"available": False, "why": "the coordinator knows a task's folder only from its outputs' locations, and this task has reported none"}
    folder = sorted(folders)[0]
    found = output_tails(folder, TAIL_BYTES)
    if not found["available"]:
        found["why"] = f"{folder} (at the task's site) cannot be read from the coordinator's host"
    return found


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _thin(series: list[tuple[float, int]], most: int) -> list[tuple[float, int]]:
    """At most about ``most`` points of a step series, keeping each bucket's highest value."""
    if len(series) <= most:
        return series
    start, end = series[0][0], series[-1][0]
    width = (end - start) / most or 1.0
    buckets: dict[int, tuple[float, int]] = {}
    for at, value in series:
        key = int((at - start) / width)
        if key not in buckets or value > buckets[key][1]:
            buckets[key] = (start + key * width, value)
    return [buckets[k] for k in sorted(buckets)] + [series[-1]]


def _layout(states: Sequence[Any], edges: Sequence[Any]) -> dict[str, Any]:
    """Levels of a DAG (longest path from a root), its edges, and its groups when it is large."""
    parents: dict[str, list[str]] = defaultdict(list)
    children: dict[str, list[str]] = defaultdict(list)
    known = {row[0] for row in states}
    for child, parent in edges:
        if child in known and parent in known:
            parents[child].append(parent)
            children[parent].append(child)
    level: dict[str, int] = {}
    pending = {tid: len(parents[tid]) for tid in known}
    ready = [tid for tid, n in pending.items() if n == 0]
    while ready:
        tid = ready.pop()
        level[tid] = max((level[p] + 1 for p in parents[tid]), default=0)
        for child in children[tid]:
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    for tid in known - level.keys():  # not reachable from a root (cannot happen in a valid graph)
        level[tid] = 0
    app_of = {row[0]: row[1] for row in states}
    layout: dict[str, Any] = {"level": level, "levels": max(level.values(), default=-1) + 1}
    if len(known) <= DAG_DETAIL_LIMIT:
        layout["edges"] = [[p, c] for c, ps in parents.items() for p in ps]
        return layout
    by_level_app = {(level[t], app_of[t]) for t in known}
    if len(by_level_app) <= DAG_MAX_GROUPS:
        layout["grouped_by"] = "level and app"
        group_of = {t: f"L{level[t]}:{app_of[t]}" for t in known}
        groups = [{"id": f"L{lv}:{app}", "app": app, "level": lv} for lv, app in sorted(by_level_app)]
    else:
        layout["grouped_by"] = "app"
        group_of = {t: app_of[t] for t in known}
        first = {}
        for t in known:
            first[app_of[t]] = min(first.get(app_of[t], level[t]), level[t])
        order = sorted(first, key=lambda a: (first[a], a))
        groups = [{"id": app, "app": app, "level": i} for i, app in enumerate(order)]
        layout["levels"] = len(order)
    links: Counter[tuple[str, str]] = Counter()
    for child, ps in parents.items():
        for p in ps:
            if group_of[p] != group_of[child]:
                links[(group_of[p], group_of[child])] += 1
    layout.update(group_of=group_of, groups=groups, group_edges=[[a, b, n] for (a, b), n in sorted(links.items())])
    return layout
