"""The elastic queue's decision: which launcher batch jobs to submit and which to cancel.

A pure function of the backlog (runnable jobs, grouped by shape), the batch jobs the site already
has in the scheduler, the scheduler's idle windows and the site's limits. The agent
(``balsam.site.agent``) gathers those, calls ``plan`` and carries the plan out.

Work is counted in node-minutes: a job on ``n`` nodes for ``m`` minutes is ``n*m``; a job packed
``k`` to a node is ``m/k``. A queued batch job offers ``nodes*minutes``, a running one
``nodes*minutes_left``. Batch jobs are submitted while the backlog exceeds what is offered,
within the limits; queued ones the elastic queue submitted itself are cancelled, newest first,
while what is left still covers the backlog. Running batch jobs and users' own are never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from balsam.site.scheduler.base import BackfillWindow
from balsam.site.settings import ElasticQueueSettings

# Work still uncovered below this is noise (a running batch job loses a little time every second
# while its jobs take their share of the backlog with them): no new batch job for it.
SLACK_NODE_MINUTES = 1.0


@dataclass(frozen=True)
class JobShape:
    """``count`` runnable jobs of one size: ``nodes`` each (packed ``packing`` to a node), ``minutes`` long."""

    nodes: int
    minutes: float
    count: int = 1
    packing: int = 1

    @property
    def node_minutes(self) -> float:
        return self.count * self.minutes * (self.nodes if self.nodes > 1 else 1 / self.packing)


@dataclass(frozen=True)
class Allocation:
    """A batch job of the site: queued (or not yet submitted) or running."""

    id: int
    running: bool
    nodes: int
    minutes_left: float
    elastic: bool = True  # submitted by the elastic queue (False: by a user, never cancelled)

    @property
    def node_minutes(self) -> float:
        return self.nodes * max(0.0, self.minutes_left)


@dataclass(frozen=True)
class Submission:
    nodes: int
    minutes: int
    reason: str
    queue: str = ""  # the backfill window's queue; empty: the site's own


@dataclass
class Plan:
    submit: list[Submission] = field(default_factory=list)
    cancel: list[int] = field(default_factory=list)
    # Jobs no batch job within the limits could run, described for the log and `site status`.
    unservable: list[str] = field(default_factory=list)


def plan(
    backlog: list[JobShape],
    allocations: list[Allocation],
    limits: ElasticQueueSettings,
    windows: list[BackfillWindow] | None = None,
    node_budget: int = 0,
) -> Plan:
    """``node_budget``: the nodes all batch jobs may hold together, running and queued (0: no limit)."""
    result = Plan()
    servable = []
    for shape in backlog:
        if shape.nodes > limits.max_nodes:
            result.unservable.append(f"{shape.count} job(s) need {shape.nodes} nodes; batch jobs have at most {limits.max_nodes}")
        elif shape.minutes > limits.max_wall_min:
            result.unservable.append(f"{shape.count} job(s) need {shape.minutes:g} min; batch jobs last at most {limits.max_wall_min}")
        elif shape.count > 0:
            servable.append(shape)
    demand = sum(s.node_minutes for s in servable)
    widest = max((s.nodes for s in servable), default=0)
    longest = max((s.minutes for s in servable), default=0.0)

    kept = list(allocations)
    cancellable = sorted((a for a in allocations if a.elastic and not a.running), key=lambda a: a.id, reverse=True)
    for allocation in cancellable:
        rest = [a for a in kept if a is not allocation]
        if _covers(rest, demand, widest, longest):
            kept = rest
            result.cancel.append(allocation.id)

    if _covers(kept, demand, widest, longest):
        return result
    deficit = demand - sum(a.node_minutes for a in kept)
    must_fit = max(widest, limits.min_nodes)
    queued = sum(1 for a in kept if not a.running)
    free_windows = sorted(windows or [], key=lambda w: (w.nodes, w.minutes or 0), reverse=True) if limits.use_backfill else []
    # A job wider than every batch job we hold needs a batch job of its own, even if the
    # node-minutes on offer would cover the backlog.
    need_wide = widest > max((a.nodes for a in kept if a.minutes_left >= longest), default=0)
    held = sum(a.nodes for a in kept)
    while queued < limits.max_queued and (deficit > 0 or need_wide):
        submission = _from_window(free_windows, deficit, must_fit, longest, limits) or _sized(deficit, must_fit, longest, limits)
        if node_budget and held + submission.nodes > node_budget:
            room = node_budget - held
            if room < must_fit:
                break  # the site's nodes are all in batch jobs already
            # Fewer nodes: longer, if the limits (and a backfill window's own length) allow, to cover the same work.
            minutes = submission.minutes if submission.queue else max(
                submission.minutes, _clamp(math.ceil(max(longest, deficit / room)), limits.min_wall_min, limits.max_wall_min))
            submission = Submission(room, minutes, submission.reason + f" (within the site's {node_budget} node(s))", submission.queue)
        held += submission.nodes
        result.submit.append(submission)
        deficit -= submission.nodes * submission.minutes
        need_wide = False
        queued += 1
    return result


def _covers(allocations: list[Allocation], demand: float, widest: int, longest: float) -> bool:
    """The allocations offer the node-minutes and one of them is wide and long enough for the widest job."""
    if demand <= 0:
        return True
    if sum(a.node_minutes for a in allocations) < demand - SLACK_NODE_MINUTES:
        return False
    return any(a.nodes >= widest and a.minutes_left >= longest for a in allocations)


def _sized(deficit: float, must_fit: int, longest: float, limits: ElasticQueueSettings) -> Submission:
    # Long enough for the longest job and, where the limits allow, for the whole deficit on the
    # widest batch job allowed; then as many nodes as that deficit needs.
    minutes = _clamp(math.ceil(max(longest, deficit / limits.max_nodes)), limits.min_wall_min, limits.max_wall_min)
    nodes = _clamp(math.ceil(deficit / minutes), must_fit, limits.max_nodes)
    return Submission(nodes, minutes, f"backlog of {deficit:.0f} node-min not covered")


def _from_window(
    windows: list[BackfillWindow], deficit: float, must_fit: int, longest: float, limits: ElasticQueueSettings
) -> Submission | None:
    for i, window in enumerate(windows):
        minutes = limits.max_wall_min if window.minutes is None else min(window.minutes, limits.max_wall_min)
        nodes = min(window.nodes, limits.max_nodes)
        if nodes >= must_fit and minutes >= max(longest, limits.min_wall_min):
            del windows[i]  # each idle window is used once
            nodes = _clamp(math.ceil(max(deficit, 0) / minutes), must_fit, nodes)
            length = "no time limit" if window.minutes is None else f"{window.minutes} min"
            return Submission(nodes, minutes, f"fits a backfill window of {window.nodes} node(s), {length}", queue=window.queue)
    return None


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
