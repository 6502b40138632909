"""What users ask of the coordinator: workflows and their tasks, queries, kills and cancels.

Plain data in, rows out; the gRPC servicers (``balsam.argo.servicers``) are thin shells over this.
Tasks are written through ``balsam.argo.db.taskstore`` only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from balsam.argo import graph, timeline
from balsam.argo import spec as specs
from balsam.argo.database import Database
from balsam.argo.db import taskstore
from balsam.argo.db.models import FINAL, Task, TaskEvent, TaskParent, Workflow
from balsam.errors import BalsamError, NotFound, SpecError
from balsam.states import FINAL_STATES, TaskMove
from balsam.taskspec import NAME_PATTERN, TaskSpec


# The moves that time attempts (not waiting reasons, not refused reports).
_TIMED = tuple(m.value for m in TaskMove)


class WorkflowStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def session(self):
        return self.db.session()

    # -- workflows -------------------------------------------------------------------------

    def apps_by_site(self, session: Session) -> dict[str, list[str]]:
        return {row.name: list(row.apps) for row in session.execute(text("SELECT name, apps FROM sites"))}

    def submit(self, name: str, tasks: Sequence[TaskSpec], project: str = "", submitted_by: str = "") -> tuple[int, int]:
        """Validate the whole graph against the registered sites, then store it; (workflow id, task count)."""
        if not NAME_PATTERN.fullmatch(name or ""):
            raise SpecError([f"workflow name {name!r} must be 1-200 letters, digits, '_', '.' or '-'"])
        if not tasks:
            raise SpecError([f"workflow {name!r} has no tasks"])
        with self.session() as session:
            specs.validate(tasks, self.apps_by_site(session))
            workflow = Workflow(name=name, status="running", project=project, submitted_by=submitted_by)
            session.add(workflow)
            session.flush()
            graph.lock_workflows(session, [workflow.id])  # nobody knows it yet, but every writer of tasks holds its workflow
            taskstore.insert(session, workflow.id, tasks, existing={})
        self.db.notify(place=True)
        return workflow.id, len(tasks)

    def add_tasks(self, workflow_id: int, tasks: Sequence[TaskSpec]) -> int:
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
            taskstore.insert(session, workflow_id, tasks, existing)
        self.db.notify(place=True)
        return len(tasks)

    @staticmethod
    def _running_workflow(session: Session, workflow_id: int, refusal: str) -> Workflow:
        """The workflow, locked; an error unless it is still running."""
        graph.lock_workflows(session, [workflow_id])
        workflow = session.get(Workflow, workflow_id, with_for_update=True)
        if workflow is None:
            raise NotFound(f"no workflow {workflow_id}")
        if workflow.status != "running":
            raise BalsamError(f"workflow {workflow_id} has ended ({workflow.status}); {refusal}")
        return workflow

    def workflow(self, workflow_id: int) -> tuple[Workflow, list[tuple[str, str, int]]]:
        """The workflow and its task counts as (site, state, count)."""
        with self.session() as session:
            workflow = session.get(Workflow, workflow_id)
            if workflow is None:
                raise NotFound(f"no workflow {workflow_id}")
            return workflow, self._counts(session, [workflow])[workflow_id]

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
            counts = self._counts(session, found)
            return [(w, counts[w.id]) for w in found]

    @staticmethod
    def _counts(session: Session, workflows: Sequence[Workflow]) -> dict[int, list[tuple[str, str, int]]]:
        """Each workflow's tasks by (site, state): kept in the row of an ended one, else counted."""
        counts: dict[int, list[tuple[str, str, int]]] = {}
        live = []
        for workflow in workflows:
            if workflow.task_counts is not None:
                counts[workflow.id] = [(site, state, n) for site, state, n in workflow.task_counts]
            else:
                counts[workflow.id] = []
                live.append(workflow.id)
        if live:
            for row in session.execute(text(graph.TASK_COUNTS), {"ids": live}):
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

    def task(self, task_id: str) -> tuple[Task, list[str], list[timeline.AttemptTimes]]:
        """The task, its parents and its attempts with their times."""
        with self.session() as session:
            task = session.get(Task, task_id)
            if task is None:
                raise NotFound(f"no task {task_id!r} (task ids look like WORKFLOW/NAME, e.g. 3/produce)")
            parents = session.scalars(select(TaskParent.parent_id).where(TaskParent.child_id == task_id)).all()
            return task, list(parents), self.attempts_where(session, TaskEvent.task_id == task_id).get(task_id, [])

    def tasks(self, workflow_id: int) -> list[tuple[Task, list[str], list[timeline.AttemptTimes]]]:
        """Every task of the workflow, with its parents and its attempts with their times."""
        with self.session() as session:
            if session.get(Workflow, workflow_id) is None:
                raise NotFound(f"no workflow {workflow_id}")
            tasks = session.scalars(select(Task).where(Task.workflow_id == workflow_id).order_by(Task.created_at, Task.id)).all()
            parents: dict[str, list[str]] = {}
            for child, parent in session.execute(
                select(TaskParent.child_id, TaskParent.parent_id).join(Task, Task.id == TaskParent.child_id).where(Task.workflow_id == workflow_id)
            ):
                parents.setdefault(child, []).append(parent)
            attempts = self.attempts_where(session, TaskEvent.workflow_id == workflow_id)
            return [(task, sorted(parents.get(task.id, [])), attempts.get(task.id, [])) for task in tasks]

    @classmethod
    def attempts_of(cls, session: Session, task_ids: Sequence[str]) -> dict[str, list[timeline.AttemptTimes]]:
        """The attempts of these tasks (one index probe per task: ``ix_task_events_task``)."""
        return cls.attempts_where(session, TaskEvent.task_id.in_(list(task_ids))) if task_ids else {}

    @staticmethod
    def attempts_where(session: Session, which) -> dict[str, list[timeline.AttemptTimes]]:
        """Task id -> its attempts, from the events that time them (``balsam.argo.timeline``)."""
        rows = session.execute(
            select(TaskEvent.task_id, TaskEvent.attempt, TaskEvent.move, TaskEvent.site, TaskEvent.from_state, TaskEvent.to_state,
                   TaskEvent.at).where(which, TaskEvent.move.in_(_TIMED)).order_by(TaskEvent.task_id, TaskEvent.id)
        ).all()  # fmt: skip
        return {task_id: timeline.attempts(events) for task_id, events in itertools.groupby(rows, key=lambda r: r.task_id)}

    def kill_task(self, task_id: str, reason: str = "killed by user") -> Task:
        with self.session() as session:
            workflow_id = taskstore.workflow_of(task_id)  # None: an id of no task
            graph.lock_workflows(session, [] if workflow_id is None else [workflow_id])
            task = session.get(Task, task_id)
            if task is None:
                raise NotFound(f"no task {task_id!r} (task ids look like WORKFLOW/NAME, e.g. 3/produce)")
            if task.state in FINAL_STATES:
                raise BalsamError(f"task {task_id} has already ended ({task.state})")
            self.kill(session, [task.id], reason, TaskMove.KILLED)
            graph.close_workflows(session, [task.workflow_id])
        self.db.notify()
        return self.task(task_id)[0]

    def cancel(self, workflow_id: int) -> int:
        """Kill every task of the workflow that has not ended; it ends as cancelled."""
        with self.session() as session:
            workflow = self._running_workflow(session, workflow_id, "it cannot be cancelled")
            ids = session.scalars(select(Task.id).where(Task.workflow_id == workflow_id, Task.state.notin_(FINAL)).order_by(Task.id)).all()
            killed = self.kill(session, ids, "workflow cancelled", TaskMove.CANCELLED)
            workflow.status = "cancelled"
            workflow.ended_at = func.now()
            graph.mark_ended(session, workflow_id, "cancelled", f"workflow {workflow.name!r} cancelled")
            graph.keep_task_counts(session, [workflow_id])
        self.db.notify()
        return len(killed)

    @staticmethod
    def kill(session: Session, task_ids: Sequence[str], reason: str, move: TaskMove) -> list[taskstore.Moved]:
        """Kill the tasks and tell their sites to kill their copies (the caller holds their workflows' locks)."""
        killed = taskstore.kill(session, task_ids, reason, move)
        graph.kill_orders(session, ((t.site, t.id, t.attempt) for t in killed), reason)
        return killed

    # -- events ----------------------------------------------------------------------------

    def events_after(self, after_id: int, workflow_id: int = 0, site: str = "", states: Sequence[str] = (), limit: int = 1000,
                     projects: Sequence[str] | None = None) -> list[TaskEvent]:  # fmt: skip
        query = select(TaskEvent).where(TaskEvent.id > after_id).order_by(TaskEvent.id).limit(limit)
        if projects is not None:  # a site's own events (workflow 0: its health) are every user's to see
            query = query.where(TaskEvent.workflow_id.in_(select(Workflow.id).where(Workflow.project.in_(list(projects))))
                                | (TaskEvent.workflow_id == 0))  # fmt: skip
        if workflow_id:
            query = query.where(TaskEvent.workflow_id == workflow_id)
        if site:
            query = query.where((TaskEvent.site == site) | (TaskEvent.task_id == ""))
        if states:
            query = query.where(TaskEvent.to_state.in_(list(states)) | (TaskEvent.task_id == ""))
        with self.session() as session:
            return list(session.scalars(query))
