"""The measured runs of apps, from the site's event log, and the uses of their performance models.

A run is a job that reached JOB_FINISHED; its run time is the time from its *last* ``-> RUNNING``
event to the ``RUNNING -> RUN_DONE`` event that follows it. The last start counts because an
earlier attempt may have failed, timed out or been taken back from a lost launcher: only the
attempt that succeeded ran to completion. Event timestamps are taken by the launcher when the
process started and when it ended (not when the events were written), so the difference is the
program's own run time plus a few milliseconds of process start. No table of its own is needed:
the event log is the record, and the index ``(job_id, id)`` makes each lookup one probe.

The models (``balsam.site.perfmodel``, a pure core) are fitted afresh from these runs whenever a
command asks for one; the agent's elastic queue, which asks every round, keeps each fit for a
minute (``FitCache``), and the heartbeat to Argo refits once a minute (``argo_sync.MODELS_EVERY_S``).
Here they are put to use:

- ``app_model``: ``balsam app model APP``;
- ``resolve_auto``: ``balsam job add --nodes auto --wall-time auto``;
- ``backlog_models``: the agent's elastic queue, for jobs without a wall time, and the models a
  site's heartbeat sends to Argo;
- ``plot``: the PNG of measured runs and the fit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from balsam.errors import BalsamError
from balsam.inputs import preview
from balsam.site.perfmodel import Model, Run, TooLittleData, fit, node_ladder, numeric
from balsam.site.settings import SiteSettings

# The newest runs first, so a limit keeps the runs that reflect the app and machine as they are now.
_RUNS = """
SELECT j.id, j.parameters, j.nodes, j.ranks_per_node,
       EXTRACT(EPOCH FROM (done.timestamp - start.timestamp)) AS seconds
FROM jobs j
JOIN apps a ON a.id = j.app_id
CROSS JOIN LATERAL (
    SELECT e.id, e.timestamp FROM job_events e
    WHERE e.job_id = j.id AND e.to_state = 'RUNNING' ORDER BY e.id DESC LIMIT 1
) start
CROSS JOIN LATERAL (
    SELECT e.timestamp FROM job_events e
    WHERE e.job_id = j.id AND e.id > start.id AND e.from_state = 'RUNNING' AND e.to_state = 'RUN_DONE'
    ORDER BY e.id LIMIT 1
) done
WHERE a.name = :app AND j.state = 'JOB_FINISHED'
ORDER BY j.id DESC
LIMIT :limit
"""


def runs(session: Session, app: str, limit: int = 2000) -> list[Run]:
    """The measured runs of ``app``, newest first, at most ``limit``."""
    rows = session.execute(text(_RUNS), {"app": app, "limit": limit}).all()
    return [Run(job_id=r.id, nodes=r.nodes, seconds=float(r.seconds), ranks_per_node=r.ranks_per_node,
                params=dict(r.parameters or {})) for r in rows]  # fmt: skip


def _feature(settings: SiteSettings, app: str, parameters: Iterable[str], feature: str | None) -> str | None:
    """The feature asked for (``""``: none), else the site's choice for the app; it must be one of the app's parameters."""
    chosen = settings.perf.features.get(app) if feature is None else (feature or None)
    parameters = list(parameters)
    if chosen is not None and chosen not in parameters:
        known = ", ".join(parameters) or "none"
        raise BalsamError(f"app {app!r} has no parameter {chosen!r} to scale its model by (parameters: {known})")
    return chosen


def app_model(site: Any, app: str, feature: str | None = None) -> tuple[Model, list[Run]]:
    """The model of ``app`` fitted to its runs now, and those runs; ``TooLittleData`` if it has too few.

    ``feature`` None uses ``perf.features[app]`` of the site's settings; ``""`` fits no feature.
    """
    perf = site.settings.perf
    parameters = site.app(app).parameters  # an unknown app is an error here, not "too little data"
    chosen = _feature(site.settings, app, parameters, feature)
    with site.session() as session:
        measured = runs(session, app, perf.max_runs)
    return fit(app, measured, chosen, perf.min_runs, perf.wall_time_quantile), measured


def max_nodes(settings: SiteSettings) -> int:
    """The widest job the site plans for: its batch jobs' ``max_nodes`` when the elastic queue is on, else 64."""
    limits = settings.elastic_queue
    return limits.max_nodes if limits.enabled or limits.max_nodes > 1 else 64


@dataclass
class Resolved:
    """What ``resolve_auto`` decided, with notes for the user (stderr)."""

    nodes: int | None
    wall_time_min: float | None
    notes: list[str] = field(default_factory=list)


def resolve_auto(site: Any, app: str, params: Mapping[str, Any], nodes: int | str | None, wall_time: float | str | None) -> Resolved:
    """Replace ``"auto"`` node counts and wall times of a new job of ``app`` by its model's estimates.

    ``--nodes auto``: the fastest node count whose predicted parallel efficiency is at least
    ``perf.min_efficiency``, up to ``max_nodes(settings)``. ``--wall-time auto``: the model's
    ``perf.wall_time_quantile`` estimate plus ``perf.wall_time_margin``, in minutes, on the
    job's node count (the one just chosen, the one given, or 1). With too little data the
    defaults hold (1 node, no wall time) and a note says why.
    """
    result = Resolved(nodes=nodes if nodes != "auto" else None, wall_time_min=wall_time if wall_time != "auto" else None)
    if nodes != "auto" and wall_time != "auto":
        return result
    perf = site.settings.perf
    try:
        model, _ = app_model(site, app)
        x = None
        if model.feature is not None:
            x = numeric(params.get(model.feature))
            if x is None or x < 0:
                raise TooLittleData(f"the job's parameter {model.feature!r} is not a number >= 0, which app {app!r}'s model scales by")
    except TooLittleData as exc:
        defaults = [what for what, asked in (("1 node", nodes == "auto"), ("no wall time", wall_time == "auto")) if asked]
        result.notes.append(f"too little data for a model: {exc}; using {' and '.join(defaults)}")
        if nodes == "auto":
            result.nodes = 1
        return result
    if nodes == "auto":
        widest = max_nodes(site.settings)
        try:
            result.nodes = model.best_nodes(perf.min_efficiency, widest, x)
            result.notes.append(
                f"--nodes auto: {result.nodes} node(s), predicted {model.predict(result.nodes, x):.3g} s at efficiency "
                f"{model.efficiency(result.nodes, x):.2f} (minimum {perf.min_efficiency:g}, at most {widest} nodes)"
            )
        except TooLittleData as exc:
            result.nodes = 1
            result.notes.append(f"--nodes auto: {exc}; using 1 node")
    if wall_time == "auto":
        on = int(result.nodes or 1)
        try:
            seconds = model.upper(on, x, perf.wall_time_margin)
        except TooLittleData as exc:
            result.notes.append(f"--wall-time auto: {exc}; no wall time set")
            return result
        # Minutes, rounded up (never down: an estimate cut short would stop the run early), and
        # above 0, which a wall time must be.
        result.wall_time_min = max(math.ceil(seconds / 60 * 1e4) / 1e4, 1e-4)
        result.notes.append(
            f"--wall-time auto: {result.wall_time_min:g} min on {on} node(s) (the {perf.wall_time_quantile:g} quantile "
            f"of the fit plus {perf.wall_time_margin:.0%})"
        )
    return result


def backlog_models(session: Session, settings: SiteSettings, apps: Iterable[str]) -> dict[str, Model]:
    """Usable models of ``apps`` (those with too little data are left out), one fit per app."""
    perf = settings.perf
    models = {}
    for app in set(apps):
        try:
            models[app] = fit(app, runs(session, app, perf.max_runs), perf.features.get(app), perf.min_runs, perf.wall_time_quantile)
        except TooLittleData:
            continue
    return models


REFIT_EVERY_S = 60.0


class FitCache:
    """Each app's model (or its want of data) kept for ``every_s`` seconds.

    The elastic queue asks at every round (each second in a demo), while runs accumulate over
    minutes. A fit reads up to ``perf.max_runs`` runs, each with two lookups in the event log, and
    solves a least-squares problem: 67 ms of a round at 2,000 runs (bench/agent_round.py), growing
    with the site's history. A model at most a minute old sizes batch jobs as well.
    """

    def __init__(self, every_s: float = REFIT_EVERY_S) -> None:
        self.every_s = every_s
        self._fitted: dict[str, tuple[float, Model | None]] = {}  # app -> (when fitted, model or None: too little data)

    def models(self, site: Any, settings: SiteSettings, apps: Iterable[str]) -> dict[str, Model]:
        """The usable models of ``apps``; those not fitted within ``every_s`` are fitted again, in one session."""
        wanted = set(apps)
        now = time.monotonic()
        stale = [app for app in wanted if app not in self._fitted or now - self._fitted[app][0] >= self.every_s]
        if stale:
            with site.session() as session:
                fresh = backlog_models(session, settings, stale)
            for app in stale:
                self._fitted[app] = (now, fresh.get(app))
        return {app: model for app in wanted if (model := self._fitted[app][1]) is not None}


def plot(model: Model, measured: list[Run], path: Path, widest: int) -> Path:
    """A PNG of the measured run times against node count, with the fitted curves."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a login node; and the CLI must never open a window
    import matplotlib.pyplot as plt

    points = [(r.nodes, numeric(r.params.get(model.feature)) if model.feature else None, r.seconds) for r in measured]
    points = [p for p in points if model.feature is None or (p[1] is not None and p[1] >= 0)]
    top = max([widest, *(p[0] for p in points)])
    curve_nodes = [n for n in range(1, top + 1)]
    values: list[float | None] = [None]
    if model.feature is not None:
        distinct = sorted({p[1] for p in points})
        # At most four curves: the smallest, the largest and two between, so the plot stays readable.
        values = sorted({distinct[round(i * (len(distinct) - 1) / 3)] for i in range(4)}) if distinct else []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, x in enumerate(values):
        color = f"C{i}"
        label = "fit" if x is None else f"fit, {model.feature} = {x:g}"
        if model.node_dependent:
            ax.plot(curve_nodes, [model.predict(n, x) for n in curve_nodes], color=color, label=label)
        mine = [p for p in points if p[1] == x]
        ax.scatter([p[0] for p in mine], [p[2] for p in mine], color=color, s=18,
                   label="measured" if x is None else f"measured, {model.feature} = {x:g}")  # fmt: skip
    others = [p for p in points if model.feature is not None and p[1] not in values]
    if others:
        ax.scatter([p[0] for p in others], [p[2] for p in others], color="grey", s=12, label="measured, other sizes")
    ax.set_xscale("log", base=2)
    ax.set_xticks(node_ladder(top))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("nodes")
    ax.set_ylabel("run time (s)")
    form = "s + p/n" if model.feature is None else f"s + p*{model.feature}/n"
    ax.set_title(f"{model.app}: T = {form}, s = {model.serial_s:.3g} s, p = {model.parallel_s:.3g} s "
                 f"({model.runs} runs, RMS error {model.rms_rel_error:.1%})", fontsize=9)  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path


def parse_auto(value: str | None, option: str, kind: type) -> int | float | str | None:
    """A ``--nodes``/``--wall-time`` value from the command line: ``"auto"``, a number of ``kind``, or None.

    Only the form is checked here; the range (nodes >= 1, a finite wall time > 0) is checked with
    the rest of the job, so its messages are the same as for a job from a file.
    """
    if value is None:
        return None
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return kind(value.strip())
    except ValueError:
        what = "a whole number" if kind is int else "a number of minutes"
        raise BalsamError(f"{option} must be {what} or 'auto', got {preview(value)}") from None
