"""The job state machine: the one definition used by the site, the launcher and Argo.

Every legal transition is one entry of ``TRANSITIONS``; anything else is refused with an error that
names both states. Every applied transition is also one row of the site's event log (see
``balsam.site.db.jobstore``), which is the job's provenance and history.
"""

from enum import StrEnum

from balsam.errors import BalsamError, IllegalTransition


class JobState(StrEnum):
    CREATED = "CREATED"
    AWAITING_PARENTS = "AWAITING_PARENTS"
    READY = "READY"
    STAGED_IN = "STAGED_IN"
    PREPROCESSED = "PREPROCESSED"
    RUNNING = "RUNNING"
    RUN_DONE = "RUN_DONE"
    POSTPROCESSED = "POSTPROCESSED"
    STAGED_OUT = "STAGED_OUT"
    JOB_FINISHED = "JOB_FINISHED"
    RUN_ERROR = "RUN_ERROR"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    RESTART_READY = "RESTART_READY"
    FAILED = "FAILED"
    USER_KILLED = "USER_KILLED"


S = JobState

# A job that reached one of these never moves again on its own; only `balsam job reset` reopens
# the two unsuccessful ones (back to CREATED, from where readiness is worked out afresh).
FINAL_STATES = frozenset({S.JOB_FINISHED, S.FAILED, S.USER_KILLED})

_FORWARD = {
    S.CREATED: {S.AWAITING_PARENTS, S.READY},
    S.AWAITING_PARENTS: {S.READY},
    S.READY: {S.STAGED_IN, S.FAILED},  # FAILED: stage-in failed
    S.STAGED_IN: {S.PREPROCESSED, S.FAILED},  # FAILED: pre-processing failed
    S.PREPROCESSED: {S.RUNNING},
    # RESTART_READY from RUNNING: the launcher running it was lost (its lease expired).
    S.RUNNING: {S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.RESTART_READY},
    S.RUN_DONE: {S.POSTPROCESSED, S.FAILED},  # FAILED: post-processing failed
    S.POSTPROCESSED: {S.STAGED_OUT},
    S.STAGED_OUT: {S.JOB_FINISHED, S.FAILED},  # FAILED: stage-out failed
    S.RUN_ERROR: {S.RESTART_READY, S.FAILED},
    S.RUN_TIMEOUT: {S.RESTART_READY, S.FAILED},
    S.RESTART_READY: {S.RUNNING},
    # reset: a user reopens a job that did not succeed
    S.FAILED: {S.CREATED},
    S.USER_KILLED: {S.CREATED},
}

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    state: frozenset(_FORWARD.get(state, set()) | ({S.USER_KILLED} if state not in FINAL_STATES else set()))
    for state in JobState
}

# States a user may reset a job from.
RESETTABLE_STATES = frozenset({S.FAILED, S.USER_KILLED})


def parse_state(name: str) -> JobState:
    """The state called ``name`` (case-insensitive), or a clear error listing the valid names."""
    try:
        return JobState(name.strip().upper())
    except ValueError:
        valid = ", ".join(s.value for s in JobState)
        raise BalsamError(f"unknown job state {name!r}; valid states: {valid}") from None


def is_legal(from_state: JobState, to_state: JobState) -> bool:
    return to_state in TRANSITIONS[from_state]


def check_transition(from_state: JobState, to_state: JobState, job_id: int | None = None) -> None:
    """Raise :class:`IllegalTransition` naming both states unless the move is in the table."""
    if not is_legal(JobState(from_state), JobState(to_state)):
        raise IllegalTransition(job_id, JobState(from_state).value, JobState(to_state).value)
