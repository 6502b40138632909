"""The one writer of Argo task state: every coordinator move of the table, each with its event in the
same transaction, and moves the table does not name refused, naming the task and both states.

Runs on a real coordinator database (the session's PostgreSQL server, migrated with Argo's own
migrations); no server process is needed for what is checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text

from balsam.argo.db import taskstore
from balsam.argo.graph import lock_graph
from balsam.errors import IllegalTaskMove
from balsam.resources import Resources
from balsam.states import FINAL_STATES, TASK_MOVES, TRANSITIONS, JobState, TaskMove, is_legal_task_move
from balsam.taskspec import TaskSpec
from balsam.wire.convert import Report, Spawned

S = JobState
M = TaskMove


@pytest.fixture
def session(argo_session):
    return argo_session


def tasks(session) -> dict[str, tuple]:
    rows = session.execute(text("SELECT id, state, site, attempt, waiting FROM tasks ORDER BY id")).all()
    return {r.id: (r.state, r.site, r.attempt, r.waiting) for r in rows}


def events(session, task_id: str) -> list[tuple[str, str, str]]:
    rows = session.execute(text("SELECT from_state, to_state, message FROM task_events WHERE task_id = :t ORDER BY id"), {"t": task_id})
    return [tuple(r) for r in rows]


def report(task_id, old, new, attempt=1, **kw):
    return Report(task_id, attempt, 7, old, new, None, f"{old.value} -> {new.value}", **kw)


def test_a_placement_numbers_its_events_after_sending_its_assignments(session):
    """What is sent with a placement runs before its events take their numbers: a number taken holds
    the coordinator's event feed until the commit, and sending a round's thousands of assignments
    first held every watcher 1.6-2.6 s."""
    lock_graph(session)
    taskstore.insert(session, 1, [TaskSpec("p", "a"), TaskSpec("q", "a")], existing={})
    seen = {}

    def send(placed):
        seen["placed"] = sorted(row.id for row in placed)
        seen["newest event"] = session.scalar(text("SELECT max(id) FROM task_events"))
        seen["placed events"] = session.scalar(text("SELECT count(*) FROM task_events WHERE move = 'placed'"))

    placed = taskstore.place(session, [("1/p", "s1"), ("1/q", "s1")], then=send)
    assert sorted(r.id for r in placed) == seen["placed"] == ["1/p", "1/q"]
    assert seen["placed events"] == 0
    numbers = session.scalars(text("SELECT id FROM task_events WHERE move = 'placed'")).all()
    assert len(numbers) == 2 and min(numbers) > seen["newest event"]
    assert events(session, "1/q")[-1] == ("READY", "READY", "placed at site s1 (attempt 1)")


def test_every_coordinator_move_is_applied_with_its_event_in_the_same_transaction(session):
    lock_graph(session)
    # created: a new task is READY or waits for its parents
    taskstore.insert(session, 1, [TaskSpec("p", "a"), TaskSpec("c", "a", parents=("p",)), TaskSpec("x", "a")], existing={})
    assert tasks(session) == {"1/c": ("AWAITING_PARENTS", None, 0, ""), "1/p": ("READY", None, 0, ""), "1/x": ("READY", None, 0, "")}
    assert events(session, "1/c") == [("CREATED", "AWAITING_PARENTS", "waiting for 1 parent(s)")]

    # placed: a site and a new attempt, still READY until the site reports
    placed = taskstore.place(session, [("1/p", "s1")])
    assert [(r.id, r.site, r.attempt) for r in placed] == [("1/p", "s1", 1)]
    assert events(session, "1/p")[-1] == ("READY", "READY", "placed at site s1 (attempt 1)")
    assert taskstore.place(session, [("1/c", "s1")]) == []  # not READY: nothing placed, nothing written

    # waiting: why a task cannot be placed, one event per change of reason
    assert taskstore.set_waiting(session, {"1/x": "no healthy site offers app 'a'"}) == 1
    assert taskstore.set_waiting(session, {"1/x": "no healthy site offers app 'a'"}) == 0
    assert tasks(session)["1/x"][3] == "no healthy site offers app 'a'"
    assert events(session, "1/x")[-1] == ("READY", "READY", "waiting: no healthy site offers app 'a'")

    # reported: the site's job moves, mirrored; the end releases the child
    chain = [S.CREATED, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED]
    applied = taskstore.apply_reports(session, taskstore.prepare_reports("s1", [report("1/p", a, b) for a, b in zip(chain, chain[1:])]))
    assert applied.released == ["1/c"] and applied.ignored == []
    assert tasks(session)["1/p"][0] == "JOB_FINISHED"
    # released: its last parent finished
    assert tasks(session)["1/c"][0] == "READY"
    assert events(session, "1/c")[-1] == ("AWAITING_PARENTS", "READY", "all parents finished")

    # replaced: its site was lost, whatever the attempt had reached (RUNNING here), it waits again
    taskstore.place(session, [("1/c", "s1")])
    taskstore.apply_reports(session, taskstore.prepare_reports("s1", [report("1/c", a, b) for a, b in zip(chain[:5], chain[1:5])]))
    assert tasks(session)["1/c"][:3] == ("RUNNING", "s1", 1)
    taskstore.record_assignments(session, [("1/c", 5)])
    session.execute(text("UPDATE sites SET confirmed = 5 WHERE name = 's1'"))
    # what the site may have started (assignment 5, confirmed) is held while only unconfirmed ones go
    assert taskstore.replace(session, "s1", "site s1 is down", unconfirmed_only=True) == []
    moved = taskstore.replace(session, "s1", "site s1 is down", unconfirmed_only=False)
    assert [(m.id, m.from_state, m.to_state, m.attempt, m.assigned_seq) for m in moved] == [("1/c", "RUNNING", "READY", 1, 5)]
    assert tasks(session)["1/c"][:2] == ("READY", None)
    assert events(session, "1/c")[-1] == ("RUNNING", "READY", "site s1 is down")
    # ... and news of that stale copy is not the task's any more
    stale = taskstore.apply_reports(session, taskstore.prepare_reports("s1", [report("1/c", S.RUNNING, S.RUN_DONE)]))
    assert [why for _, why in stale.ignored] == ["a stale copy"] and tasks(session)["1/c"][0] == "READY"

    # unplaceable: it can run nowhere
    failed = taskstore.fail_unplaceable(session, {"1/x": "input 'in': task 'p' finished without leaving its output 'o'"})
    assert [(m.id, m.to_state) for m in failed] == [("1/x", "FAILED")]
    assert events(session, "1/x")[-1][:2] == ("READY", "FAILED")

    # killed, cancelled: a user's, and a workflow's
    taskstore.place(session, [("1/c", "s2")])
    taskstore.record_assignments(session, [("1/c", 9)])  # never confirmed at s2: placed again at once
    assert [m.id for m in taskstore.replace(session, "s2", "site s2 stalled", unconfirmed_only=True)] == ["1/c"]
    taskstore.place(session, [("1/c", "s2")])
    killed = taskstore.kill(session, ["1/c"], "killed by user", M.KILLED)
    assert [(m.id, m.site, m.attempt, m.from_state) for m in killed] == [("1/c", "s2", 3, "READY")]
    assert events(session, "1/c")[-1] == ("READY", "USER_KILLED", "killed by user")
    taskstore.insert(session, 1, [TaskSpec("y", "a")], existing={})
    taskstore.kill(session, ["1/y"], "workflow cancelled", M.CANCELLED)
    assert tasks(session)["1/y"][0] == "USER_KILLED"

    # spawned: a job a running task made at its site joins, placed there
    spawned = Spawned("1/s1:99", 1, 99, "a", {"k": 1}, Resources(nodes=2), parents=("1/p",))
    parents = session.execute(text("SELECT id, state FROM tasks WHERE id = '1/p'")).all()
    assert taskstore.insert_spawned(session, "s1", spawned, parents) is True
    assert taskstore.insert_spawned(session, "s1", spawned, parents) is False  # joins once
    assert tasks(session)["1/s1:99"] == ("CREATED", "s1", 1, "")
    assert events(session, "1/s1:99") == [("", "CREATED", "spawned at site s1")]

    # every state change above wrote its event: one per move per task, none more
    counted = session.execute(text("SELECT count(*) FROM task_events")).scalar()
    assert counted == 3 + 1 + 1 + 8 + 1 + 1 + 4 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1


def test_a_move_the_table_does_not_name_is_refused_naming_the_task_and_both_states(session):
    lock_graph(session)
    taskstore.insert(session, 1, [TaskSpec("done", "a")], existing={})
    taskstore.place(session, [("1/done", "s1")])
    chain = [S.CREATED, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED]
    taskstore.apply_reports(session, taskstore.prepare_reports("s1", [report("1/done", a, b) for a, b in zip(chain, chain[1:])]))
    session.commit()
    before = session.execute(text("SELECT count(*) FROM task_events")).scalar()

    with pytest.raises(IllegalTaskMove, match=re.escape("illegal move 'killed' for task 1/done: JOB_FINISHED -> USER_KILLED")):
        taskstore.kill(session, ["1/done"], "too late", M.KILLED)
    session.rollback()
    assert tasks(session)["1/done"][0] == "JOB_FINISHED"
    assert session.execute(text("SELECT count(*) FROM task_events")).scalar() == before

    # A site that reports a move its own job table forbids: not applied, and said so in an event.
    bogus = taskstore.apply_reports(session, taskstore.prepare_reports("s1", [report("1/done", S.JOB_FINISHED, S.RUNNING)]))
    assert bogus.ignored and "illegal move 'reported' for task 1/done: JOB_FINISHED -> RUNNING" in bogus.ignored[0][1]
    assert tasks(session)["1/done"][0] == "JOB_FINISHED"
    assert "reported an illegal move, not applied" in events(session, "1/done")[-1][2]


def test_the_table_names_each_coordinator_move_and_allows_nothing_else():
    states = list(JobState)
    # The coordinator's own moves, checked exhaustively against the documented table.
    expected = {
        M.CREATED: ({None}, {S.READY, S.AWAITING_PARENTS}),
        M.SPAWNED: ({None}, {S.CREATED}),
        M.RELEASED: ({S.AWAITING_PARENTS}, {S.READY}),
        M.PLACED: ({S.READY}, {S.READY}),
        M.SENT_AHEAD: ({S.AWAITING_PARENTS}, {S.AWAITING_PARENTS}),
        M.WITHDRAWN: ({S.AWAITING_PARENTS}, {S.AWAITING_PARENTS}),
        M.REPLACED: (set(states) - FINAL_STATES, {S.READY, S.AWAITING_PARENTS}),
        M.UNPLACEABLE: ({S.READY}, {S.FAILED}),
        M.KILLED: (set(states) - FINAL_STATES, {S.USER_KILLED}),
        M.CANCELLED: (set(states) - FINAL_STATES, {S.USER_KILLED}),
    }
    assert set(TASK_MOVES) == set(expected) | {M.REPORTED}
    for move, (sources, targets) in expected.items():
        for old in [None, *states]:
            for new in states:
                assert is_legal_task_move(move, old, new) == (old in sources and new in targets), (move, old, new)
    # A site's report is legal exactly when its job's move is.
    for old in states:
        for new in states:
            assert is_legal_task_move(M.REPORTED, old, new) == (new in TRANSITIONS[old])
    # The move that used to be written by hand: a lost site's RUNNING task back to READY, named.
    assert S.READY not in TRANSITIONS[S.RUNNING] and is_legal_task_move(M.REPLACED, S.RUNNING, S.READY)


def test_no_module_but_the_taskstore_writes_the_tasks_table():
    root = Path(__file__).resolve().parents[1]
    writes = re.compile(r"(UPDATE\s+tasks\b|INSERT\s+INTO\s+tasks\b|DELETE\s+FROM\s+tasks\b|copy_rows\([^)]*[\"']tasks[\"'])", re.I)
    offenders = []
    for path in sorted((root / "argo").rglob("*.py")):
        if "migrations" in path.parts or path.name == "taskstore.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if writes.search(line):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []


def test_a_task_sent_ahead_is_withdrawn_with_a_kill_order_when_a_task_it_waits_for_fails(session):
    from balsam.argo.timeline import attempts
    from balsam.protos import argo_pb2 as pb

    lock_graph(session)
    taskstore.insert(session, 1, [TaskSpec("p", "a"), TaskSpec("c", "a", parents=("p",)), TaskSpec("g", "a", parents=("c",))], existing={})
    taskstore.place(session, [("1/p", "s1")])
    # sent ahead: a site and an attempt while it waits; only a waiting, unplaced task goes
    sent = taskstore.place_ahead(session, [("1/c", "s1"), ("1/g", "s1"), ("1/p", "s2")])
    assert [(r.id, r.site, r.attempt) for r in sent] == [("1/c", "s1", 1), ("1/g", "s1", 1)]
    assert tasks(session)["1/c"][:3] == ("AWAITING_PARENTS", "s1", 1)
    assert events(session, "1/c")[-1] == ("AWAITING_PARENTS", "AWAITING_PARENTS", "sent ahead to site s1, where its parents are (attempt 1)")

    # the parent fails at s1: both are withdrawn (unplaced, blocked), and s1 is told to kill its copies
    chain = [S.CREATED, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_ERROR, S.FAILED]
    taskstore.apply_reports(session, taskstore.prepare_reports("s1", [report("1/p", a, b) for a, b in zip(chain, chain[1:])]))
    assert {t: tasks(session)[t][:2] for t in ("1/c", "1/g")} == {"1/c": ("AWAITING_PARENTS", None), "1/g": ("AWAITING_PARENTS", None)}
    assert session.execute(text("SELECT count(*) FROM tasks WHERE blocked")).scalar() == 2
    assert events(session, "1/g")[-1][2] == "withdrawn from site s1: a task it waits for ended without finishing"
    orders = [pb.CoordinatorMessage.FromString(bytes(m)).kill for (m,) in session.execute(
        text("SELECT body FROM site_outbox WHERE site = 's1' ORDER BY seq"))]  # fmt: skip
    assert [(k.task_id, k.attempt) for k in orders] == [("1/c", 1), ("1/g", 1)]
    # its copy's news is stale now
    stale = taskstore.apply_reports(session, taskstore.prepare_reports("s1", [report("1/c", S.AWAITING_PARENTS, S.USER_KILLED)]))
    assert [why for _, why in stale.ignored] == ["a stale copy"]
    # the attempt that was sent ahead began and ended there
    rows = session.execute(text("SELECT attempt, move, site, from_state, to_state, at FROM task_events WHERE task_id = '1/c' ORDER BY id"))
    (only,) = attempts(rows)
    assert (only.number, only.site, only.ready_at) == (1, "s1", None) and only.placed_at <= only.ended_at


def test_an_ended_workflows_counts_are_kept_in_its_row_and_dropped_by_any_later_change_of_its_tasks(session):
    # Listing workflows reads an ended one's counts from its row instead of counting its tasks (a
    # million-task workflow cost a scan of a million index entries a call); they must never go stale.
    from sqlalchemy import select

    from balsam.argo import graph
    from balsam.argo.db.models import Workflow
    from balsam.argo.workflows import WorkflowStore

    def kept():
        return session.scalar(text("SELECT task_counts FROM workflows WHERE id = 1"))

    def listed():
        (workflow,) = session.scalars(select(Workflow).where(Workflow.id == 1).execution_options(populate_existing=True)).all()
        return sorted(WorkflowStore._counts(session, [workflow])[1])

    lock_graph(session)
    taskstore.insert(session, 1, [TaskSpec("ok", "a"), TaskSpec("bad", "a"), TaskSpec("after", "a", parents=("bad",))], existing={})
    taskstore.place(session, [("1/ok", "s1"), ("1/bad", "s2")])
    run = [S.CREATED, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING]
    reports = [report("1/ok", a, b) for a, b in zip(run + [S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT], run[1:] + [S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED])]
    reports += [report("1/bad", a, b) for a, b in zip(run, run[1:])] + [report("1/bad", S.RUNNING, S.RUN_ERROR), report("1/bad", S.RUN_ERROR, S.FAILED)]
    taskstore.apply_reports(session, taskstore.prepare_reports("s1", [r for r in reports if r.task_id == "1/ok"]))
    applied = taskstore.apply_reports(session, taskstore.prepare_reports("s2", [r for r in reports if r.task_id == "1/bad"]))
    assert kept() is None, "a running workflow is counted live"
    assert graph.close_workflows(session, applied.ended) == [(1, "failed")]

    truth = [("", "AWAITING_PARENTS", 1), ("s1", "JOB_FINISHED", 1), ("s2", "FAILED", 1)]
    assert sorted(map(tuple, kept())) == truth, "the counts kept are the tasks' own, the blocked child included"
    assert listed() == truth

    # The failed task is reset at its site and runs again: the kept counts are dropped at once.
    taskstore.apply_reports(session, taskstore.prepare_reports("s2", [report("1/bad", S.FAILED, S.CREATED)]))
    assert kept() is None
    assert listed() == [("", "AWAITING_PARENTS", 1), ("s1", "JOB_FINISHED", 1), ("s2", "CREATED", 1)]

    # Kept again when it ends again; then a task spawned into it (an insert) drops them too.
    graph.keep_task_counts(session, [1])
    assert kept() is not None
    taskstore.insert_spawned(session, "s1", Spawned("1/s1:7", 1, 7, "a", parents=("1/ok",)), [])
    assert kept() is None
    assert ("s1", "CREATED", 1) in listed()
