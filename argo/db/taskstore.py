"""The one writer of the coordinator's tasks: every change of a task's state, attempt or site.

Each function is one kind of move of ``balsam.states.TASK_MOVES`` (created, spawned, released,
placed, sent ahead, withdrawn, replaced, unplaceable, killed, cancelled, reported), runs inside the caller's transaction
(which holds the locks of the workflows it touches, ``balsam.argo.graph``), checks every move
against that table, and writes each task's event in the same transaction: a change with no event is not
possible, nor a move the table does not name (``IllegalTaskMove`` names the task, the move and both
states). No other module writes the ``tasks`` table; a test checks that.

Set-based, as ``balsam.site.db.jobstore`` is: one statement per batch, whatever its size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from balsam.argo import graph
from balsam.argo.db.models import FINAL
from balsam.pgcopy import copy_field, copy_lines, copy_rows, json_field
from balsam.errors import IllegalTaskMove
from balsam.states import JobState, TaskMove, check_task_move, is_legal_task_move
from balsam.taskspec import TaskSpec
from balsam.wire.convert import Report, Spawned

S = JobState
M = TaskMove
_TASK_COLUMNS = (
    "id", "workflow_id", "name", "app", "params", "resources", "inputs", "outputs", "tags", "pin", "state",
    "pending_parents", "blocked", "attempt", "sites_tried", "message",
)  # fmt: skip
# The kinds of event besides the moves: a new waiting reason, a site's report that was not applied.
WAITING, ILLEGAL = "waiting", "illegal"
EVENT_COLUMNS = ("task_id", "workflow_id", "site", "from_state", "to_state", "at", "message", "attempt", "move")


@dataclass(frozen=True)
class Moved:
    """One task that moved: what callers need to act on (kill orders, endings, wakeups)."""

    id: str
    workflow_id: int
    site: str | None
    attempt: int
    from_state: str
    to_state: str
    assigned_seq: int | None = None  # the number of the attempt's assignment to its site


def _check(move: TaskMove, moves: Iterable[tuple[str, str | None, str]]) -> None:
    """Check (task id, from, to) triples against the table; each distinct pair is looked up once."""
    legal: set[tuple[str | None, str]] = set()
    for task_id, old, new in moves:
        if (old, new) not in legal:
            check_task_move(task_id, move, JobState(old) if old else None, JobState(new))
            legal.add((old, new))


def _events(session: Session, move: str, rows: Iterable[tuple[str, int, str, str, str, datetime | None, str, int]]) -> None:
    """Event rows ``(task_id, workflow_id, site, from, to, at, message, attempt)`` of one kind of move
    (a ``TaskMove``, or ``waiting``); ``at`` None: the commit's time."""
    rows = [(*row[:5], row[5].isoformat() if row[5] else "now", row[6], row[7], move) for row in rows]
    if rows:
        copy_rows(session, "task_events", EVENT_COLUMNS, rows)


# -- created, spawned ------------------------------------------------------------------------------


def insert(session: Session, workflow_id: int, tasks: Sequence[TaskSpec], existing: Mapping[str, Any]) -> None:
    """New tasks of a workflow (already validated); ``existing``: the workflow's tasks by name (with
    ``state`` and ``blocked``), which new tasks may name as parents."""
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
            json_field(task.resources.given(), "{}"), json_field(task.inputs, "{}"),
            json_field(list(task.outputs), "[]"), json_field(task.tags, "{}"), task.site, state.value, pending,
            "t" if blocked else "f", 0, "[]", "",
        ))  # fmt: skip
        events.append((task_id, workflow_id, "", S.CREATED, state, None, f"waiting for {pending} parent(s)" if pending else "created", 0))
    _check(M.CREATED, ((e[0], None, e[4]) for e in events))
    copy_rows(session, "tasks", _TASK_COLUMNS, rows)
    if links:
        copy_rows(session, "task_parents", ("child_id", "parent_id"), links)
    _events(session, M.CREATED, events)


def insert_spawned(session: Session, site: str, task: Spawned, parents: Sequence[Any]) -> bool:
    """A task spawned at ``site`` joins the graph, placed there (attempt 1); False if it had joined before.
    ``parents``: its parents' rows (``id``, ``state``)."""
    _check(M.SPAWNED, [(task.task_id, None, S.CREATED)])
    name = task.task_id.partition("/")[2]
    pending = sum(1 for p in parents if p.state != S.JOB_FINISHED)
    inserted = session.execute(
        text(
            "INSERT INTO tasks (id, workflow_id, name, app, params, resources, inputs, outputs, tags, pin, state,"
            " pending_parents, blocked, site, attempt, site_job_id, sites_tried, message)"
            " VALUES (:id, :wf, :name, :app, CAST(:params AS jsonb), CAST(:res AS jsonb), '{}', CAST(:outputs AS jsonb),"
            "  CAST(:tags AS jsonb), NULL, 'CREATED', :pending, false, :site, 1, :job, CAST(:tried AS jsonb), :msg)"
            " ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        {"id": task.task_id, "wf": task.workflow_id, "name": name, "app": task.app, "params": json.dumps(task.params),
         "res": json.dumps(task.resources.given()), "outputs": json.dumps(list(task.outputs)), "tags": json.dumps(task.tags),
         "pending": pending, "site": site, "job": task.job_id, "tried": json.dumps([site]),
         "msg": f"spawned at site {site} (job {task.job_id})"},
    ).scalar()  # fmt: skip
    if inserted is None:
        return False
    if parents:
        copy_rows(session, "task_parents", ("child_id", "parent_id"), [(task.task_id, p.id) for p in parents])
    _events(session, M.SPAWNED, [(task.task_id, task.workflow_id, site, "", S.CREATED, None, f"spawned at site {site}", 1)])
    return True


# -- released --------------------------------------------------------------------------------------


def release_children(session: Session, finished: Sequence[str]) -> list[str]:
    """Count finished parents off their children; unplaced children left with none become READY."""
    if not finished:
        return []
    ready = session.execute(
        text(
            "WITH released AS ("
            "  SELECT child_id, count(*) AS n FROM task_parents WHERE parent_id = ANY(:ids) GROUP BY child_id"
            "), updated AS ("
            "  UPDATE tasks SET pending_parents = tasks.pending_parents - released.n"
            "  FROM released WHERE tasks.id = released.child_id"
            "  RETURNING tasks.id, tasks.workflow_id, tasks.state, tasks.pending_parents, tasks.site, tasks.blocked, tasks.attempt"
            ") SELECT id, workflow_id, state, attempt FROM updated"
            "  WHERE pending_parents = 0 AND state = 'AWAITING_PARENTS' AND site IS NULL AND NOT blocked"
        ),
        {"ids": list(finished)},
    ).all()
    if ready:
        _check(M.RELEASED, ((row.id, row.state, S.READY) for row in ready))
        ids = [row.id for row in ready]
        session.execute(text("UPDATE tasks SET state = 'READY', updated_at = now() WHERE id = ANY(:ids)"), {"ids": ids})
        _events(session, M.RELEASED, ((row.id, row.workflow_id, "", S.AWAITING_PARENTS, S.READY, None, "all parents finished", row.attempt)
                          for row in ready))  # fmt: skip
    return [row.id for row in ready]


def block_descendants(session: Session, ended: Sequence[str]) -> list[Moved]:
    """Tasks downstream of a failed or killed one can never run: mark them blocked (not a move: their
    state stays, and they run again should the parent be redone).

    Those sent ahead to a site (placed there, waiting for their parents) are withdrawn from it, with
    a kill order for each to that site in the same transaction: they wait unplaced, as the others do.
    Returns those withdrawn."""
    if not ended:
        return []
    blocked = session.execute(
        text(
            "WITH RECURSIVE below(id) AS ("
            "  SELECT child_id FROM task_parents WHERE parent_id = ANY(:ids)"
            "  UNION SELECT p.child_id FROM task_parents p JOIN below ON p.parent_id = below.id"
            f") UPDATE tasks SET blocked = true WHERE id IN (SELECT id FROM below) AND NOT blocked AND state NOT IN {FINAL}"
            " RETURNING id, workflow_id, site, attempt, state, assigned_seq"
        ),
        {"ids": list(ended)},
    ).all()
    ahead = [Moved(r.id, r.workflow_id, r.site, r.attempt, r.state, r.state, r.assigned_seq)
             for r in blocked if r.site is not None and r.state == S.AWAITING_PARENTS]  # fmt: skip
    if not ahead:
        return []
    _check(M.WITHDRAWN, ((m.id, m.from_state, m.to_state) for m in ahead))
    session.execute(text("UPDATE tasks SET site = NULL, site_job_id = NULL, updated_at = now() WHERE id = ANY(:ids)"),
                    {"ids": [m.id for m in ahead]})  # fmt: skip
    why = "a task it waits for ended without finishing"
    _events(session, M.WITHDRAWN, ((m.id, m.workflow_id, m.site, m.from_state, m.to_state, None, f"withdrawn from site {m.site}: {why}",
                                    m.attempt) for m in ahead))  # fmt: skip
    graph.kill_orders(session, ((m.site, m.id, m.attempt) for m in ahead), f"withdrawn: {why}")
    return ahead


# -- placed, replaced, unplaceable -------------------------------------------------------------------


def place(session: Session, assigned: Sequence[tuple[str, str]], then: Callable[[list[Any]], None] | None = None) -> list[Any]:
    """Give each ``(task id, site)`` its site and a new attempt; the placed rows (what an assignment
    needs beyond what placement read: name, outputs, tags, site, attempt).

    Only tasks still READY and unplaced are placed (a kill may have come first). ``then`` (the
    assignments sent) runs with the placed rows before their events are written: an event's number,
    taken by the COPY, holds the event feed back until the transaction commits (``balsam.argo.feed``),
    and sending a round's assignments (2,658-17,629 of them) once held it 1.6-2.6 s."""
    placed = _give_sites(session, assigned, S.READY)
    _check(M.PLACED, ((row.id, row.state, S.READY) for row in placed))
    if then is not None:
        then(placed)
    _events(session, M.PLACED, ((row.id, row.workflow_id, row.site, S.READY, S.READY, None, f"placed at site {row.site} (attempt {row.attempt})",
                       row.attempt) for row in placed))  # fmt: skip
    return placed


def place_ahead(session: Session, ahead: Sequence[tuple[str, str]]) -> list[Any]:
    """Send each ``(task id, site)`` ahead to that site (``balsam.argo.ahead``): its site and a new
    attempt while it waits for its parents; the placed rows, as ``place`` returns them.

    Only tasks still waiting, unplaced and not blocked are sent (a kill or a block may have come first)."""
    placed = _give_sites(session, ahead, S.AWAITING_PARENTS)
    _check(M.SENT_AHEAD, ((row.id, row.state, S.AWAITING_PARENTS) for row in placed))
    _events(session, M.SENT_AHEAD, ((row.id, row.workflow_id, row.site, S.AWAITING_PARENTS, S.AWAITING_PARENTS, None,
                                     f"sent ahead to site {row.site}, where its parents are (attempt {row.attempt})", row.attempt)
                                    for row in placed))  # fmt: skip
    return placed


def _give_sites(session: Session, assigned: Sequence[tuple[str, str]], state: JobState) -> list[Any]:
    """Each ``(task id, site)`` its site and a new attempt, if it is still unplaced, unblocked and in ``state``."""
    if not assigned:
        return []
    return session.execute(
        text(
            "UPDATE tasks SET site = v.site, attempt = tasks.attempt + 1, sites_tried = tasks.sites_tried || to_jsonb(v.site),"
            " waiting = '', updated_at = now()"
            " FROM (SELECT unnest(CAST(:ids AS text[])) AS id, unnest(CAST(:sites AS text[])) AS site) v"
            " WHERE tasks.id = v.id AND tasks.site IS NULL AND tasks.state = :state AND NOT tasks.blocked"
            " RETURNING tasks.id, tasks.workflow_id, tasks.name, tasks.outputs, tasks.tags, tasks.site, tasks.attempt, tasks.state"
        ),
        {"ids": [a[0] for a in assigned], "sites": [a[1] for a in assigned], "state": state.value},
    ).all()


def replace(session: Session, site: str, reason: str, unconfirmed_only: bool) -> list[Moved]:
    """Give up unfinished attempts placed at ``site``: the tasks wait to be placed again.

    ``unconfirmed_only``: only those whose assignment the site was never allowed to start (its
    number above the site's ``confirmed``); else every one (the site surely runs none of them)."""
    only = " AND assigned_seq > (SELECT confirmed FROM sites WHERE name = :s)" if unconfirmed_only else ""
    rows = session.execute(
        text(f"SELECT id, workflow_id, state, attempt, pending_parents, assigned_seq FROM tasks WHERE site = :s AND state NOT IN {FINAL}"
             f"{only} ORDER BY id FOR UPDATE"),
        {"s": site},
    ).all()  # fmt: skip
    if not rows:
        return []
    moved = [Moved(r.id, r.workflow_id, site, r.attempt, r.state, S.AWAITING_PARENTS if r.pending_parents else S.READY, r.assigned_seq)
             for r in rows]  # fmt: skip
    _check(M.REPLACED, ((m.id, m.from_state, m.to_state) for m in moved))
    session.execute(
        text(
            "UPDATE tasks SET site = NULL, site_job_id = NULL, message = :why, updated_at = now(),"
            " state = CASE WHEN pending_parents > 0 THEN 'AWAITING_PARENTS' ELSE 'READY' END"
            " WHERE id = ANY(:ids)"
        ),
        {"ids": [m.id for m in moved], "why": reason},
    )
    _events(session, M.REPLACED, ((m.id, m.workflow_id, site, m.from_state, m.to_state, None, reason, m.attempt) for m in moved))
    return moved


def record_assignments(session: Session, numbers: Sequence[tuple[str, int]]) -> None:
    """The outbox number of each ``(task id, seq)``'s assignment: what the site must have confirmed to start it."""
    if numbers:
        session.execute(
            text("UPDATE tasks SET assigned_seq = v.seq FROM (SELECT unnest(CAST(:ids AS text[])) AS id,"
                 " unnest(CAST(:seqs AS bigint[])) AS seq) v WHERE tasks.id = v.id"),
            {"ids": [n[0] for n in numbers], "seqs": [n[1] for n in numbers]},
        )  # fmt: skip


def fail_unplaceable(session: Session, reasons: Mapping[str, str]) -> list[Moved]:
    """Tasks that can run nowhere fail, each with its reason."""
    ids = sorted(reasons)
    if not ids:
        return []
    rows = session.execute(
        text("SELECT id, workflow_id, state, attempt FROM tasks WHERE id = ANY(:ids) AND state = 'READY' ORDER BY id FOR UPDATE"),
        {"ids": ids},
    ).all()
    moved = [Moved(r.id, r.workflow_id, None, r.attempt, r.state, S.FAILED) for r in rows]
    _check(M.UNPLACEABLE, ((m.id, m.from_state, m.to_state) for m in moved))
    ids = [m.id for m in moved]
    session.execute(
        text("UPDATE tasks SET state = 'FAILED', message = v.why, waiting = '', updated_at = now()"
             " FROM (SELECT unnest(CAST(:ids AS text[])) AS id, unnest(CAST(:why AS text[])) AS why) v WHERE tasks.id = v.id"),
        {"ids": ids, "why": [reasons[i] for i in ids]},
    )  # fmt: skip
    _events(session, M.UNPLACEABLE, ((m.id, m.workflow_id, "", S.READY, S.FAILED, None, reasons[m.id], m.attempt) for m in moved))
    block_descendants(session, ids)
    return moved


def set_waiting(session: Session, reasons: Mapping[str, str]) -> int:
    """Record why each task waits (placement found no site); an event only where the reason changed.

    Not a move: the task stays READY. The event (READY -> READY, "waiting: REASON") is how watchers and
    the CLI learn it."""
    if not reasons:
        return 0
    ids = sorted(reasons)
    changed = session.execute(
        text(
            "UPDATE tasks SET waiting = v.why FROM (SELECT unnest(CAST(:ids AS text[])) AS id, unnest(CAST(:why AS text[])) AS why) v"
            " WHERE tasks.id = v.id AND tasks.waiting <> v.why AND tasks.state = 'READY' AND tasks.site IS NULL"
            " RETURNING tasks.id, tasks.workflow_id, tasks.attempt"
        ),
        {"ids": ids, "why": [reasons[i] for i in ids]},
    ).all()
    _events(session, WAITING, ((r.id, r.workflow_id, "", S.READY, S.READY, None, f"waiting: {reasons[r.id]}", r.attempt) for r in changed))
    return len(changed)


# -- killed, cancelled ------------------------------------------------------------------------------


def kill(session: Session, task_ids: Sequence[str], reason: str, move: TaskMove = M.KILLED) -> list[Moved]:
    """Kill tasks that have not ended (``KILLED`` by a user or ``CANCELLED`` with their workflow);
    their descendants are blocked. Returns what was killed, with the sites to send kill orders to."""
    rows = session.execute(
        text("SELECT id, workflow_id, site, attempt, state FROM tasks WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"),
        {"ids": list(task_ids)},
    ).all()
    moved = [Moved(r.id, r.workflow_id, r.site, r.attempt, r.state, S.USER_KILLED) for r in rows]
    _check(move, ((m.id, m.from_state, m.to_state) for m in moved))
    ids = [m.id for m in moved]
    session.execute(
        text("UPDATE tasks SET state = 'USER_KILLED', message = :why, waiting = '', updated_at = now() WHERE id = ANY(:ids)"),
        {"ids": ids, "why": reason},
    )
    _events(session, move, ((m.id, m.workflow_id, m.site or "", m.from_state, S.USER_KILLED, None, reason, m.attempt) for m in moved))
    block_descendants(session, ids)
    return moved


# -- reported -------------------------------------------------------------------------------------


@dataclass
class Applied:
    """What a batch of a site's reports changed."""

    workflows: set[int]  # every workflow with a task moved
    released: list[str]
    ignored: list[tuple[Report, str]]  # reports that were not applied, and why
    ended: set[int] = field(default_factory=set)  # the workflows with a task that reached a final state: the only ones that may end
    released_at_site: list[str] = field(default_factory=list)  # tasks sent ahead that their site released: their children may follow


@dataclass(frozen=True)
class Prepared:
    """A batch of a site's reports, with all that needs no row done before the caller takes its locks:
    each move checked against the job table (each distinct pair once) and its event line formatted."""

    site: str
    reports: Sequence[Report]
    illegal: Sequence[str | None]  # per report: why its move is not allowed, or None
    lines: Sequence[str | None]  # per report: its event's COPY line, or None (a task id of no workflow: never a task)
    workflows: frozenset[int]  # the workflows the reports name (by their task ids): the ones to lock

    def subset(self, keep: Sequence[bool]) -> Prepared:
        """Only the reports where ``keep`` (one flag a report) is true."""
        if all(keep):
            return self
        chosen = [i for i, k in enumerate(keep) if k]
        return Prepared(self.site, [self.reports[i] for i in chosen], [self.illegal[i] for i in chosen], [self.lines[i] for i in chosen],
                        frozenset(w for i in chosen if (w := workflow_of(self.reports[i].task_id)) is not None))  # fmt: skip


def workflow_of(task_id: str) -> int | None:
    """The workflow a task id names ("WORKFLOW/NAME", as every task's id is made), or None."""
    prefix, sep, _ = task_id.partition("/")
    return int(prefix) if sep and prefix.isdigit() and len(prefix) < 19 else None


def prepare_reports(site: str, reports: Sequence[Report]) -> Prepared:
    # Each distinct move once: whether it is legal, and its two states as the event line spells them.
    moves: dict[tuple[JobState, JobState], tuple[str | None, str]] = {}
    illegal: list[str | None] = []
    lines: list[str | None] = []
    workflows: set[int] = set()
    site_field, move_field = copy_field(site), M.REPORTED.value
    for report in reports:
        pair = (report.from_state, report.to_state)
        move = moves.get(pair)
        if move is None:
            move = moves[pair] = (None if is_legal_task_move(M.REPORTED, *pair) else "illegal", f"{pair[0].value}\t{pair[1].value}")
        why, states = move
        if why is not None:  # named per task, as IllegalTaskMove does
            try:
                check_task_move(report.task_id, M.REPORTED, *pair)
            except IllegalTaskMove as exc:
                why = str(exc)
        illegal.append(why)
        workflow = workflow_of(report.task_id)
        if workflow is None:
            lines.append(None)
            continue
        workflows.add(workflow)
        at = report.at.isoformat() if report.at else "now"
        lines.append(f"{copy_field(report.task_id)}\t{workflow}\t{site_field}\t{states}\t{at}\t{copy_field(report.message)}\t"
                     f"{report.attempt}\t{move_field}\n")  # fmt: skip
    return Prepared(site, reports, illegal, lines, frozenset(workflows))


def apply_reports(session: Session, prepared: Prepared) -> Applied:
    """Mirror the moves a site reports of its jobs onto their tasks, for the tasks' current attempts.

    Reports of stale copies (the task was placed again elsewhere, or killed) are not the task's news
    and are left out; so is a move the job table does not allow (a site's bug), with an event saying
    so. News of a task never placed at the site refuses the whole batch (``ForeignReport``), before
    anything is written. The caller holds the locks of ``prepared.workflows``."""
    site, reports = prepared.site, prepared.reports
    ids = sorted({r.task_id for r in reports})
    rows = session.execute(
        text("SELECT id, workflow_id, site, attempt, state, coalesce(coalesce(site, '') = :s OR sites_tried ? :s, true) AS ours"
             " FROM tasks WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"), {"ids": ids, "s": site}
    ).all()  # fmt: skip
    foreign = [t.id for t in rows if not t.ours]
    if foreign:
        raise ForeignReport(site, foreign)
    tasks = {t.id: t for t in rows}
    state = {t.id: t.state for t in rows}
    updates: dict[str, tuple[str, int, int | None, str]] = {}
    located: dict[str, dict[str, Any]] = {}
    lines: list[str] = []
    finished, ended, ignored, illegal, at_site = [], [], [], [], []
    for report, why, line in zip(reports, prepared.illegal, prepared.lines):
        task = tasks.get(report.task_id)
        if task is None or task.site != site or task.attempt != report.attempt or state[task.id] == S.USER_KILLED:
            ignored.append((report, "a stale copy"))
            continue
        old, new = state[task.id], report.to_state.value
        if why is not None:
            ignored.append((report, why))
            illegal.append((task.id, task.workflow_id, site, old, old, None, f"site {site} reported an illegal move, not applied: {why}",
                            task.attempt))  # fmt: skip
            continue
        state[task.id] = new
        updates[task.id] = (new, report.job_id, report.return_code, report.message)
        lines.append(line)  # its workflow is the task's: the id says so
        if old == S.AWAITING_PARENTS and new == S.READY:
            at_site.append(task.id)
        if new == S.JOB_FINISHED and old != S.JOB_FINISHED:
            finished.append(task.id)
            if report.outputs:
                located[task.id] = {o.name: {"location": o.location, "size": o.size_bytes, "site": site} for o in report.outputs}
        elif new in (S.FAILED, S.USER_KILLED) and old not in (S.FAILED, S.USER_KILLED):
            ended.append(task.id)
    if updates:
        keys = list(updates)
        session.execute(
            text(
                "UPDATE tasks SET state = v.state, site_job_id = nullif(v.job, 0), return_code = coalesce(v.rc, tasks.return_code),"
                " message = v.msg, output_locations = coalesce(v.loc, tasks.output_locations), updated_at = now()"
                " FROM (SELECT unnest(CAST(:ids AS text[])) AS id, unnest(CAST(:states AS text[])) AS state,"
                "  unnest(CAST(:jobs AS bigint[])) AS job, unnest(CAST(:rcs AS int[])) AS rc, unnest(CAST(:msgs AS text[])) AS msg,"
                "  unnest(CAST(:locs AS jsonb[])) AS loc) v"
                " WHERE tasks.id = v.id"
            ),
            {"ids": keys, "states": [updates[k][0] for k in keys], "jobs": [updates[k][1] for k in keys],
             "rcs": [updates[k][2] for k in keys], "msgs": [updates[k][3] for k in keys],
             "locs": [json.dumps(located[k]) if k in located else None for k in keys]},
        )  # fmt: skip
    if lines:
        copy_lines(session, "task_events", EVENT_COLUMNS, lines)
    _events(session, ILLEGAL, illegal)
    # Only a final move can release children or end a workflow: a batch of none (RUNNING, RUN_DONE, ...) skips both.
    released = release_children(session, finished)
    block_descendants(session, ended)
    return Applied({tasks[k].workflow_id for k in updates}, released, ignored, {tasks[k].workflow_id for k in finished + ended}, at_site)


class ForeignReport(Exception):
    """A site reported on tasks never placed there (the caller refuses its whole batch)."""

    def __init__(self, site: str, task_ids: Sequence[str]) -> None:
        super().__init__(f"site {site} reported on task(s) never assigned to it: {', '.join(task_ids[:5])}")
        self.task_ids = list(task_ids)
