"""Argo's placement policy: which HPC site should run each ready task.

A pure function over plain data. The coordinator snapshots its sites (health, apps, load
estimates from heartbeats) and the tasks that just became ready, calls `place`, and acts on
the answer. Nothing here does I/O or mutates its inputs, so the policy can be tested
exhaustively and a decision can be replayed from logged inputs.

Policy
------
1. Order. Tasks are considered round-robin across workflows: the first task of each
   workflow (workflows in order of first appearance), then the second of each, and so on;
   within a workflow the given order is kept. When caps bind, the free slots are thereby
   shared between workflows instead of going to whichever one submitted the most tasks.

2. Candidates. A site is a candidate for a task when it is healthy, offers the task's app,
   is below its cap (`in_flight` plus the tasks this call already placed there is less than
   `max_tasks`; 0 means no cap), and is the pinned site if the task is pinned.

3. Choice. The candidate with the least expected completion time wins; ties go to the site
   whose name sorts first, so the answer is deterministic:

       queue_wait_s + (backlog_node_s + assigned_node_s) / nodes + runtime + transfer

   runtime          the site's performance model of the app when it has one
                    (serial_s + parallel_s * x / nodes, x the task's feature parameter, or 1),
                    else site.runtime_s[app] when the site has a flat estimate, else
                    wall_time_min * 60 when the user gave one, else DEFAULT_RUNTIME_S.
                    A model whose feature the task lacks (or gives as no number >= 0) does not apply.
   transfer         sum over the task's inputs that live on another site of
                    transfer_latency_s + size_bytes / bandwidth_Bps (an unknown size
                    counts as DEFAULT_INPUT_BYTES).
   assigned_node_s  node-seconds of the tasks this call already placed on the site; a
                    task's node-seconds are runtime * nodes / node_packing_count.
   backlog_node_s   the work already at the site: what `SiteView.loaded` computes from the
                    tasks placed there and not finished (each by its own runtime, as above,
                    at that site) and the site's own jobs (DEFAULT_RUNTIME_S node-seconds each).

   Charging every placement to its site is what makes a burst of ready tasks spread over
   sites in proportion to their nodes, instead of all landing on the site that looked best
   before the burst. The transfer term gives data affinity: a child follows its large
   input unless that site is busier by more than the cost of moving the input.

4. Waiting. A task with no candidate is reported in `Placement.waiting` with a reason that
   names the pinned site or the app: pinned site unknown, down, or lacking the app; no
   healthy site offers the app; or every site that could take it is at its cap.

The inputs are validated when the views are built (non-negative, finite numbers, nodes and
packing counts >= 1), so the cost above is always a finite number and the choice is exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

DEFAULT_RUNTIME_S = 60.0
DEFAULT_INPUT_BYTES = 100_000_000

# Uncapped sites get this many free slots, so the hot loop can treat every site alike.
_NO_CAP = 1 << 62


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _non_negative(x: float) -> bool:
    # Written this way so that NaN fails too.
    return math.isfinite(x) and x >= 0


@dataclass(frozen=True)
class RuntimeModel:
    """A site's fit of one app's run time: serial_s + parallel_s * x / nodes (x: the feature, or 1)."""

    serial_s: float
    parallel_s: float
    feature: str = ""

    def __post_init__(self) -> None:
        _check(_non_negative(self.serial_s) and _non_negative(self.parallel_s), f"bad runtime model {self}")

    def seconds(self, nodes: int, params: Mapping[str, object]) -> float | None:
        """The predicted run time, or None when the task does not give the feature as a number >= 0."""
        x = 1.0
        if self.feature:
            value = params.get(self.feature)
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                return None
            try:
                x = float(value)
            except ValueError:
                return None
            if not _non_negative(x):
                return None
        return self.serial_s + self.parallel_s * x / nodes


@dataclass(frozen=True)
class SiteView:
    name: str
    healthy: bool
    apps: frozenset[str]
    nodes: int = 1
    queue_wait_s: float = 0.0
    backlog_node_s: float = 0.0
    in_flight: int = 0
    max_tasks: int = 0
    # A mapping cannot be hashed; leaving it out of the hash keeps views usable in sets.
    runtime_s: Mapping[str, float] = field(default_factory=dict, hash=False)
    runtime_models: Mapping[str, RuntimeModel] = field(default_factory=dict, hash=False)
    bandwidth_Bps: float = 100e6
    transfer_latency_s: float = 5.0

    def __post_init__(self) -> None:
        at = f"site {self.name!r}"
        _check(self.nodes >= 1, f"{at}: nodes must be >= 1, got {self.nodes}")
        _check(_non_negative(self.queue_wait_s), f"{at}: bad queue_wait_s {self.queue_wait_s}")
        _check(_non_negative(self.backlog_node_s), f"{at}: bad backlog_node_s {self.backlog_node_s}")
        _check(self.in_flight >= 0, f"{at}: in_flight must be >= 0, got {self.in_flight}")
        _check(self.max_tasks >= 0, f"{at}: max_tasks must be >= 0, got {self.max_tasks}")
        bw = self.bandwidth_Bps
        _check(math.isfinite(bw) and bw > 0, f"{at}: bandwidth_Bps must be positive, got {bw}")
        lat = self.transfer_latency_s
        _check(_non_negative(lat), f"{at}: bad transfer_latency_s {lat}")
        for app, est in self.runtime_s.items():
            _check(_non_negative(est), f"{at}: bad runtime estimate {est} for app {app!r}")


    @classmethod
    def loaded(cls, placed: Sequence[Queued] = (), other_jobs: int = 0, **fields) -> SiteView:
        """The view of a site with its backlog worked out from the tasks already ``placed`` there
        (and not finished) and ``other_jobs`` of its own that Argo did not place."""
        _check(other_jobs >= 0, f"site {fields.get('name')!r}: other_jobs must be >= 0, got {other_jobs}")
        bare = cls(**fields)
        node_s = other_jobs * DEFAULT_RUNTIME_S
        for q in placed:
            _check(q.count >= 0, f"site {bare.name!r}: a negative count of placed tasks")
            node_s += q.count * _runtime_s(q.task, bare) * q.task.nodes / q.task.node_packing_count
        return replace(bare, backlog_node_s=node_s, in_flight=sum(q.count for q in placed))


@dataclass(frozen=True)
class Queued:
    """``count`` tasks of one shape (``task``: its app, nodes, packing, wall time and parameters)
    placed at a site and not finished yet."""

    task: ReadyTask
    count: int = 1


@dataclass(frozen=True)
class InputFile:
    site: str
    size_bytes: int | None = None

    def __post_init__(self) -> None:
        size = self.size_bytes
        _check(size is None or size >= 0, f"input on site {self.site!r}: bad size_bytes {size}")


@dataclass(frozen=True)
class ReadyTask:
    id: str
    app: str
    workflow_id: int = 0
    pin: str | None = None
    nodes: int = 1
    node_packing_count: int = 1
    wall_time_min: float | None = None
    inputs: tuple[InputFile, ...] = ()
    params: Mapping[str, object] = field(default_factory=dict, hash=False)  # for the sites' models' features

    def __post_init__(self) -> None:
        at = f"task {self.id!r}"
        _check(self.nodes >= 1, f"{at}: nodes must be >= 1, got {self.nodes}")
        packing = self.node_packing_count
        _check(packing >= 1, f"{at}: node_packing_count must be >= 1, got {packing}")
        wall = self.wall_time_min
        _check(wall is None or _non_negative(wall), f"{at}: bad wall_time_min {wall}")


@dataclass
class Placement:
    assigned: list[tuple[str, str]] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)


# The three pieces of the cost are shared by `expected_completion_s` and `place`, so that the
# floats `place` compares are bit-for-bit the ones a caller (or a test) can recompute.


def _load_s(site: SiteView, extra_node_s: float) -> float:
    return site.queue_wait_s + (site.backlog_node_s + extra_node_s) / site.nodes


def _runtime_s(task: ReadyTask, site: SiteView) -> float:
    model = site.runtime_models.get(task.app)
    if model is not None:
        seconds = model.seconds(task.nodes, task.params)
        if seconds is not None:
            return seconds
    est = site.runtime_s.get(task.app)
    if est is not None:
        return est
    if task.wall_time_min is not None:
        return task.wall_time_min * 60.0
    return DEFAULT_RUNTIME_S


def _transfer_s(
    inputs: tuple[InputFile, ...],
    site_name: str,
    latency_s: float,
    bandwidth_Bps: float,
) -> float:
    total = 0.0
    for f in inputs:
        if f.site != site_name:
            size = DEFAULT_INPUT_BYTES if f.size_bytes is None else f.size_bytes
            total += latency_s + size / bandwidth_Bps
    return total


def expected_completion_s(task: ReadyTask, site: SiteView, extra_node_s: float = 0.0) -> float:
    """Seconds until `task` would finish at `site`, given `extra_node_s` of work placed there
    beyond its reported backlog. Does not check that the site is a candidate."""
    return (
        _load_s(site, extra_node_s)
        + _runtime_s(task, site)
        + _transfer_s(task.inputs, site.name, site.transfer_latency_s, site.bandwidth_Bps)
    )


def _round_robin(tasks: Sequence[ReadyTask]) -> Sequence[ReadyTask]:
    by_workflow: dict[int, list[ReadyTask]] = {}
    for t in tasks:
        by_workflow.setdefault(t.workflow_id, []).append(t)
    if len(by_workflow) <= 1:
        return tasks
    # Each round drops the workflows already exhausted, so the total work stays linear even
    # when one workflow is far longer than the others.
    queues = list(by_workflow.values())
    out: list[ReadyTask] = []
    depth = 0
    while queues:
        queues = [q for q in queues if len(q) > depth]
        out.extend(q[depth] for q in queues)
        depth += 1
    return out


def place(tasks: Sequence[ReadyTask], sites: Sequence[SiteView]) -> Placement:
    """Decide a site for each ready task, or say why it has to wait (see the module docstring)."""
    names = [s.name for s in sites]
    _check(len(set(names)) == len(names), f"duplicate site names in {sorted(names)}")
    _check(len({t.id for t in tasks}) == len(tasks), "duplicate task ids")

    # Sites are indexed in name order: trying candidates in that order with a strict '<'
    # breaks cost ties by name without comparing names in the hot loop.
    views = sorted(sites, key=lambda s: s.name)
    index = {s.name: i for i, s in enumerate(views)}
    names = [s.name for s in views]
    latency = [s.transfer_latency_s for s in views]
    bandwidth = [s.bandwidth_Bps for s in views]
    slots = [s.max_tasks - s.in_flight if s.max_tasks else _NO_CAP for s in views]
    assigned_node_s = [0.0] * len(views)
    load = [_load_s(s, 0.0) for s in views]

    # Tasks that share app, pin, wall time and node shape share candidates, runtimes and
    # node-seconds; computing those once per group keeps per-task work to a few float ops.
    # Each entry: [candidates as (site index, runtime, node-seconds), reason if none,
    #              reason if all capped].
    groups: dict[tuple, list] = {}
    # A model's estimate depends on the task's feature parameter: such tasks group by its value too.
    features: dict[str, tuple[str, ...]] = {}
    for s in views:
        for app, model in s.runtime_models.items():
            if model.feature and model.feature not in features.get(app, ()):
                features[app] = (*features.get(app, ()), model.feature)

    def build_group(t: ReadyTask) -> list:
        offering = [i for i, s in enumerate(views) if t.app in s.apps and (t.pin is None or s.name == t.pin)]
        cands = []
        for i in offering:
            if views[i].healthy:
                rt = _runtime_s(t, views[i])
                cands.append((i, rt, rt * t.nodes / t.node_packing_count))
        return [tuple(cands), None if cands else _no_site_reason(t, views, index, offering), None]

    result = Placement()
    assigned = result.assigned
    waiting = result.waiting
    for t in _round_robin(tasks):
        key = (t.app, t.pin, t.wall_time_min, t.nodes, t.node_packing_count)
        if t.app in features:
            key += tuple(repr(t.params.get(f)) for f in features[t.app])
        group = groups.get(key)
        if group is None:
            group = groups[key] = build_group(t)
        best = -1
        best_c = 0.0
        best_ns = 0.0
        inputs = t.inputs
        if inputs:
            for i, rt, ns in group[0]:
                if slots[i] > 0:
                    c = load[i] + rt
                    # Transfer can only add cost, so a site already no better needs no transfer sum.
                    if best >= 0 and c >= best_c:
                        continue
                    c += _transfer_s(inputs, names[i], latency[i], bandwidth[i])
                    if best < 0 or c < best_c:
                        best, best_c, best_ns = i, c, ns
        else:
            for i, rt, ns in group[0]:
                if slots[i] > 0:
                    c = load[i] + rt
                    if best < 0 or c < best_c:
                        best, best_c, best_ns = i, c, ns
        if best < 0:
            if group[1] is None and group[2] is None:
                group[2] = _capped_reason(t, views, group[0])
            waiting[t.id] = group[1] or group[2]
            continue
        assigned.append((t.id, names[best]))
        slots[best] -= 1
        assigned_node_s[best] += best_ns
        load[best] = _load_s(views[best], assigned_node_s[best])
    return result


def candidacy(sites: Sequence[SiteView]) -> tuple:
    """What decides whether a task has a candidate among ``sites`` (step 2 of the policy), and
    the reason it waits when it has none (step 4): each site's name, health, apps and room under
    its cap. Two snapshots with equal candidacy give every task the same candidates; so a task that
    waited under one, and nothing was placed since, waits under the other, for the same reason."""
    return tuple(sorted((s.name, s.healthy, s.apps, s.max_tasks, s.in_flight if s.max_tasks else 0) for s in sites))


def _no_site_reason(t: ReadyTask, views: list[SiteView], index: dict[str, int], offering: list[int]) -> str:
    if t.pin is not None:
        if t.pin not in index:
            return f"pinned to site {t.pin!r}, which is not known"
        site = views[index[t.pin]]
        problems = []
        if not site.healthy:
            problems.append("is down")
        if t.app not in site.apps:
            problems.append(f"does not offer app {t.app!r}")
        return f"pinned to site {t.pin!r}, which " + " and ".join(problems)
    reason = f"no healthy site offers app {t.app!r}"
    if offering:
        # Naming the down sites tells the operator which outage is holding the task.
        reason += " (offered only by down sites: " + ", ".join(views[i].name for i in offering) + ")"
    return reason


def _capped_reason(t: ReadyTask, views: list[SiteView], cands: tuple) -> str:
    # Within one call slots only fill up, so the reason built for the first capped task of a
    # group stays true for the rest of it.
    if t.pin is not None:
        return f"pinned site {t.pin!r} is at its cap of {views[cands[0][0]].max_tasks} tasks in flight"
    caps = ", ".join(f"{views[i].name} ({views[i].max_tasks})" for i, _, _ in cands)
    return f"all healthy sites offering app {t.app!r} are at their cap of tasks in flight: {caps}"
