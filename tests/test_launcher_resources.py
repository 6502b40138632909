"""The launcher's node/core/GPU bookkeeping: placement, packing arithmetic, ids, and invariants."""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

import pytest

from balsam.launcher.nodes import Node
from balsam.launcher.resources import (
    Assignment,
    NodePool,
    Request,
    task_environment,
)


def nodes(count: int, cores: int = 8, gpus: int = 4) -> list[Node]:
    return [Node(f"n{i}", cores, gpus) for i in range(count)]


def packed(job_id: int, k: int, ranks: int = 1, threads: int = 1, gpus: int = 0) -> Request:
    return Request(job_id, 1, ranks, threads, gpus, k)


def mpi(job_id: int, nodes: int, ranks: int = 1, threads: int = 1, gpus: int = 0) -> Request:
    return Request(job_id, nodes, ranks, threads, gpus, 1)


def must(a: Assignment | None) -> Assignment:
    assert a is not None
    return a


# --- node packing -------------------------------------------------------------------------------


# 9 and 11 are among the counts where k float additions of 1/k overshoot 1.
@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7, 9, 11, 12])
def test_k_packed_jobs_fill_one_node_exactly_and_the_next_goes_elsewhere(k: int) -> None:
    pool = NodePool(nodes(2, cores=12, gpus=0))
    for job in range(k):
        assert must(pool.assign(packed(job, k))).hostnames == ["n0"]
    assert pool.free_nodes() == 1
    assert must(pool.assign(packed(k, k))).hostnames == ["n1"]
    assert pool.free_nodes() == 0


def test_mixed_packing_counts_add_up_exactly() -> None:
    # 1/2 + 1/3 + 1/6 == 1 only in exact arithmetic.
    pool = NodePool(nodes(2, cores=8, gpus=0))
    for job, k in enumerate([2, 3, 6]):
        assert must(pool.assign(packed(job, k))).hostnames == ["n0"]
    assert must(pool.assign(packed(3, 6))).hostnames == ["n1"]


def test_packed_job_too_large_for_the_room_left_goes_to_a_new_node() -> None:
    pool = NodePool(nodes(2, cores=8, gpus=0))
    assert must(pool.assign(packed(1, 3))).hostnames == ["n0"]
    assert must(pool.assign(packed(2, 3))).hostnames == ["n0"]
    # 1/3 left on n0; a half-node job does not fit there.
    assert must(pool.assign(packed(3, 2))).hostnames == ["n1"]
    assert must(pool.assign(packed(4, 3))).hostnames == ["n0"]


def test_packing_is_also_limited_by_cores() -> None:
    pool = NodePool(nodes(2, cores=8, gpus=0))
    assert must(pool.assign(packed(1, 8, ranks=1, threads=6))).hostnames == ["n0"]
    # n0 has room by occupancy (7/8 left) but only 2 free cores.
    assert must(pool.assign(packed(2, 8, ranks=1, threads=4))).hostnames == ["n1"]
    assert must(pool.assign(packed(3, 8, ranks=2, threads=1))).hostnames == ["n0"]


def test_packing_is_also_limited_by_gpus() -> None:
    pool = NodePool(nodes(2, cores=8, gpus=4))
    for job in range(4):
        assert must(pool.assign(packed(job, 8, gpus=1))).hostnames == ["n0"]
    # n0 is half empty by occupancy but out of GPUs; GPU-less packed jobs still fit there.
    assert must(pool.assign(packed(4, 8, gpus=1))).hostnames == ["n1"]
    assert must(pool.assign(packed(5, 8))).hostnames == ["n0"]


def test_packed_jobs_prefer_the_fullest_partly_used_node() -> None:
    pool = NodePool(nodes(2, cores=8, gpus=0))
    pool.assign(packed(1, 4))  # n0: 1/4
    pool.assign(packed(2, 2))  # n0: 3/4
    pool.assign(packed(3, 4))  # n0: full
    pool.assign(packed(4, 2))  # n1: 1/2
    pool.assign(packed(5, 4))  # n1: 3/4
    pool.release(1)
    pool.release(3)  # n0 back to 1/2, n1 still 3/4
    assert must(pool.assign(packed(6, 4))).hostnames == ["n1"]
    assert must(pool.assign(packed(7, 4))).hostnames == ["n0"]


def test_packed_jobs_keep_off_free_nodes_while_a_partly_used_one_fits() -> None:
    pool = NodePool(nodes(3, cores=8, gpus=0))
    pool.assign(packed(1, 2))
    pool.assign(packed(2, 2))
    pool.assign(packed(3, 2))  # n1: 1/2
    pool.release(1)
    pool.release(2)  # n0 free again, lower index than n1
    assert must(pool.assign(packed(4, 4))).hostnames == ["n1"]
    assert pool.free_nodes() == 2


# --- whole-node and mixed ----------------------------------------------------------------------


def test_mpi_jobs_take_lowest_free_nodes_and_never_share() -> None:
    pool = NodePool(nodes(5))
    assert must(pool.assign(mpi(1, 2))).hostnames == ["n0", "n1"]
    assert must(pool.assign(mpi(2, 2))).hostnames == ["n2", "n3"]
    assert pool.assign(mpi(3, 2)) is None
    assert must(pool.assign(mpi(4, 1))).hostnames == ["n4"]
    pool.release(1)
    assert must(pool.assign(mpi(3, 2))).hostnames == ["n0", "n1"]


def test_single_node_job_with_packing_one_owns_its_node() -> None:
    pool = NodePool(nodes(2))
    assert must(pool.assign(Request(1, 1, 1, 1, 0, 1))).hostnames == ["n0"]
    assert pool.free_cores() == 8
    assert pool.free_gpus() == 4
    assert must(pool.assign(packed(2, 8))).hostnames == ["n1"]
    assert pool.assign(packed(3, 2, threads=8)) is None


def test_mpi_job_ids_are_the_requested_ones_but_the_node_is_held_whole() -> None:
    pool = NodePool(nodes(3))
    a = must(pool.assign(mpi(1, 2, ranks=2, threads=2, gpus=1)))
    assert a.cores == {"n0": [0, 1, 2, 3], "n1": [0, 1, 2, 3]}
    assert a.gpus == {"n0": [0, 1], "n1": [0, 1]}
    assert pool.free_nodes() == 1
    assert pool.free_cores() == 8
    assert pool.free_gpus() == 4


def test_mixing_packed_and_mpi_jobs() -> None:
    pool = NodePool(nodes(4))
    assert must(pool.assign(packed(1, 4))).hostnames == ["n0"]
    assert must(pool.assign(mpi(2, 3))).hostnames == ["n1", "n2", "n3"]
    assert pool.assign(mpi(3, 1)) is None
    for job in range(4, 7):
        assert must(pool.assign(packed(job, 4))).hostnames == ["n0"]
    assert pool.assign(packed(7, 4)) is None
    pool.release(2)
    assert must(pool.assign(packed(7, 4))).hostnames == ["n1"]
    assert must(pool.assign(mpi(3, 2))).hostnames == ["n2", "n3"]
    assert pool.assign(mpi(8, 1)) is None
    for job in (1, 4, 5, 6):
        pool.release(job)
    assert must(pool.assign(mpi(8, 1))).hostnames == ["n0"]


# --- core and GPU ids ---------------------------------------------------------------------------


def test_gpu_ids_are_disjoint_on_a_node_and_reused_after_release() -> None:
    pool = NodePool(nodes(1, cores=8, gpus=4))
    given = {job: must(pool.assign(packed(job, 4, gpus=1))).gpus["n0"] for job in range(4)}
    assert given == {0: [0], 1: [1], 2: [2], 3: [3]}
    assert pool.free_gpus() == 0
    pool.release(1)
    pool.release(3)
    a = must(pool.assign(packed(9, 2, ranks=2, gpus=1)))
    assert a.gpus == {"n0": [1, 3]}
    assert task_environment(a, 1)["CUDA_VISIBLE_DEVICES"] == "1,3"


def test_core_ids_are_disjoint_on_a_node_and_reused_after_release() -> None:
    pool = NodePool(nodes(1, cores=8, gpus=0))
    a = must(pool.assign(packed(1, 4, ranks=1, threads=3)))
    b = must(pool.assign(packed(2, 4, ranks=2, threads=2)))
    c = must(pool.assign(packed(3, 4, ranks=1, threads=1)))
    assert (a.cores["n0"], b.cores["n0"], c.cores["n0"]) == ([0, 1, 2], [3, 4, 5, 6], [7])
    assert pool.free_cores() == 0
    assert pool.assign(packed(4, 4)) is None
    pool.release(2)
    assert pool.free_cores() == 4
    assert must(pool.assign(packed(4, 4, threads=4))).cores == {"n0": [3, 4, 5, 6]}


# --- what can never fit -------------------------------------------------------------------------


def test_fits_ever() -> None:
    pool = NodePool([Node("a", 8, 4), Node("b", 8, 4), Node("c", 16, 0)])
    assert pool.fits_ever(mpi(1, 3))
    assert not pool.fits_ever(mpi(1, 4))
    assert pool.fits_ever(mpi(1, 1, ranks=16))
    assert not pool.fits_ever(mpi(1, 2, ranks=16))  # only one node has 16 cores
    assert not pool.fits_ever(mpi(1, 3, gpus=1))  # only two nodes have GPUs
    assert not pool.fits_ever(packed(1, 2, threads=17))
    assert not pool.fits_ever(packed(1, 2, ranks=5, gpus=1))
    assert pool.fits_ever(packed(1, 2, ranks=4, gpus=1))
    assert not NodePool([]).fits_ever(packed(1, 2))


def test_a_request_that_never_fits_is_not_assigned_and_changes_nothing() -> None:
    pool = NodePool(nodes(2))
    for r in (mpi(1, 3), packed(2, 2, threads=9), mpi(3, 1, ranks=2, gpus=3)):
        assert not pool.fits_ever(r)
        assert pool.assign(r) is None
    assert pool.idle()
    assert (pool.free_nodes(), pool.free_cores(), pool.free_gpus()) == (2, 16, 8)


def test_fits_ever_ignores_current_load() -> None:
    pool = NodePool(nodes(2))
    pool.assign(mpi(1, 2))
    assert pool.assign(mpi(2, 2)) is None
    assert pool.fits_ever(mpi(2, 2))


# --- errors, counts, protocol ------------------------------------------------------------------


def test_release_unknown_job_raises_key_error() -> None:
    pool = NodePool(nodes(1))
    with pytest.raises(KeyError, match="job 7"):
        pool.release(7)
    pool.assign(packed(7, 2))
    pool.release(7)
    with pytest.raises(KeyError, match="already released"):
        pool.release(7)


def test_assigning_a_job_twice_raises_value_error() -> None:
    pool = NodePool(nodes(2))
    pool.assign(packed(1, 2))
    with pytest.raises(ValueError, match="job 1 is already assigned"):
        pool.assign(mpi(1, 1))
    assert pool.assigned_jobs() == [1]


@pytest.mark.parametrize(
    "fields",
    [(0, 1, 1, 0, 1), (1, 0, 1, 0, 1), (1, 1, 0, 0, 1), (1, 1, 1, -1, 1), (1, 1, 1, 0, 0)],
)
def test_request_rejects_nonsense(fields: tuple[int, int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        Request(1, *fields)


def test_pool_rejects_duplicate_hostnames_and_negative_sizes() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        NodePool([Node("a", 1, 0), Node("a", 1, 0)])
    with pytest.raises(ValueError, match="negative"):
        NodePool([Node("a", -1, 0)])


def test_idle_and_counts() -> None:
    pool = NodePool([Node("a", 8, 2), Node("b", 4, 0)])
    assert pool.idle()
    assert (pool.free_nodes(), pool.free_cores(), pool.free_gpus()) == (2, 12, 2)
    pool.assign(packed(1, 2, ranks=2, threads=2, gpus=1))
    assert not pool.idle()
    assert (pool.free_nodes(), pool.free_cores(), pool.free_gpus()) == (1, 8, 0)
    pool.release(1)
    assert pool.idle()
    assert (pool.free_nodes(), pool.free_cores(), pool.free_gpus()) == (2, 12, 2)


def test_accepts_any_object_with_the_node_fields() -> None:
    @dataclass(frozen=True)
    class Node:
        hostname: str
        cores: int
        gpus: int
        extra: str = "ignored"

    class Plain:
        def __init__(self) -> None:
            self.hostname, self.cores, self.gpus = "p", 2, 1

    pool = NodePool([Node("x", 4, 0), Plain()])
    assert must(pool.assign(mpi(1, 1, gpus=1))).hostnames == ["p"]


# --- task environment ---------------------------------------------------------------------------


def test_task_environment_without_gpus_sets_only_thread_counts() -> None:
    pool = NodePool(nodes(1, gpus=4))
    env = task_environment(must(pool.assign(packed(1, 2, threads=3))), 3)
    assert env == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3"}


def test_task_environment_per_host_of_an_mpi_job() -> None:
    pool = NodePool(nodes(2, gpus=4))
    a = must(pool.assign(mpi(1, 2, ranks=2, gpus=2)))
    assert task_environment(a, 1)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert task_environment(a, 1, "n1")["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    with pytest.raises(KeyError):
        task_environment(a, 1, "elsewhere")
    with pytest.raises(ValueError):
        task_environment(a, 0)


# --- randomized invariants ----------------------------------------------------------------------


def random_request(rng: random.Random, job_id: int) -> Request:
    if rng.random() < 0.3:
        return Request(job_id, rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 3),
                       rng.choice([0, 0, 1, 2]), 1)
    return Request(job_id, 1, rng.randint(1, 3), rng.randint(1, 4), rng.choice([0, 0, 0, 1, 2]),
                   rng.choice([2, 3, 4, 6, 8, 12]))


def check_consistent(
    pool: NodePool, specs: list[Node], live: dict[int, tuple[Request, Assignment]]
) -> None:
    """Rebuild the expected state from the live assignments alone and compare."""
    by_host = {n.hostname: n for n in specs}
    share = {n.hostname: Fraction(0) for n in specs}
    cores: dict[str, set[int]] = {n.hostname: set() for n in specs}
    gpus: dict[str, set[int]] = {n.hostname: set() for n in specs}
    for request, a in live.values():
        assert len(a.hostnames) == len(set(a.hostnames)) == request.nodes
        for host in a.hostnames:
            node = by_host[host]
            assert len(a.cores[host]) == request.cores_per_node
            assert len(a.gpus[host]) == request.gpus_per_node
            assert all(0 <= c < node.cores for c in a.cores[host])
            assert all(0 <= g < node.gpus for g in a.gpus[host])
            assert not cores[host] & set(a.cores[host]), "core double-assigned"
            assert not gpus[host] & set(a.gpus[host]), "GPU double-assigned"
            if request.packed:
                share[host] += Fraction(1, request.node_packing_count)
                cores[host] |= set(a.cores[host])
                gpus[host] |= set(a.gpus[host])
            else:
                assert share[host] == 0, "whole-node job shares its node"
                share[host] += 1
                cores[host] |= set(range(node.cores))
                gpus[host] |= set(range(node.gpus))
            assert share[host] <= 1
    assert pool.free_nodes() == sum(1 for s in share.values() if s == 0)
    assert pool.free_cores() == sum(n.cores - len(cores[n.hostname]) for n in specs)
    assert pool.free_gpus() == sum(n.gpus - len(gpus[n.hostname]) for n in specs)
    assert pool.assigned_jobs() == sorted(live)
    assert pool.idle() == (not live)


def eligible(specs: list[Node], live: dict[int, tuple[Request, Assignment]],
             request: Request) -> list[tuple[str, Fraction]]:
    """Hosts with room for the request now, in pool order, with the node share left on each;
    an answer independent of the pool's own bookkeeping, rebuilt from the live assignments."""
    room: dict[str, list] = {n.hostname: [Fraction(1), n.cores, n.gpus] for n in specs}
    for r, a in live.values():
        for host in a.hostnames:
            if r.packed:
                room[host][0] -= Fraction(1, r.node_packing_count)
                room[host][1] -= r.cores_per_node
                room[host][2] -= r.gpus_per_node
            else:
                room[host] = [Fraction(0), 0, 0]
    need = Fraction(1, request.node_packing_count) if request.packed else Fraction(1)
    return [(h, frac) for h, (frac, c, g) in room.items()
            if frac >= need and c >= request.cores_per_node and g >= request.gpus_per_node]


def check_placement(request: Request, a: Assignment, options: list[tuple[str, Fraction]]) -> None:
    if not request.packed:
        assert a.hostnames == [h for h, _ in options][: request.nodes], "not lowest free nodes"
        return
    partial = [left for _, left in options if left < 1]
    chosen = dict(options)[a.hostnames[0]]
    if partial:
        assert chosen == min(partial), "packed job not on the fullest partly used node"
    else:
        assert a.hostnames[0] == options[0][0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_random_assign_release_keeps_invariants(seed: int) -> None:
    rng = random.Random(seed)
    specs = [Node(f"h{i}", rng.choice([4, 8, 12]), rng.choice([0, 4, 4, 8]))
             for i in range(rng.randint(1, 6))]
    pool = NodePool(specs)
    live: dict[int, tuple[Request, Assignment]] = {}
    placed = 0
    for job_id in range(600):
        if live and rng.random() < 0.4:
            victim = rng.choice(sorted(live))
            pool.release(victim)
            del live[victim]
        else:
            request = random_request(rng, job_id)
            ever = eligible(specs, {}, request)
            assert pool.fits_ever(request) == (len(ever) >= request.nodes)
            options = eligible(specs, live, request)
            a = pool.assign(request)
            assert (a is not None) == (len(options) >= request.nodes), request
            if a is not None:
                check_placement(request, a, options)
                live[job_id] = (request, a)
                placed += 1
        check_consistent(pool, specs, live)
    assert placed > 50
    for victim in rng.sample(sorted(live), len(live)):
        pool.release(victim)
        del live[victim]
        check_consistent(pool, specs, live)
    assert pool.idle()
    assert pool.free_nodes() == len(specs)
    assert pool.free_cores() == sum(n.cores for n in specs)
    assert pool.free_gpus() == sum(n.gpus for n in specs)
