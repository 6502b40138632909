"""Children become READY exactly when their last parent finishes, for any fan-in or fan-out."""

import threading

import pytest
from sqlalchemy import func, select

from balsam.site.db import jobstore
from balsam.site.db.models import JobEvent
from balsam.states import JobState

S = JobState
RUN_PATH = [S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED]


def finish(site, ids):
    """Walk jobs from READY to JOB_FINISHED the way a launcher does, in one transaction."""
    with site.session() as session:
        for state in RUN_PATH:
            jobstore.transition(session, ids, state, "test run")


@pytest.fixture
def app(site):
    site.add_app("step", "echo {i}")
    return "step"


def test_chain_and_diamond(site, app):
    a, b, c, d = site.add_jobs([
        {"app": app, "name": "a", "params": {"i": 0}},
        {"app": app, "name": "b", "params": {"i": 1}, "parents": ["a"]},
        {"app": app, "name": "c", "params": {"i": 2}, "parents": ["a"]},
        {"app": app, "name": "d", "params": {"i": 3}, "parents": ["b", "c"]},
    ])  # fmt: skip
    state = lambda j: site.job(j).state  # noqa: E731
    assert [state(j) for j in (a, b, c, d)] == [S.READY, S.AWAITING_PARENTS, S.AWAITING_PARENTS, S.AWAITING_PARENTS]
    finish(site, [a])
    assert [state(j) for j in (b, c, d)] == [S.READY, S.READY, S.AWAITING_PARENTS]
    finish(site, [b])
    assert state(d) == S.AWAITING_PARENTS  # c has not finished
    finish(site, [c])
    assert state(d) == S.READY
    assert [(e.from_state, e.to_state, e.message) for e in site.history(d)][-1] == (
        "AWAITING_PARENTS", "READY", "all parents finished",
    )  # fmt: skip


def test_a_child_of_an_already_finished_parent_is_ready_at_once(site, app):
    parent = site.add_job(app, {"i": 0})
    finish(site, [parent.id])
    child = site.add_job(app, {"i": 1}, parents=[parent.id])
    assert child.state == S.READY and child.pending_parents == 0


def test_failed_or_killed_parents_keep_children_waiting(site, app):
    parent = site.add_job(app, {"i": 0})
    child = site.add_job(app, {"i": 1}, parents=[parent.id])
    site.kill_job(parent.id)
    assert site.job(child.id).state == S.AWAITING_PARENTS
    assert site.reset_job(parent.id) == S.READY
    finish(site, [parent.id])
    assert site.job(child.id).state == S.READY


def test_fan_out_of_10000(site, app):
    (root,) = site.add_jobs([{"app": app, "name": "root", "params": {"i": -1}}])
    children = site.add_jobs({"app": app, "params": {"i": i}, "parents": [root]} for i in range(10_000))
    assert site.count_jobs() == {"READY": 1, "AWAITING_PARENTS": 10_000}
    finish(site, [root])
    assert site.count_jobs() == {"JOB_FINISHED": 1, "READY": 10_000}
    with site.session() as session:
        ready_events = session.scalar(
            select(func.count()).where(JobEvent.job_id.in_(children), JobEvent.to_state == "READY")
        )
    assert ready_events == 10_000


def test_fan_in_of_10000(site, app):
    parents = site.add_jobs({"app": app, "params": {"i": i}} for i in range(10_000))
    sink = site.add_job(app, {"i": -1}, parents=parents)
    assert sink.pending_parents == 10_000
    finish(site, parents[:-1])  # all but one
    assert site.job(sink.id).state == S.AWAITING_PARENTS
    assert site.job(sink.id).pending_parents == 1
    finish(site, parents[-1:])
    assert site.job(sink.id).state == S.READY


def test_parents_finishing_concurrently_release_their_shared_children_once(site, app):
    """Eight transactions finish eight parents of the same 500 children at once: no deadlock, no double release."""
    parents = site.add_jobs({"app": app, "params": {"i": i}} for i in range(8))
    children = site.add_jobs({"app": app, "params": {"i": -k}, "parents": parents} for k in range(1, 501))
    barrier = threading.Barrier(len(parents))
    errors = []

    def run(job_id):
        try:
            barrier.wait()
            finish(site, [job_id])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in parents]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert site.count_jobs() == {"JOB_FINISHED": 8, "READY": 500}
    with site.session() as session:
        ready_events = session.scalar(
            select(func.count()).where(JobEvent.job_id.in_(children), JobEvent.to_state == "READY")
        )
    assert ready_events == 500


def test_a_child_added_while_its_parent_finishes_is_not_stranded(site, app):
    """The parent finishes in a transaction that overlaps the child's creation, in both orders."""
    for finisher_first in (True, False):
        parent = site.add_job(app, {"i": 0})
        with site.session() as session:
            for state in RUN_PATH[:-1]:
                jobstore.transition(session, [parent.id], state)
        added = threading.Event()
        child_ids = []

        def add_child():
            child_ids.append(site.add_job(app, {"i": 1}, parents=[parent.id]).id)
            added.set()

        with site.session() as session:
            if finisher_first:
                jobstore.transition(session, [parent.id], S.JOB_FINISHED)
                adder = threading.Thread(target=add_child)
                adder.start()
                assert not added.wait(0.5), "the child's insert must wait for the parent's row lock"
            else:
                adder = threading.Thread(target=add_child)
                adder.start()
                added.wait(10)
                jobstore.transition(session, [parent.id], S.JOB_FINISHED)
        adder.join(10)
        assert site.job(child_ids[0]).state == S.READY, f"finisher_first={finisher_first}"
