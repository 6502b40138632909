"""Per-node resource bookkeeping for the launcher: which job holds which nodes, cores and GPUs.

A pure in-memory core: no I/O, no clocks, no processes. The launcher asks `NodePool.assign`
whether a job can start now and gets back the exact hosts, core ids and GPU ids to hand it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Protocol

__all__ = ["NodeLike", "Request", "Assignment", "NodePool", "task_environment"]

# Libraries that size their own thread pools; each would otherwise start one thread per core and
# oversubscribe the cores a packed neighbour is using.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class NodeLike(Protocol):
    """Anything describing a node; read-only properties so frozen dataclasses conform."""

    @property
    def hostname(self) -> str: ...

    @property
    def cores(self) -> int: ...

    @property
    def gpus(self) -> int: ...


@dataclass(frozen=True)
class Request:
    job_id: int
    nodes: int
    ranks_per_node: int
    threads_per_rank: int
    gpus_per_rank: int
    node_packing_count: int

    def __post_init__(self) -> None:
        minimum = {"nodes": 1, "ranks_per_node": 1, "threads_per_rank": 1,
                   "gpus_per_rank": 0, "node_packing_count": 1}
        for name, least in minimum.items():
            value = getattr(self, name)
            if value < least:
                raise ValueError(f"job {self.job_id}: {name} must be >= {least}, got {value}")

    @property
    def packed(self) -> bool:
        # Packing only means something for single-node jobs; MPI jobs always own their nodes.
        return self.nodes == 1 and self.node_packing_count > 1

    @property
    def cores_per_node(self) -> int:
        return self.ranks_per_node * self.threads_per_rank

    @property
    def gpus_per_node(self) -> int:
        return self.ranks_per_node * self.gpus_per_rank


@dataclass(frozen=True)
class Assignment:
    job_id: int
    hostnames: list[str]
    cores: dict[str, list[int]]
    gpus: dict[str, list[int]]


@dataclass
class _Node:
    """A node and who holds it. Its occupancy is ``used / per`` of the node, kept as two integers
    (``per`` a common multiple of the packing counts on it): exact, and an order of magnitude cheaper
    than Fractions on the launcher's hot path."""

    hostname: str
    cores: int
    gpus: int
    used: int
    per: int
    busy_cores: set[int]
    busy_gpus: set[int]

    def free_core_ids(self) -> list[int]:
        return [c for c in range(self.cores) if c not in self.busy_cores]

    def free_gpu_ids(self) -> list[int]:
        return [g for g in range(self.gpus) if g not in self.busy_gpus]

    @property
    def empty(self) -> bool:
        return self.used == 0

    @property
    def full(self) -> bool:
        return self.used >= self.per

    def room(self) -> float:
        return 1 - self.used / self.per  # for ordering only

    def can_hold(self, request: Request) -> bool:
        """Whether the node, as it stands, has room for one node's worth of `request`."""
        k = request.node_packing_count if request.packed else 1
        # used/per + 1/k <= 1, in integers: used * k + per <= per * k
        return (
            self.used * k + self.per <= self.per * k
            and self.cores - len(self.busy_cores) >= request.cores_per_node
            and self.gpus - len(self.busy_gpus) >= request.gpus_per_node
        )

    def add(self, k: int, sign: int) -> None:
        """Take (sign 1) or give back (sign -1) a share of 1/k of the node."""
        per = math.lcm(self.per, k)
        self.used = self.used * (per // self.per) + sign * (per // k)
        self.per = per
        if self.used == 0:
            self.per = 1  # start afresh: the common multiple need not grow for the node's whole life


@dataclass(frozen=True)
class _Hold:
    """What one job holds on one node, so release can undo exactly that: 1/share of it."""

    index: int
    share: int
    cores: frozenset[int]
    gpus: frozenset[int]


class NodePool:
    """The nodes of one batch job and who is using them."""

    def __init__(self, nodes: Iterable[NodeLike]) -> None:
        self._nodes: list[_Node] = []
        seen: set[str] = set()
        for n in nodes:
            if n.hostname in seen:
                raise ValueError(f"duplicate hostname {n.hostname!r} in node list")
            if n.cores < 0 or n.gpus < 0:
                raise ValueError(
                    f"node {n.hostname!r}: negative cores ({n.cores}) or gpus ({n.gpus})"
                )
            seen.add(n.hostname)
            self._nodes.append(_Node(n.hostname, n.cores, n.gpus, 0, 1, set(), set()))
        self._holds: dict[int, list[_Hold]] = {}
        self._free_cores = sum(n.cores for n in self._nodes)  # kept as holds come and go: asked before each start

    def fits_ever(self, request: Request) -> bool:
        """Whether the request could run on this allocation if it were entirely empty."""
        big_enough = sum(
            1
            for n in self._nodes
            if n.cores >= request.cores_per_node and n.gpus >= request.gpus_per_node
        )
        return big_enough >= request.nodes

    def assign(self, request: Request) -> Assignment | None:
        """Reserve resources for `request`, or return None if they are not free right now."""
        if request.job_id in self._holds:
            raise ValueError(f"job {request.job_id} is already assigned")
        if request.packed:
            index = self._place_packed(request)
            if index is None:
                return None
            chosen = [index]
        else:
            free = [i for i, n in enumerate(self._nodes) if n.empty and n.can_hold(request)]
            if len(free) < request.nodes:
                return None
            chosen = free[: request.nodes]
        return self._reserve(request, chosen)

    def release(self, job_id: int) -> None:
        try:
            holds = self._holds.pop(job_id)
        except KeyError:
            raise KeyError(
                f"job {job_id} holds no resources in this pool (never assigned or already released)"
            ) from None
        for hold in holds:
            node = self._nodes[hold.index]
            node.add(hold.share, -1)
            node.busy_cores -= hold.cores
            node.busy_gpus -= hold.gpus
            self._free_cores += len(hold.cores)

    def idle(self) -> bool:
        return not self._holds

    def assigned_jobs(self) -> list[int]:
        return sorted(self._holds)

    def free_nodes(self) -> int:
        """Nodes with nothing on them, i.e. usable by a whole-node job."""
        return sum(1 for n in self._nodes if n.empty)

    def free_cores(self) -> int:
        return self._free_cores

    def free_gpus(self) -> int:
        return sum(n.gpus - len(n.busy_gpus) for n in self._nodes)

    def _place_packed(self, request: Request) -> int | None:
        # Best fit among partly used nodes keeps whole nodes free for MPI jobs; ties go to the
        # lowest index so placement is reproducible.
        partial = [i for i, n in enumerate(self._nodes) if not n.empty and not n.full and n.can_hold(request)]
        if partial:
            return min(partial, key=lambda i: self._room(i) + (i,))
        for i, n in enumerate(self._nodes):
            if n.empty and n.can_hold(request):
                return i
        return None

    def _room(self, index: int) -> tuple[float, int, int]:
        n = self._nodes[index]
        return (n.room(), n.cores - len(n.busy_cores), n.gpus - len(n.busy_gpus))

    def _reserve(self, request: Request, chosen: list[int]) -> Assignment:
        holds: list[_Hold] = []
        cores: dict[str, list[int]] = {}
        gpus: dict[str, list[int]] = {}
        for i in chosen:
            node = self._nodes[i]
            given_cores = node.free_core_ids()[: request.cores_per_node]
            given_gpus = node.free_gpu_ids()[: request.gpus_per_node]
            if request.packed:
                share = request.node_packing_count
                held_cores, held_gpus = frozenset(given_cores), frozenset(given_gpus)
            else:
                # A whole-node job owns the node: keep every id busy so the free counts do not
                # advertise cores nobody else may use.
                share = 1
                held_cores, held_gpus = frozenset(range(node.cores)), frozenset(range(node.gpus))
            node.add(share, 1)
            node.busy_cores |= held_cores
            node.busy_gpus |= held_gpus
            self._free_cores -= len(held_cores)
            holds.append(_Hold(i, share, held_cores, held_gpus))
            cores[node.hostname] = given_cores
            gpus[node.hostname] = given_gpus
        self._holds[request.job_id] = holds
        hostnames = [self._nodes[i].hostname for i in chosen]
        return Assignment(request.job_id, hostnames, cores, gpus)


def task_environment(
    assignment: Assignment, threads_per_rank: int, hostname: str | None = None
) -> dict[str, str]:
    """Environment variables for the task's processes on `hostname` (default: its first node).

    Whole-node jobs always start from empty nodes, so their GPU ids are the same on every node
    and the first node's view is right for an MPI launch too.
    """
    if threads_per_rank < 1:
        raise ValueError(f"threads_per_rank must be >= 1, got {threads_per_rank}")
    host = assignment.hostnames[0] if hostname is None else hostname
    if host not in assignment.gpus:
        raise KeyError(f"job {assignment.job_id} has no resources on host {host!r}")
    env = {name: str(threads_per_rank) for name in THREAD_VARIABLES}
    gpu_ids = assignment.gpus[host]
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
    return env
