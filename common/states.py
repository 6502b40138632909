"""The job state machine: the one definition used by the site, the launcher and Argo.

The states come from the protobuf enum (``protos/states.proto``); the transitions are here.

Every legal transition is one entry of ``TRANSITIONS``; anything else is refused with an error that
names both states. Every applied transition is also one row of the site's event log (see
``balsam.site.db.jobstore``), which is the job's provenance and history.

An Argo task has a job state too, the state of its current attempt at its site. Besides the moves
its site reports (moves of ``TRANSITIONS``), the coordinator makes moves of its own, each named for
why it happens: ``TASK_MOVES``, applied only by ``balsam.argo.db.taskstore``.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from balsam.errors import BalsamError, IllegalTaskMove, IllegalTransition
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


@dataclass(frozen=True)
class Step:
    """One transition of a batch: to ``state`` at time ``at`` (None: the time of the commit)."""

    state: JobState
    message: str = ""
    at: datetime | None = None


# -- The coordinator's own moves of an Argo task -------------------------------------------------


class TaskMove(StrEnum):
    """Why the coordinator changes a task's state, attempt or site. Each has its row in TASK_MOVES."""

    # A workflow was submitted or a task added to one: a new task, READY or waiting for parents.
    CREATED = "created"
    # A running task created a job at its site (spawn_child): a new task, already placed there,
    # CREATED until the site reports its job's first move.
    SPAWNED = "spawned"
    # Its last unfinished parent finished.
    RELEASED = "released"
    # Placement chose a site: the task gets that site and a new attempt, and stays READY until the
    # site reports that its job exists.
    PLACED = "placed"
    # Sent ahead: its unfinished parents are all placed at one site that suits it, so it goes there
    # before they end, as a job waiting for theirs: the site releases it itself, in the commit of their
    # end (``balsam.argo.ahead``). It gets that site and a new attempt, and stays AWAITING_PARENTS
    # until the site reports its release.
    SENT_AHEAD = "sent ahead"
    # A task sent ahead cannot run there any more (a task it waits for failed or was killed): the
    # site is sent a kill order for it, and it waits unplaced, blocked, as any child of such a task.
    WITHDRAWN = "withdrawn"
    # Its site was lost (silent beyond the site timeout): the attempt there is given up, whatever
    # it had reached, and the task waits to be placed again. The site is sent a kill order for it.
    REPLACED = "replaced"
    # It can run nowhere: a parent finished without leaving an output it reads.
    UNPLACEABLE = "unplaceable"
    # A user killed it.
    KILLED = "killed"
    # Its workflow was cancelled.
    CANCELLED = "cancelled"
    # Its site reported a move of its job: any move of TRANSITIONS, checked pair by pair.
    REPORTED = "reported"


NEW = frozenset()  # the source states of a move that creates the task
_NOT_FINAL = frozenset(state for state in JobState if state not in FINAL_STATES)
_ANY = frozenset(JobState)

# move -> (the states it may start from, the states it may lead to)
TASK_MOVES: dict[TaskMove, tuple[frozenset[JobState], frozenset[JobState]]] = {
    TaskMove.CREATED: (NEW, frozenset({S.READY, S.AWAITING_PARENTS})),
    TaskMove.SPAWNED: (NEW, frozenset({S.CREATED})),
    TaskMove.RELEASED: (frozenset({S.AWAITING_PARENTS}), frozenset({S.READY})),
    TaskMove.PLACED: (frozenset({S.READY}), frozenset({S.READY})),
    TaskMove.SENT_AHEAD: (frozenset({S.AWAITING_PARENTS}), frozenset({S.AWAITING_PARENTS})),
    TaskMove.WITHDRAWN: (frozenset({S.AWAITING_PARENTS}), frozenset({S.AWAITING_PARENTS})),
    TaskMove.REPLACED: (_NOT_FINAL, frozenset({S.READY, S.AWAITING_PARENTS})),
    TaskMove.UNPLACEABLE: (frozenset({S.READY}), frozenset({S.FAILED})),
    TaskMove.KILLED: (_NOT_FINAL, frozenset({S.USER_KILLED})),
    TaskMove.CANCELLED: (_NOT_FINAL, frozenset({S.USER_KILLED})),
    TaskMove.REPORTED: (_ANY, _ANY),
}


def is_legal_task_move(move: TaskMove, from_state: JobState | None, to_state: JobState) -> bool:
    """Whether ``move`` may take a task from ``from_state`` (None: a new task) to ``to_state``."""
    sources, targets = TASK_MOVES[TaskMove(move)]
    if from_state is None:
        return not sources and to_state in targets
    if move == TaskMove.REPORTED:
        return is_legal(JobState(from_state), JobState(to_state))
    return JobState(from_state) in sources and JobState(to_state) in targets


def check_task_move(task_id: str, move: TaskMove, from_state: JobState | None, to_state: JobState) -> None:
    """Raise :class:`IllegalTaskMove` naming the task, the move and both states unless the table allows it."""
    if not is_legal_task_move(move, from_state, to_state):
        raise IllegalTaskMove(task_id, TaskMove(move).value, JobState(from_state).value if from_state else "", JobState(to_state).value)
