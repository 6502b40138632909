"""A task's attempts and their times, worked out from its events: a pure function over plain rows.

Every change of a task is an event naming its attempt and its kind of move (``task_events.attempt``,
``task_events.move``, written by ``balsam.argo.db.taskstore``), so the times of each attempt need no
columns of their own:

    ready_at    when the task last became ready to be placed before this attempt (created or released
                READY, or the previous attempt given up); for an attempt sent ahead, its release
                at the site (its report of READY)
    placed_at   the placement that began the attempt (or its sending ahead)
    started_at  its first report of RUNNING
    ended_at    a report of a final state, a kill, or the attempt given up (its site lost)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from balsam.states import FINAL_STATES, JobState, TaskMove

M = TaskMove


@dataclass
class AttemptTimes:
    number: int
    site: str = ""
    state: str = ""  # the last state the attempt reached
    ready_at: datetime | None = None
    placed_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


def attempts(events: Iterable[Any]) -> list[AttemptTimes]:
    """The attempts of one task from its events, oldest event first (each with ``attempt``, ``move``,
    ``site``, ``from_state``, ``to_state``, ``at``)."""
    found: dict[int, AttemptTimes] = {}
    ready: datetime | None = None
    for e in events:
        if e.move == M.PLACED:
            found[e.attempt] = AttemptTimes(e.attempt, e.site, JobState.READY.value, ready, e.at)
            continue
        if e.move == M.SENT_AHEAD:  # ready once its site releases it
            found[e.attempt] = AttemptTimes(e.attempt, e.site, e.to_state, None, e.at)
            continue
        if e.move == M.SPAWNED:
            found[e.attempt] = AttemptTimes(e.attempt, e.site, e.to_state, e.at, e.at)
            continue
        if e.move in (M.CREATED, M.RELEASED) and e.to_state == JobState.READY:
            ready = e.at
        attempt = found.get(e.attempt)
        if attempt is None:  # before any placement: created, released, waiting, unplaceable, killed unplaced
            continue
        if e.move == M.WITHDRAWN:  # taken back from the site it was sent ahead to: it waits again
            attempt.ended_at = attempt.ended_at or e.at
            continue
        if e.move == M.REPLACED:  # its site was lost: this attempt ends, the next one may begin
            attempt.ended_at = attempt.ended_at or e.at
            ready = e.at if e.to_state == JobState.READY else ready
            continue
        attempt.state = e.to_state
        if e.to_state == JobState.READY and attempt.ready_at is None:
            attempt.ready_at = e.at
        if e.to_state == JobState.RUNNING and attempt.started_at is None:
            attempt.started_at = e.at
        if e.to_state in FINAL_STATES:
            attempt.ended_at = e.at
    return [found[n] for n in sorted(found)]
