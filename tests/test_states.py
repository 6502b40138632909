"""The state machine: every pair of states is either in the table or refused, in memory and in the database."""

import itertools

import pytest
from sqlalchemy import text

from balsam.errors import BalsamError, IllegalTransition
from balsam.site.db import jobstore
from balsam.states import FINAL_STATES, TRANSITIONS, JobState, check_transition, parse_state

S = JobState
ALL_PAIRS = list(itertools.product(JobState, JobState))

# The lifecycle DESIGN.md draws, written out independently of the table under test.
EXPECTED = {
    (S.CREATED, S.AWAITING_PARENTS), (S.CREATED, S.READY), (S.AWAITING_PARENTS, S.READY),
    (S.READY, S.STAGED_IN), (S.STAGED_IN, S.PREPROCESSED), (S.PREPROCESSED, S.RUNNING),
    (S.RUNNING, S.RUN_DONE), (S.RUN_DONE, S.POSTPROCESSED), (S.POSTPROCESSED, S.STAGED_OUT),
    (S.STAGED_OUT, S.JOB_FINISHED), (S.RUNNING, S.RUN_ERROR), (S.RUN_ERROR, S.RESTART_READY),
    (S.RUN_ERROR, S.FAILED), (S.RUNNING, S.RUN_TIMEOUT), (S.RUN_TIMEOUT, S.RESTART_READY),
    (S.RUN_TIMEOUT, S.FAILED), (S.RESTART_READY, S.RUNNING), (S.RUNNING, S.RESTART_READY),
    (S.READY, S.FAILED), (S.STAGED_IN, S.FAILED), (S.RUN_DONE, S.FAILED), (S.STAGED_OUT, S.FAILED), (S.POSTPROCESSED, S.FAILED),
    (S.FAILED, S.CREATED), (S.USER_KILLED, S.CREATED),
} | {(s, S.USER_KILLED) for s in JobState if s not in FINAL_STATES}  # fmt: skip


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=lambda p: f"{p[0].value}->{p[1].value}")
def test_every_pair_is_legal_exactly_when_expected(pair):
    a, b = pair
    if pair in EXPECTED:
        check_transition(a, b)
        assert b in TRANSITIONS[a]
    else:
        with pytest.raises(IllegalTransition) as info:
            check_transition(a, b, job_id=7)
        assert a.value in str(info.value) and b.value in str(info.value) and "job 7" in str(info.value)


def test_finished_jobs_never_move():
    assert TRANSITIONS[S.JOB_FINISHED] == frozenset()


def test_state_names_parse_and_bad_names_are_listed():
    assert parse_state("ready") is S.READY
    with pytest.raises(BalsamError, match="unknown job state 'DONE'.*JOB_FINISHED"):
        parse_state("DONE")


def _job_in(site, state: JobState) -> int:
    job = site.add_job("noop")
    with site.session() as session:  # test set-up: place the job in `state` directly
        session.execute(text("UPDATE jobs SET state = :s WHERE id = :id"), {"s": state.value, "id": job.id})
    return job.id


def _events(site, job_id):
    return [(e.from_state, e.to_state, e.message) for e in site.history(job_id)]


def test_every_legal_transition_is_applied_with_its_event(site):
    site.add_app("noop", "true")
    for a, b in sorted(EXPECTED):
        job_id = _job_in(site, a)
        with site.session() as session:
            jobstore.transition(session, [job_id], b, f"{a}->{b}")
        assert site.job(job_id).state == b
        assert _events(site, job_id)[-1] == (a.value, b.value, f"{a}->{b}")


def test_an_illegal_transition_changes_nothing(site):
    site.add_app("noop", "true")
    ready = _job_in(site, S.RESTART_READY)
    finished = _job_in(site, S.JOB_FINISHED)
    before = {j: _events(site, j) for j in (ready, finished)}
    with pytest.raises(IllegalTransition, match=f"job {finished}: JOB_FINISHED -> RUNNING"):
        with site.session() as session:
            # a batch where one move is legal and one is not: all or nothing
            jobstore.transition(session, [ready, finished], S.RUNNING)
    assert site.job(ready).state == S.RESTART_READY and site.job(finished).state == S.JOB_FINISHED
    assert {j: _events(site, j) for j in (ready, finished)} == before


def test_transition_of_a_missing_job_is_an_error(site):
    with pytest.raises(BalsamError, match="no job 424242"):
        with site.session() as session:
            jobstore.transition(session, [424242], S.READY)
