"""The job state machine: the one definition used by the site, the launcher and Argo.

The states come from the protobuf enum (``protos/states.proto``); the transitions are here.

Every legal transition is one entry of ``TRANSITIONS``; anything else is refused with an error that
names both states. Every applied transition is also one row of the site's event log (see
``balsam.site.db.jobstore``), which is the job's provenance and history.
"""

from enum import StrEnum

from balsam.errors import BalsamError, IllegalTransition
from balsam.protos import states_pb2

# The states themselves are defined once, in protos/states.proto; each member's value is its name,
# which is also what the databases store. Its wire number is ``state.number``.
JobState = StrEnum(
    "JobState",
    [(name, name) for name in states_pb2.JobState.keys() if states_pb2.JobState.Value(name) != 0],
    module=__name__,
)
_NUMBERS = {state: states_pb2.JobState.Value(state.value) for state in JobState}
_BY_NUMBER = {number: state for state, number in _NUMBERS.items()}
JobState.number = property(_NUMBERS.__getitem__)


def from_wire(number: int) -> JobState:
    """The state with wire number ``number``; an error for 0 (unset) or an unknown number."""
    try:
        return _BY_NUMBER[number]
    except KeyError:
        raise BalsamError(f"invalid job state number {number}") from None


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
    S.POSTPROCESSED: {S.STAGED_OUT, S.FAILED},  # FAILED: stage-out failed
    S.STAGED_OUT: {S.JOB_FINISHED, S.FAILED},
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
