"""Performance models of apps, learnt from their own finished runs: a pure core (no I/O).

The model of one app is Amdahl's law with an optional size parameter::

    T(n)    = s + p / n          (no feature)
    T(n, x) = s + p * x / n      (feature: one numeric job parameter x, chosen by the user)

``n`` is the job's node count, ``s >= 0`` the serial seconds (start-up, fixed-size input and
output: what no node count shortens) and ``p >= 0`` the parallel seconds on one node (per unit of
``x`` with a feature: the work that grows with the problem and is shared among the nodes). We
scale only the parallel part by ``x`` because that is what a size parameter usually means (more
cells, more samples, more steps to share out) while start-up stays fixed; a model where both parts
grow with ``x`` would need more runs before it could tell the two apart.

The fit is a non-negative least-squares problem (``scipy.optimize.nnls``) on the columns
``[1, x/n]``. Each row is divided by its measured time, so what is minimised is the *relative*
error: runs of a few seconds count as much as runs of an hour, and the error reported is the
one a wall-time estimate needs. Non-negativity matters: a free fit of noisy runs easily gives a
slightly negative serial part, which would claim super-linear speed-up for ever larger node counts.

Parallel efficiency is ``E(n) = T(1) / (n * T(n))`` (at a given ``x``). A model is refitted from
the runs every time it is asked for (runs accumulate); nothing is stored.

With fewer than ``min_runs`` usable runs there is no model (``TooLittleData``) and the app's
defaults hold. With runs at one node count only, the model can predict at that node count (the
sum ``s + p*x/n0`` is determined) but not how the time changes with ``n``: efficiency and the
choice of a node count then also report too little data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from balsam.errors import BalsamError

# Relative residuals are (measured - predicted) / predicted: positive when a run took longer than
# predicted, which is what a wall-time estimate must allow for.


class TooLittleData(BalsamError):
    """Not enough runs for the question asked; the app's defaults should hold."""


@dataclass(frozen=True)
class Run:
    """One finished run of an app: what it was given and how long it ran (seconds)."""

    job_id: int
    nodes: int
    seconds: float
    ranks_per_node: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)


def numeric(value: Any) -> float | None:
    """A parameter value as a finite number, or None (booleans and other text are not numbers).

    Parameters from the command line are text (``--param size=4``), so numeric text counts too.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Model:
    """A fitted model of one app (see the module docstring for its form)."""

    app: str
    serial_s: float
    parallel_s: float
    feature: str | None
    runs: int  # runs the fit used
    node_counts: tuple[int, ...]  # the distinct node counts among them, ascending
    # Relative residuals of each run against the fit to the other runs (leave-one-out, see fit()).
    rms_rel_error: float  # root mean square of the relative residuals
    quantile: float  # the level of the two figures below, e.g. 0.95
    q_rel_error: float  # that quantile of |relative residual|
    q_overrun: float  # that quantile of (measured - predicted) / predicted, at least 0
    max_rel_error: float  # the largest |relative residual|
    skipped: int = 0  # runs left out: the feature missing or not a non-negative number

    @property
    def node_dependent(self) -> bool:
        """Whether the runs tell how the time changes with the node count."""
        return len(self.node_counts) >= 2

    def _x(self, x: float | None) -> float:
        if self.feature is None:
            return 1.0
        if x is None:
            raise BalsamError(f"the model of app {self.app!r} needs a value of its feature {self.feature!r}")
        if not math.isfinite(x) or x < 0:
            raise BalsamError(f"feature {self.feature!r} must be a number >= 0, got {x!r}")
        return float(x)

    def _check_nodes(self, nodes: int) -> None:
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise BalsamError(f"a node count must be a whole number >= 1, got {nodes!r}")
        if not self.node_dependent and nodes not in self.node_counts:
            raise TooLittleData(
                f"app {self.app!r} has runs on {self.node_counts[0]} node(s) only; "
                f"its time on {nodes} node(s) is unknown (run it on another node count too)"
            )

    def predict(self, nodes: int, x: float | None = None) -> float:
        """Expected run time in seconds on ``nodes`` nodes (at feature value ``x``)."""
        self._check_nodes(nodes)
        return self.serial_s + self.parallel_s * self._x(x) / nodes

    def upper(self, nodes: int, x: float | None = None, margin: float = 0.0) -> float:
        """A run time (seconds) that the ``quantile`` of runs stayed under, plus a ``margin`` (0.2: 20 %)."""
        return self.predict(nodes, x) * (1.0 + self.q_overrun) * (1.0 + margin)

    def efficiency(self, nodes: int, x: float | None = None) -> float:
        """Parallel efficiency ``T(1) / (n * T(n))``; 1.0 for a run that takes no time at all."""
        if not self.node_dependent:
            raise TooLittleData(f"app {self.app!r} has runs on {self.node_counts[0]} node(s) only; its parallel efficiency is unknown")
        t_n = self.predict(nodes, x)
        if t_n <= 0:
            return 1.0
        return self.predict(1, x) / (nodes * t_n)

    def table(self, max_nodes: int, x: float | None = None) -> list[dict[str, float]]:
        """Rows for nodes 1, 2, 4, ... up to ``max_nodes`` (and ``max_nodes`` itself): time, speed-up, efficiency."""
        rows = []
        for n in node_ladder(max_nodes):
            t = self.predict(n, x)
            rows.append({"nodes": n, "seconds": t, "speedup": self.predict(1, x) / t if t > 0 else float(n),
                         "efficiency": self.efficiency(n, x)})  # fmt: skip
        return rows

    def best_nodes(self, min_efficiency: float, max_nodes: int, x: float | None = None) -> int:
        """The node count (1..max_nodes) with the shortest run whose efficiency stays >= ``min_efficiency``.

        Under this model the time falls and the efficiency falls as nodes are added, so this is
        the widest count still efficient enough; a smaller count wins a tie (no nodes wasted).
        """
        if not 0 < min_efficiency <= 1:
            raise BalsamError(f"min_efficiency must be in (0, 1], got {min_efficiency!r}")
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
            raise BalsamError(f"max_nodes must be a whole number >= 1, got {max_nodes!r}")
        self.efficiency(1, x)  # too little data is an error here, not a silent 1 node
        best, best_t = 1, self.predict(1, x)
        for n in range(2, max_nodes + 1):
            # A small tolerance: float rounding must not reject the count exactly at the limit.
            if self.efficiency(n, x) < min_efficiency - 1e-9:
                break  # efficiency only falls from here
            t = self.predict(n, x)
            if t < best_t * (1 - 1e-9):
                best, best_t = n, t
        return best

    def describe(self) -> dict[str, Any]:
        return {
            "app": self.app, "serial_s": self.serial_s, "parallel_s": self.parallel_s, "feature": self.feature,
            "runs": self.runs, "skipped": self.skipped, "node_counts": list(self.node_counts),
            "rms_rel_error": self.rms_rel_error, "quantile": self.quantile, "q_rel_error": self.q_rel_error,
            "q_overrun": self.q_overrun, "max_rel_error": self.max_rel_error,
        }  # fmt: skip


def node_ladder(max_nodes: int) -> list[int]:
    """1, 2, 4, 8, ... up to ``max_nodes``, and ``max_nodes`` itself when it is no power of two."""
    ladder, n = [], 1
    while n <= max_nodes:
        ladder.append(n)
        n *= 2
    if ladder[-1] != max_nodes:
        ladder.append(max_nodes)
    return ladder


def fit(app: str, runs: Iterable[Run], feature: str | None = None, min_runs: int = 3, quantile: float = 0.95) -> Model:
    """Fit the model of ``app`` to its runs; ``TooLittleData`` with fewer than ``min_runs`` usable ones."""
    if isinstance(min_runs, bool) or not isinstance(min_runs, int) or min_runs < 2:
        raise BalsamError(f"min_runs must be a whole number >= 2, got {min_runs!r}")
    if not 0 < quantile <= 1:
        raise BalsamError(f"quantile must be in (0, 1], got {quantile!r}")
    runs = list(runs)
    rows: list[tuple[int, float, float]] = []  # (nodes, x, seconds)
    skipped = 0
    for run in runs:
        if not (run.nodes >= 1 and math.isfinite(run.seconds) and run.seconds > 0):
            skipped += 1  # a run of no measurable length tells nothing, and would divide by 0
            continue
        x = 1.0 if feature is None else numeric(run.params.get(feature))
        if x is None or x < 0:
            skipped += 1
            continue
        rows.append((run.nodes, x, run.seconds))
    if len(rows) < min_runs:
        why = f"app {app!r} has {len(rows)} usable finished run(s); a model needs at least {min_runs}"
        if skipped and feature is not None:
            why += f" ({skipped} left out: no numeric parameter {feature!r})"
        raise TooLittleData(why)
    # Imported here, not at the top: `balsam job add` imports this module for every job, and numpy
    # with scipy cost a few tenths of a second that only a fit needs.
    import numpy as np
    from scipy.optimize import nnls

    nodes = np.array([r[0] for r in rows], dtype=float)
    xs = np.array([r[1] for r in rows], dtype=float)
    seconds = np.array([r[2] for r in rows], dtype=float)
    design = np.column_stack([np.ones_like(nodes), xs / nodes])
    # Weighting each row by 1/T makes the residuals relative ones (see the module docstring).
    weighted = design / seconds[:, None]
    (serial, parallel), _ = nnls(weighted, np.ones_like(seconds))
    # The errors are those of each run predicted by the fit to the *other* runs (leave-one-out):
    # a fit's residuals on its own runs flatter it, most with few runs, and the figures are
    # meant for runs not yet made (a wall time, a held-out check). For least squares the
    # leave-one-out residual is the residual divided by 1 - h, h the run's leverage; that is exact
    # while both parts are positive (the non-negativity constraint idle), close enough otherwise.
    # h is capped: a run alone at its node count (h = 1) would otherwise have no finite figure.
    leverage = np.einsum("ij,ji->i", weighted, np.linalg.pinv(weighted.T @ weighted) @ weighted.T)
    own = 1.0 - weighted @ np.array([serial, parallel])  # (measured - predicted) / measured
    loo = own / (1.0 - np.minimum(leverage, 0.9))
    # As (measured - predicted) / predicted; a prediction of 0 s or less would make it infinite.
    residual = loo / np.maximum(1.0 - loo, 1e-12)
    return Model(
        app=app, serial_s=float(serial), parallel_s=float(parallel), feature=feature, runs=len(rows),
        node_counts=tuple(sorted({int(n) for n in nodes})), rms_rel_error=float(np.sqrt(np.mean(residual**2))),
        quantile=float(quantile), q_rel_error=float(np.quantile(np.abs(residual), quantile)),
        q_overrun=max(0.0, float(np.quantile(residual, quantile))), max_rel_error=float(np.max(np.abs(residual))),
        skipped=skipped,
    )  # fmt: skip


def backlog_minutes(
    model: Model, nodes: int, count: int, mean_x: float | None, max_x: float | None, margin: float = 0.0
) -> list[tuple[float, int]]:
    """``count`` waiting jobs of one app on ``nodes`` nodes as ``[(minutes, jobs), ...]`` for the elastic queue.

    The time is linear in ``x``, so ``count`` jobs take ``count * T(n, mean x)`` in all: exact
    from two aggregates of the group, with no row per job. The longest of them (at the largest
    ``x``) gets the upper estimate, so a batch job sized for it is long enough; the others share
    what is left of the total.
    """
    if count < 1:
        return []
    longest = model.upper(nodes, max_x, margin) / 60
    if count == 1:
        return [(longest, 1)]
    total = count * model.predict(nodes, mean_x) / 60
    rest = max(total - model.predict(nodes, max_x) / 60, 0.0) / (count - 1)
    return [(longest, 1), (rest, count - 1)] if rest > 0 else [(longest, 1)]

