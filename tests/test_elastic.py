"""The elastic queue's decision, over plain data: examples, then every small case checked for its promises."""

from __future__ import annotations

import itertools

import pytest

from balsam.site.elastic import SLACK_NODE_MINUTES, Allocation, JobShape, plan
from balsam.site.scheduler.base import BackfillWindow
from balsam.site.settings import ElasticQueueSettings


def limits(**changes) -> ElasticQueueSettings:
    values = dict(enabled=True, max_queued=2, max_nodes=8, min_nodes=1, min_wall_min=10, max_wall_min=60)
    values.update(changes)
    settings = ElasticQueueSettings(**values)
    settings.check()
    return settings


def test_no_backlog_submits_nothing_and_cancels_queued_elastic_jobs_only():
    allocations = [
        Allocation(1, running=False, nodes=2, minutes_left=30),
        Allocation(2, running=True, nodes=2, minutes_left=30),
        Allocation(3, running=False, nodes=2, minutes_left=30, elastic=False),
    ]
    decision = plan([], allocations, limits())
    assert decision.submit == []
    assert decision.cancel == [1]  # not the running one, not the user's own


def test_backlog_gets_one_batch_job_sized_to_it():
    # 40 single-node jobs of 15 minutes: 600 node-minutes. The widest allowed batch job (8 nodes)
    # for the longest allowed time (60) takes 480; the other 120 fit 8 nodes for one job's length.
    decision = plan([JobShape(nodes=1, minutes=15, count=40)], [], limits())
    assert [(s.nodes, s.minutes) for s in decision.submit] == [(8, 60), (8, 15)]


def test_small_backlog_gets_the_minimum_wall_time_and_one_node():
    decision = plan([JobShape(nodes=1, minutes=1, count=3)], [], limits())
    assert [(s.nodes, s.minutes) for s in decision.submit] == [(1, 10)]


def test_packed_jobs_count_as_a_share_of_a_node():
    # 64 jobs packed 16 to a node, 10 minutes each: 40 node-minutes, all at once on 4 nodes.
    decision = plan([JobShape(nodes=1, minutes=10, count=64, packing=16)], [], limits())
    assert [(s.nodes, s.minutes) for s in decision.submit] == [(4, 10)]


def test_covered_backlog_submits_nothing():
    running = [Allocation(1, running=True, nodes=4, minutes_left=50)]
    decision = plan([JobShape(nodes=2, minutes=20, count=4)], running, limits())
    assert decision.submit == [] and decision.cancel == []


def test_a_job_wider_than_every_allocation_gets_its_own_batch_job():
    running = [Allocation(1, running=True, nodes=2, minutes_left=600)]
    decision = plan([JobShape(nodes=6, minutes=20, count=1)], running, limits())
    assert [(s.nodes, s.minutes) for s in decision.submit] == [(6, 20)]


def test_jobs_beyond_the_limits_are_reported_not_submitted_for():
    decision = plan([JobShape(nodes=16, minutes=5, count=2), JobShape(nodes=1, minutes=90, count=3)], [], limits())
    assert decision.submit == []
    assert decision.unservable == [
        "2 job(s) need 16 nodes; batch jobs have at most 8",
        "3 job(s) need 90 min; batch jobs last at most 60",
    ]


def test_never_more_queued_than_the_limit():
    queued = [Allocation(1, running=False, nodes=1, minutes_left=10)]
    decision = plan([JobShape(nodes=1, minutes=60, count=1000)], queued, limits(max_queued=3))
    assert len(decision.submit) == 2
    assert all(s.nodes == 8 and s.minutes == 60 for s in decision.submit)


def test_backfill_window_is_used_when_it_fits():
    windows = [BackfillWindow(nodes=3, minutes=25), BackfillWindow(nodes=20, minutes=5)]
    decision = plan([JobShape(nodes=1, minutes=10, count=12)], [], limits(use_backfill=True), windows)
    # 120 node-minutes: 75 in the 3-node, 25-minute window (the 5-minute one is too short for a
    # 10-minute job), the other 45 on 5 nodes for one job's length.
    assert [(s.nodes, s.minutes) for s in decision.submit] == [(3, 25), (5, 10)]
    assert "backfill" in decision.submit[0].reason


def test_windows_are_ignored_without_use_backfill():
    decision = plan([JobShape(nodes=1, minutes=10, count=2)], [], limits(), [BackfillWindow(nodes=3, minutes=25)])
    assert [(s.nodes, s.minutes) for s in decision.submit] == [(2, 10)]


def test_queued_jobs_are_cancelled_newest_first_while_the_rest_covers_the_backlog():
    allocations = [
        Allocation(5, running=True, nodes=2, minutes_left=30),
        Allocation(6, running=False, nodes=2, minutes_left=30),
        Allocation(7, running=False, nodes=2, minutes_left=30),
    ]
    # 90 node-minutes: the running job (60) and one queued job (60) cover it; the newest goes.
    decision = plan([JobShape(nodes=1, minutes=10, count=9)], allocations, limits())
    assert decision.cancel == [7]
    assert decision.submit == []


# -- every small case ---------------------------------------------------------------------------

SHAPES = [JobShape(1, 5, 1), JobShape(1, 30, 50), JobShape(4, 20, 3), JobShape(1, 10, 40, packing=8), JobShape(12, 10, 1), JobShape(2, 120, 1)]
ALLOCATIONS = [
    Allocation(1, running=True, nodes=2, minutes_left=20), Allocation(2, running=False, nodes=4, minutes_left=60),
    Allocation(3, running=False, nodes=1, minutes_left=10, elastic=False), Allocation(4, running=True, nodes=8, minutes_left=2),
]
LIMITS = [limits(max_queued=q, max_nodes=n, min_nodes=m, min_wall_min=lo, max_wall_min=hi, use_backfill=b)
          for q, n, m, lo, hi, b in itertools.product((1, 3), (1, 4, 8), (1, 2), (5, 30), (30, 60), (False, True)) if m <= n and lo <= hi]  # fmt: skip
WINDOWS = [[], [BackfillWindow(3, 40)], [BackfillWindow(16, None), BackfillWindow(1, 15)]]


def _subsets(items, most):
    return [list(c) for k in range(most + 1) for c in itertools.combinations(items, k)]


CASES = list(itertools.product(_subsets(SHAPES, 2), _subsets(ALLOCATIONS, 2), LIMITS, WINDOWS))


@pytest.mark.parametrize("chunk", range(8))
def test_every_small_case_keeps_the_promises(chunk):
    for backlog, allocations, lim, windows in CASES[chunk::8]:
        decision = plan(backlog, allocations, lim, windows)
        where = f"backlog={backlog} allocations={allocations} limits={lim} windows={windows}"
        queued_after = sum(1 for a in allocations if not a.running and a.id not in decision.cancel) + len(decision.submit)
        # Never past the limits.
        if decision.submit:
            assert queued_after <= lim.max_queued, where
        for s in decision.submit:
            assert lim.min_nodes <= s.nodes <= lim.max_nodes, where
            assert lim.min_wall_min <= s.minutes <= lim.max_wall_min, where
        # Only queued jobs of its own are cancelled, and never while it also submits.
        by_id = {a.id: a for a in allocations}
        for batch_id in decision.cancel:
            assert by_id[batch_id].elastic and not by_id[batch_id].running, where
        assert not (decision.cancel and decision.submit), where
        servable = [s for s in backlog if s.nodes <= lim.max_nodes and s.minutes <= lim.max_wall_min]
        if not servable:
            assert decision.submit == [], where
            assert sorted(decision.cancel) == sorted(a.id for a in allocations if a.elastic and not a.running), where
        # Every job beyond the limits is reported.
        assert len(decision.unservable) == len(backlog) - len(servable), where
        # With unserved work and room in the queue, something is submitted.
        demand = sum(s.node_minutes for s in servable)
        offered = sum(a.node_minutes for a in allocations)
        queued_now = sum(1 for a in allocations if not a.running)
        if demand > offered + SLACK_NODE_MINUTES and queued_now < lim.max_queued:
            assert decision.submit, where


def test_the_exhaustive_grid_is_large():
    assert len(CASES) == 58_080


def test_a_node_budget_caps_what_all_batch_jobs_hold_together():
    # 400 node-minutes of short jobs on a site of 4 nodes: one batch job of 4 nodes, not 8.
    backlog = [JobShape(nodes=1, minutes=1, count=400)]
    assert [(s.nodes, s.minutes) for s in plan(backlog, [], limits(), node_budget=4).submit] == [(4, 60)]
    # One running launcher already holds the one host of a local site: nothing more is submitted,
    # however large the backlog (launchers on one host would only fight over its cores).
    running = [Allocation(1, running=True, nodes=1, minutes_left=2)]
    assert plan(backlog, running, limits(max_nodes=1), node_budget=1).submit == []
    assert plan(backlog, running, limits(max_nodes=1)).submit != []  # without the budget it would
