"""Argo's placement policy: worked examples, pins, caps, spreading, fairness, and properties
checked against a brute-force replay of the policy over thousands of generated cases."""

import copy
import random
from collections import Counter
from dataclasses import replace

import pytest

from balsam.argo.placement import (
    DEFAULT_INPUT_BYTES,
    DEFAULT_RUNTIME_S,
    InputFile,
    Placement,
    ReadyTask,
    RuntimeModel,
    SiteView,
    candidacy,
    expected_completion_s,
    place,
)


def site(name, apps=("sim",), **kw):
    return SiteView(name=name, healthy=kw.pop("healthy", True), apps=frozenset(apps), **kw)


def task(id, app="sim", **kw):
    return ReadyTask(id=id, app=app, **kw)


def chosen(tasks, sites):
    return dict(place(tasks, sites).assigned)


# --- worked examples -------------------------------------------------------------------------


def test_expected_completion_adds_wait_backlog_runtime_and_transfer():
    s = site("a", nodes=4, queue_wait_s=10.0, backlog_node_s=100.0, runtime_s={"sim": 30.0},
             bandwidth_Bps=1e8, transfer_latency_s=5.0)  # fmt: skip
    t = task("t", inputs=(InputFile("b", 10**8), InputFile("a", 10**12)))
    # 10 wait + 100/4 backlog + 30 model runtime + (5 + 1e8/1e8) for the one input elsewhere
    assert expected_completion_s(t, s) == 71.0
    assert expected_completion_s(t, s, extra_node_s=40.0) == 81.0
    # Unknown sizes count as the default; the user's wall time stands in for a missing model.
    u = task("u", wall_time_min=2.0, inputs=(InputFile("b"),))
    assert expected_completion_s(u, site("c")) == 120.0 + 5.0 + DEFAULT_INPUT_BYTES / 100e6
    assert expected_completion_s(task("v"), site("c")) == DEFAULT_RUNTIME_S


@pytest.mark.parametrize(
    "a, b, t, winner",
    [
        (dict(queue_wait_s=100.0), dict(queue_wait_s=10.0), {}, "b"),
        (dict(backlog_node_s=1000.0), dict(backlog_node_s=1000.0, nodes=10), {}, "b"),
        (dict(backlog_node_s=500.0, nodes=10), dict(queue_wait_s=60.0), {}, "a"),
        (dict(runtime_s={"sim": 10.0}), {}, {}, "a"),
        (dict(runtime_s={"other": 1.0}), dict(runtime_s={"sim": 59.0}), {}, "b"),
        # No model at b, so the user's wall time decides against a's model.
        (dict(runtime_s={"sim": 100.0}), {}, dict(wall_time_min=0.5), "b"),
        (dict(runtime_s={"sim": 100.0}), {}, dict(wall_time_min=5.0), "a"),
    ],
)
def test_lowest_expected_completion_wins(a, b, t, winner):
    sites = [site("a", **a), site("b", **b)]
    assert chosen([task("t", **t)], sites) == {"t": winner}


def test_child_follows_its_large_input_unless_that_site_is_much_busier():
    big = (InputFile("a", 10 * 10**9),)  # 100 s to move at 100 MB/s, plus 5 s latency
    assert chosen([task("t", inputs=big)], [site("a", queue_wait_s=50.0), site("b")]) == {"t": "a"}
    assert chosen([task("t", inputs=big)], [site("a", queue_wait_s=500.0), site("b")]) == {"t": "b"}
    # A small input is not worth a long wait.
    small = (InputFile("a", 10**6),)
    assert chosen([task("t", inputs=small)], [site("a", queue_wait_s=50.0), site("b")]) == {"t": "b"}


def test_ties_go_to_the_first_name_whatever_the_input_order():
    sites = [site("c"), site("a"), site("b")]
    assert chosen([task("t")], sites) == {"t": "a"}
    # Equal sites then take turns, in name order.
    p = place([task(f"t{i}") for i in range(6)], sites)
    assert [s for _, s in p.assigned] == ["a", "b", "c", "a", "b", "c"]


# --- pins, apps, health ----------------------------------------------------------------------


def test_pin_is_honoured_even_when_another_site_is_better():
    sites = [site("fast"), site("slow", queue_wait_s=1e6)]
    assert chosen([task("t", pin="slow")], sites) == {"t": "slow"}


@pytest.mark.parametrize(
    "sites, t, words",
    [
        ([site("a", healthy=False)], task("t", pin="a"), ["'a'", "down"]),
        ([site("a")], task("t", pin="nowhere"), ["'nowhere'", "not known"]),
        ([site("a", apps=("other",))], task("t", pin="a"), ["'a'", "does not offer", "'sim'"]),
        ([site("a", apps=("sim",))], task("t", app="mystery"), ["no healthy site", "'mystery'"]),
        ([site("a", healthy=False)], task("t"), ["no healthy site", "'sim'", "down sites: a"]),
        ([], task("t"), ["'sim'"]),
        ([site("a", max_tasks=2, in_flight=2)], task("t", pin="a"), ["'a'", "cap of 2"]),
        ([site("a", max_tasks=1, in_flight=3), site("b", max_tasks=4, in_flight=4)], task("t"),
         ["'sim'", "cap", "a (1)", "b (4)"]),
    ],
)  # fmt: skip
def test_a_task_without_a_candidate_waits_with_a_reason(sites, t, words):
    p = place([t], sites)
    assert p.assigned == []
    assert list(p.waiting) == ["t"]
    for w in words:
        assert w in p.waiting["t"]


def test_unhealthy_sites_never_get_tasks():
    sites = [site("down", healthy=False, runtime_s={"sim": 0.0}), site("up", queue_wait_s=1e5)]
    p = place([task(f"t{i}") for i in range(50)], sites)
    assert {s for _, s in p.assigned} == {"up"}


# --- caps, spreading, fairness ---------------------------------------------------------------


def test_caps_count_tasks_already_in_flight_and_excess_waits():
    sites = [site("a", max_tasks=5, in_flight=3), site("b", max_tasks=4, queue_wait_s=1e4)]
    p = place([task(f"t{i}") for i in range(10)], sites)
    assert Counter(s for _, s in p.assigned) == {"a": 2, "b": 4}
    assert len(p.waiting) == 4 and all("cap" in why for why in p.waiting.values())


def test_a_burst_spreads_in_proportion_to_nodes():
    p = place([task(f"t{i}") for i in range(1000)], [site("big", nodes=3), site("small", nodes=1)])
    n = Counter(s for _, s in p.assigned)
    assert n["big"] + n["small"] == 1000
    assert 740 <= n["big"] <= 760


def test_packed_and_multinode_tasks_weigh_by_their_node_share():
    # a starts 150 node-s behind b. A task's charge is runtime * nodes / packing: 15 node-s
    # for a 4-way packed one (b takes all five), 60 for a whole node, 120 for two nodes.
    sites = [site("a", backlog_node_s=150.0), site("b")]
    for kw, expected in [
        (dict(node_packing_count=4), ["b", "b", "b", "b", "b"]),
        ({}, ["b", "b", "b", "a", "b"]),
        (dict(nodes=2), ["b", "b", "a", "b", "a"]),
        (dict(nodes=2, node_packing_count=2), ["b", "b", "b", "a", "b"]),
    ]:
        p = place([task(f"t{i}", **kw) for i in range(5)], sites)
        assert [s for _, s in p.assigned] == expected, kw


def test_workflows_share_capped_slots_round_robin():
    tasks = [task(f"x{i}", workflow_id=1) for i in range(1000)]
    tasks += [task(f"y{i}", workflow_id=2) for i in range(1000)]
    p = place(tasks, [site("a", max_tasks=60), site("b", max_tasks=40)])
    ids = [t for t, _ in p.assigned]
    assert len(ids) == 100
    # Each workflow gets half, and its own earliest tasks, in its own order.
    assert [t for t in ids if t[0] == "x"] == [f"x{i}" for i in range(50)]
    assert [t for t in ids if t[0] == "y"] == [f"y{i}" for i in range(50)]
    assert len(p.waiting) == 1900


def test_round_robin_order_follows_first_appearance():
    tasks = [task("a1", workflow_id=7), task("b1", workflow_id=3), task("b2", workflow_id=3),
             task("a2", workflow_id=7), task("c1", workflow_id=5)]  # fmt: skip
    p = place(tasks, [site("s", max_tasks=4)])
    assert [t for t, _ in p.assigned] == ["a1", "b1", "c1", "a2"]
    assert list(p.waiting) == ["b2"]


def test_a_sites_performance_model_sets_the_runtime_at_the_tasks_node_count_and_size():
    model = RuntimeModel(serial_s=10.0, parallel_s=400.0, feature="size")
    s = site("a", runtime_models={"sim": model}, runtime_s={"sim": 999.0})
    assert expected_completion_s(task("t", nodes=4, params={"size": 2}), s) == 10.0 + 400.0 * 2 / 4
    assert expected_completion_s(task("t", nodes=4, params={"size": "3"}), s) == 10.0 + 400.0 * 3 / 4
    # Without a usable feature value the model does not apply: the site's flat estimate holds.
    for params in ({}, {"size": "big"}, {"size": -1}, {"size": True}):
        assert expected_completion_s(task("t", nodes=4, params=params), s) == 999.0
    plain = site("b", runtime_models={"sim": RuntimeModel(5.0, 100.0)})
    assert expected_completion_s(task("t", nodes=10, wall_time_min=30), plain) == 15.0


def test_the_site_whose_model_says_it_runs_the_task_sooner_wins():
    # Same load; b's nodes run this app four times slower (its model, learnt from its own runs).
    fast, slow = RuntimeModel(2.0, 100.0), RuntimeModel(2.0, 400.0)
    sites = [site("a", nodes=8, runtime_models={"sim": fast}), site("b", nodes=8, runtime_models={"sim": slow})]
    assert chosen([task("t", nodes=2)], sites) == {"t": "a"}
    # Tasks of different sizes are told apart, although they share app, nodes and shape.
    sized = [site("a", runtime_models={"sim": RuntimeModel(0.0, 1.0, "n")}), site("b", runtime_models={"sim": RuntimeModel(50.0, 0.0)})]
    assert chosen([task("small", params={"n": 10}), task("big", params={"n": 1000})], sized) == {"small": "a", "big": "b"}
    with pytest.raises(ValueError, match="bad runtime model"):
        RuntimeModel(-1.0, 1.0)


def test_inputs_are_not_mutated_and_bad_inputs_are_refused():
    sites = [site("a", runtime_s={"sim": 5.0}, max_tasks=1), site("b")]
    tasks = [task("t1", inputs=(InputFile("a"),)), task("t2", pin="a")]
    before = copy.deepcopy((sites, tasks))
    place(tasks, sites)
    assert (sites, tasks) == before and sites[0].runtime_s == {"sim": 5.0}
    assert place([], []) == Placement([], {})
    with pytest.raises(ValueError, match="duplicate site"):
        place([], [site("a"), site("a")])
    with pytest.raises(ValueError, match="duplicate task"):
        place([task("t"), task("t")], sites)
    for bad in (dict(nodes=0), dict(bandwidth_Bps=0.0), dict(queue_wait_s=float("nan")),
                dict(runtime_s={"sim": -1.0}), dict(max_tasks=-1)):  # fmt: skip
        with pytest.raises(ValueError):
            site("x", **bad)
    for bad in (dict(nodes=0), dict(node_packing_count=0), dict(wall_time_min=float("inf"))):
        with pytest.raises(ValueError):
            task("x", **bad)


# --- properties over generated cases ---------------------------------------------------------

APPS = ["x", "y", "z"]
NAMES = ["alpha", "beta", "gamma", "delta", "eps"]


def random_case(rng):
    names = rng.sample(NAMES, rng.randint(0, len(NAMES)))
    sites = []
    for name in names:
        # Small whole numbers make exact cost ties common, which exercises the tie-break.
        sites.append(SiteView(
            name=name, healthy=rng.random() < 0.8, apps=frozenset(rng.sample(APPS, rng.randint(0, 3))),
            nodes=rng.randint(1, 3), queue_wait_s=float(rng.choice([0, 0, 30, 60])),
            backlog_node_s=float(rng.choice([0, 0, 60, 120])), in_flight=rng.randint(0, 3),
            max_tasks=rng.choice([0, 0, 1, 2, 4]),
            runtime_s={a: float(rng.choice([10, 60])) for a in rng.sample(APPS, rng.randint(0, 2))},
            bandwidth_Bps=rng.choice([1e6, 1e8]), transfer_latency_s=rng.choice([0.0, 5.0]),
        ))  # fmt: skip
    tasks = []
    for k in range(rng.randint(0, 14)):
        pin = rng.choice([None, None, None, "ghost", *names])
        inputs = tuple(InputFile(rng.choice([*names, "ghost"]), rng.choice([None, 0, 10**6, 10**8]))
                       for _ in range(rng.choice([0, 0, 1, 2])))  # fmt: skip
        tasks.append(ReadyTask(
            id=f"t{k}", app=rng.choice([*APPS, "w"]), workflow_id=rng.randint(0, 2), pin=pin,
            nodes=rng.randint(1, 2), node_packing_count=rng.choice([1, 1, 2, 4]),
            wall_time_min=rng.choice([None, 1.0, 0.5]), inputs=inputs,
        ))  # fmt: skip
    return tasks, sites


def reference_order(tasks):
    workflows = list(dict.fromkeys(t.workflow_id for t in tasks))
    per = [[t for t in tasks if t.workflow_id == w] for w in workflows]
    return [q[k] for k in range(max(map(len, per), default=0)) for q in per if k < len(q)]


def node_seconds(t, s):
    rt = s.runtime_s.get(t.app, DEFAULT_RUNTIME_S if t.wall_time_min is None else t.wall_time_min * 60.0)
    return rt * t.nodes / t.node_packing_count


def check_case(tasks, sites):
    p = place(tasks, sites)
    by_name = {s.name: s for s in sites}
    placed = {}  # site name -> (count, node-seconds) placed so far in this call
    decisions = iter(p.assigned)
    next_assigned = next(decisions, None)
    # Every task is either assigned or waiting, exactly once.
    assert len(p.assigned) + len(p.waiting) == len(tasks)
    assert {t for t, _ in p.assigned} | set(p.waiting) == {t.id for t in tasks}
    # Replay the policy in its round-robin order, checking each decision against every candidate
    # as it stood at that moment.
    for t in reference_order(tasks):
        def below_cap(s):
            return s.max_tasks == 0 or s.in_flight + placed.get(s.name, (0, 0.0))[0] < s.max_tasks

        cands = [s for s in sites if s.healthy and t.app in s.apps and t.pin in (None, s.name)]
        cands = [s for s in cands if below_cap(s)]
        if t.id in p.waiting:
            assert not cands, (t, p.waiting[t.id])
            assert (t.pin if t.pin is not None else t.app) in p.waiting[t.id]
            continue
        assert next_assigned is not None and next_assigned[0] == t.id, "assigned out of round-robin order"
        name = next_assigned[1]
        assert by_name[name] in cands
        costs = sorted((expected_completion_s(t, s, placed.get(s.name, (0, 0.0))[1]), s.name) for s in cands)
        assert costs[0][1] == name, (t, costs)
        n, ns = placed.get(name, (0, 0.0))
        placed[name] = (n + 1, ns + node_seconds(t, by_name[name]))
        next_assigned = next(decisions, None)
    assert next_assigned is None
    return p


def test_properties_hold_over_generated_cases():
    rng = random.Random(20240611)
    outcomes = Counter()
    for _ in range(3000):
        tasks, sites = random_case(rng)
        p = check_case(tasks, sites)
        # Deterministic, and independent of the order the sites are listed in.
        assert place(tasks, sites) == p
        assert place(tasks, list(reversed(sites))) == p
        outcomes["assigned"] += len(p.assigned)
        outcomes["waiting"] += len(p.waiting)
        outcomes["capped"] += sum("cap" in why for why in p.waiting.values())
    # The generator must reach every branch, or the properties above prove little.
    assert min(outcomes.values()) > 500, outcomes


def test_a_task_waits_for_the_same_reason_under_any_sites_of_the_same_candidacy():
    # The coordinator relies on this to skip re-reading tasks already told why they wait.
    rng = random.Random(20261207)
    compared = 0
    for _ in range(1000):
        tasks, sites = random_case(rng)
        # What candidacy leaves out: estimates, queues, load, and what is in flight at an uncapped site.
        other = [replace(s, queue_wait_s=rng.uniform(0, 500), backlog_node_s=rng.uniform(0, 1e4), runtime_s={},
                         bandwidth_Bps=rng.uniform(1e6, 1e9), in_flight=s.in_flight if s.max_tasks else rng.randint(0, 9))
                 for s in reversed(sites)]  # fmt: skip
        assert candidacy(other) == candidacy(sites)
        for t in tasks:
            alone = place([t], sites)
            if alone.waiting:
                compared += 1
                assert place([t], other).waiting == alone.waiting
    assert compared > 300, compared


def test_candidacy_changes_when_a_site_could_take_a_task_it_could_not():
    base = [site("a", max_tasks=2, in_flight=2), site("b", healthy=False)]
    assert place([task("t")], base).waiting
    for changed in ([site("a", max_tasks=2, in_flight=1), base[1]],  # a slot freed under a's cap
                    [base[0], site("b")],  # b came up
                    [site("a", max_tasks=3, in_flight=2), base[1]],  # a's cap raised
                    [site("a", apps=("sim", "x"), max_tasks=2, in_flight=2), base[1]],  # a offers another app
                    [*base, site("c")]):  # a new site  # fmt: skip
        assert candidacy(changed) != candidacy(base)


# --- the backlog, costed by the core from the tasks' own estimates ------------------------------


def test_a_sites_backlog_is_costed_from_its_placed_tasks_own_estimates():
    from balsam.argo.placement import Queued

    model = RuntimeModel(serial_s=10.0, parallel_s=80.0, feature="n")
    s = SiteView.loaded(
        placed=(
            Queued(task("", wall_time_min=2.0), count=3),  # 3 x 120 s on one node
            Queued(task("", app="packed", node_packing_count=4), count=8),  # 8 x 60 s, four to a node
            Queued(task("", app="fit", nodes=2, params={"n": 4}), count=1),  # (10 + 80 * 4 / 2) s on 2 nodes
        ),
        other_jobs=2, name="a", healthy=True, apps=frozenset({"sim"}), runtime_models={"fit": model},
    )  # fmt: skip
    assert s.in_flight == 12
    assert s.backlog_node_s == 3 * 120.0 + 8 * 60.0 / 4 + 170.0 * 2 + 2 * DEFAULT_RUNTIME_S
    with pytest.raises(ValueError, match="other_jobs"):
        SiteView.loaded(other_jobs=-1, name="a", healthy=True, apps=frozenset())


def test_a_level_of_short_tasks_spreads_over_both_sites_when_one_already_runs_a_short_task():
    # One level of a DAG: 95 tasks of 0.6 s. Site a still runs one such task. Counting every placed
    # task as 60 s would put a a minute behind and send all 95 to b; costed by its estimate, a is 0.6 s
    # behind and both sites share the level.
    from balsam.argo.placement import Queued

    short = dict(wall_time_min=0.01)
    sites = [SiteView.loaded(placed=(Queued(task("", **short)),), name="a", healthy=True, apps=frozenset({"sim"})),
             SiteView.loaded(name="b", healthy=True, apps=frozenset({"sim"}))]  # fmt: skip
    n = Counter(s for _, s in place([task(f"t{i}", **short) for i in range(95)], sites).assigned)
    assert n["a"] + n["b"] == 95 and abs(n["a"] - n["b"]) <= 1
