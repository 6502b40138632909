"""The coordinator's operations on its database: workflows, tasks, queries and kills.

Plain data in, rows out; the gRPC servicers (``balsam.argo.servicers``) are thin shells over this.
What sites send and what is sent to them (registration, sync, placement, health) is in
``balsam.argo.sites``, which extends this class.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from balsam.argo import graph
from balsam.argo import spec as specs
from balsam.argo.db.models import FINAL, Task, TaskEvent, TaskParent, Workflow
from balsam.argo.wire import resources_dict
from balsam.errors import BalsamError
from balsam.pgcopy import copy_rows, json_field
from balsam.states import FINAL_STATES, JobState

S = JobState
_TASK_COLUMNS = (
    "id", "workflow_id", "name", "app", "params", "resources", "inputs", "outputs", "tags", "pin", "state",
    "pending_parents", "blocked", "attempt", "sites_tried", "message",
)  # fmt: skip


class NotFound(BalsamError):
    """The request names a workflow, task or site the coordinator does not have."""


class BadRequest(BalsamError):
    """The request itself is wrong (a bad name, a negative count), whatever the coordinator holds."""


class Coordinator:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # Wakes watchers, site streams and the placement loop after a change; ``version`` counts changes.
        self.changed = threading.Condition()
        self.version = 0
        self.placement_wanted = threading.Event()
        self.wakers: set[threading.Event] = set()  # one per site stream, set on every change

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def notify(self, place: bool = False) -> None:
        with self.changed:
            self.version += 1
            self.changed.notify_all()
        for wake in list(self.wakers):
            wake.set()
        if place:
            self.placement_wanted.set()

    def wait_for_change(self, seen: int, timeout: float) -> int:
        with self.changed:
            if self.version == seen:
                self.changed.wait(timeout)
            return self.version

    # -- workflows -------------------------------------------------------------------------

    def apps_by_site(self, session: Session) -> dict[str, list[str]]:
        return {row.name: list(row.apps) for row in session.execute(text("SELECT name, apps FROM sites"))}

    def submit(self, name: str, tasks: Sequence[specs.TaskSpec], project: str = "") -> tuple[int, int]:
        """Validate the whole graph against the registered sites, then store it; (workflow id, task count)."""
        if not specs.NAME_PATTERN.match(name or ""):
            raise specs.SpecError([f"workflow name {name!r} must be 1-200 letters, digits, '_', '.' or '-'"])
        if not tasks:
            raise specs.SpecError([f"workflow {name!r} has no tasks"])
        with self.session() as session:
            specs.validate(tasks, self.apps_by_site(session))
            workflow = Workflow(name=name, status="running", project=project)
            session.add(workflow)
            session.flush()
            self._insert(session, workflow.id, tasks, existing={})
        self.notify(place=True)
        return workflow.id, len(tasks)

    def add_tasks(self, workflow_id: int, tasks: Sequence[specs.TaskSpec]) -> int:
        """More tasks for a running workflow; their parents may be tasks already in it."""
        if not tasks:
            return 0
        with self.session() as session:
            self._running_workflow(session, workflow_id, "tasks cannot be added")
            rows = session.execute(
                select(Task.name, Task.outputs, Task.state, Task.blocked).where(Task.workflow_id == workflow_id)
            ).all()
            existing = {row.name: row for row in rows}
            specs.validate(tasks, self.apps_by_site(session), {n: r.outputs for n, r in existing.items()})
            self._insert(session, workflow_id, tasks, existing)
        self.notify(place=True)
        return len(tasks)

    @staticmethod
    def _running_workflow(session: Session, workflow_id: int, refusal: str) -> Workflow:
        """The workflow, locked with the graph; an error unless it is still running."""
        graph.lock_graph(session)
        workflow = session.get(Workflow, workflow_id, with_for_update=True)
        if workflow is None:
            raise NotFound(f"no workflow {workflow_id}")
        if workflow.status != "running":
            raise BalsamError(f"workflow {workflow_id} has ended ({workflow.status}); {refusal}")
        return workflow

    def _insert(self, session: Session, workflow_id: int, tasks: Sequence[specs.TaskSpec], existing: dict[str, Any]) -> None:
        prefix = f"{workflow_id}/"
        rows, links, events = [], [], []
        for task in tasks:
            task_id = prefix + task.name
            pending = 0
            blocked = False
            for parent in task.parents:
                links.append((task_id, prefix + parent))
                old = existing.get(parent)
                if old is None or old.state != S.JOB_FINISHED:
                    pending += 1
                if old is not None and (old.blocked or old.state in (S.FAILED, S.USER_KILLED)):
                    blocked = True
            state = S.AWAITING_PARENTS if pending else S.READY
            rows.append((
                task_id, workflow_id, task.name, task.app, json_field(task.params, "{}"),
                json_field(resources_dict(task.resources), "{}"), json_field(task.inputs, "{}"),
                json_field(list(task.outputs), "[]"), json_field(task.tags, "{}"), task.site, state.value, pending,
                "t" if blocked else "f", 0, "[]", "",
            ))  # fmt: skip
            events.append((task_id, workflow_id, "", S.CREATED, state, None, f"waiting for {pending} parent(s)" if pending else "created"))
        copy_rows(session, "tasks", _TASK_COLUMNS, rows)
        if links:
            copy_rows(session, "task_parents", ("child_id", "parent_id"), links)
        graph.record_events(session, events)

    def workflow(self, workflow_id: int) -> tuple[Workflow, list[tuple[str, str, int]]]:
        """The workflow and its task counts as (site, state, count)."""
        with self.session() as session:
            workflow = session.get(Workflow, workflow_id)
            if workflow is None:
                raise NotFound(f"no workflow {workflow_id}")
            return workflow, self._counts(session, [workflow_id])[workflow_id]

    def workflow_project(self, workflow_id: int) -> str:
        """The project a workflow belongs to ('' : none); NotFound for an unknown one."""
        with self.session() as session:
            project = session.scalar(select(Workflow.project).where(Workflow.id == workflow_id))
        if project is None:
            raise NotFound(f"no workflow {workflow_id}")
        return project

    def workflows(self, limit: int = 100, projects: Sequence[str] | None = None) -> list[tuple[Workflow, list[tuple[str, str, int]]]]:
        """The newest workflows (of these projects only, unless None)."""
        query = select(Workflow).order_by(Workflow.id.desc()).limit(limit or 100)
        if projects is not None:
            query = query.where(Workflow.project.in_(list(projects)))
        with self.session() as session:
            found = session.scalars(query).all()
            counts = self._counts(session, [w.id for w in found])
            return [(w, counts[w.id]) for w in found]

    @staticmethod
    def _counts(session: Session, workflow_ids: list[int]) -> dict[int, list[tuple[str, str, int]]]:
        counts: dict[int, list[tuple[str, str, int]]] = {wf: [] for wf in workflow_ids}
        if workflow_ids:
            for row in session.execute(
                text("SELECT workflow_id, coalesce(site, '') AS site, state, count(*) AS n FROM tasks"
                     " WHERE workflow_id = ANY(:ids) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"),
                {"ids": workflow_ids},
            ):  # fmt: skip
                counts[row.workflow_id].append((row.site, row.state, row.n))
        return counts

    def summary(self, workflow_id: int = 0, site: str = "", projects: Sequence[str] | None = None) -> list[tuple[int, str, str, int]]:
        """(workflow, site, state, count) over all tasks, optionally of one workflow or site (and of
        these projects only, unless None)."""
        where, args = [], {}
        if projects is not None:
            where.append("workflow_id IN (SELECT id FROM workflows WHERE project = ANY(:projects))")
            args["projects"] = list(projects)
        if workflow_id:
            where.append("workflow_id = :wf")
            args["wf"] = workflow_id
        if site:
            where.append("site = :site")
            args["site"] = site
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self.session() as session:
            rows = session.execute(
                text(f"SELECT workflow_id, coalesce(site, '') AS site, state, count(*) AS n FROM tasks {clause} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"),
                args,
            ).all()
        return [(row.workflow_id, row.site, row.state, row.n) for row in rows]

    # -- tasks -----------------------------------------------------------------------------

    def task(self, task_id: str) -> tuple[Task, list[str]]:
        with self.session() as session:
            task = session.get(Task, task_id)
            if task is None:
                raise NotFound(f"no task {task_id!r} (task ids look like WORKFLOW/NAME, e.g. 3/produce)")
            parents = session.scalars(select(TaskParent.parent_id).where(TaskParent.child_id == task_id)).all()
            return task, list(parents)

    def tasks(self, workflow_id: int) -> list[tuple[Task, list[str]]]:
        with self.session() as session:
            if session.get(Workflow, workflow_id) is None:
                raise NotFound(f"no workflow {workflow_id}")
            tasks = session.scalars(select(Task).where(Task.workflow_id == workflow_id).order_by(Task.created_at, Task.id)).all()
            parents: dict[str, list[str]] = {}
            for child, parent in session.execute(
                select(TaskParent.child_id, TaskParent.parent_id).join(Task, Task.id == TaskParent.child_id).where(Task.workflow_id == workflow_id)
            ):
                parents.setdefault(child, []).append(parent)
            return [(task, sorted(parents.get(task.id, []))) for task in tasks]

    def kill_task(self, task_id: str, reason: str = "killed by user") -> Task:
        with self.session() as session:
            graph.lock_graph(session)
            task = session.get(Task, task_id)
            if task is None:
                raise NotFound(f"no task {task_id!r} (task ids look like WORKFLOW/NAME, e.g. 3/produce)")
            if task.state in FINAL_STATES:
                raise BalsamError(f"task {task_id} has already ended ({task.state})")
            self._kill(session, [task], reason)
            graph.close_workflows(session, [task.workflow_id])
        self.notify()
        return self.task(task_id)[0]

    def cancel(self, workflow_id: int) -> int:
        """Kill every task of the workflow that has not ended; it ends as cancelled."""
        with self.session() as session:
            workflow = self._running_workflow(session, workflow_id, "it cannot be cancelled")
            tasks = session.scalars(
                select(Task).where(Task.workflow_id == workflow_id, Task.state.notin_(FINAL)).order_by(Task.id)
            ).all()
            self._kill(session, tasks, "workflow cancelled")
            workflow.status = "cancelled"
            workflow.ended_at = func.now()
            graph.mark_ended(session, workflow_id, "cancelled", f"workflow {workflow.name!r} cancelled")
        self.notify()
        return len(tasks)

    def _kill(self, session: Session, tasks: Sequence[Task], reason: str) -> None:
        graph.kill_orders(session, ((t.site, t.id, t.attempt) for t in tasks if t.site), reason)
        graph.record_events(session, ((t.id, t.workflow_id, t.site or "", t.state, S.USER_KILLED, None, reason) for t in tasks))
        ids = [t.id for t in tasks]
        session.execute(
            text("UPDATE tasks SET state = 'USER_KILLED', message = :why, updated_at = now() WHERE id = ANY(:ids)"),
            {"ids": ids, "why": reason},
        )
        graph.block_descendants(session, ids)

    # -- events ----------------------------------------------------------------------------

    def events_after(self, after_id: int, workflow_id: int = 0, site: str = "", states: Sequence[str] = (), limit: int = 1000,
                     projects: Sequence[str] | None = None) -> list[TaskEvent]:  # fmt: skip
        query = select(TaskEvent).where(TaskEvent.id > after_id).order_by(TaskEvent.id).limit(limit)
        if projects is not None:
            query = query.where(TaskEvent.workflow_id.in_(select(Workflow.id).where(Workflow.project.in_(list(projects)))))
        if workflow_id:
            query = query.where(TaskEvent.workflow_id == workflow_id)
        if site:
            query = query.where((TaskEvent.site == site) | (TaskEvent.task_id == ""))
        if states:
            query = query.where(TaskEvent.to_state.in_(list(states)) | (TaskEvent.task_id == ""))
        with self.session() as session:
            return list(session.scalars(query))

    def workflow_status(self, workflow_id: int) -> str:
        with self.session() as session:
            status = session.scalar(select(Workflow.status).where(Workflow.id == workflow_id))
        if status is None:
            raise NotFound(f"no workflow {workflow_id}")
        return status
