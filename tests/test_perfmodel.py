"""The pure core of performance models (balsam.site.perfmodel), and the [perf] settings."""

from __future__ import annotations

import math
import random

import pytest

from balsam.errors import BalsamError
from balsam.site.perf_data import parse_auto
from balsam.site.perfmodel import Run, TooLittleData, backlog_minutes, fit, node_ladder, numeric
from balsam.site.settings import PerfSettings, SiteSettings


def amdahl_runs(s: float, p: float, shapes, feature: str | None = None) -> list[Run]:
    """Exact runs of T = s + p*x/n for (nodes, x) shapes (x ignored without a feature)."""
    runs = []
    for i, (n, x) in enumerate(shapes):
        params = {feature: x} if feature else {}
        runs.append(Run(job_id=i + 1, nodes=n, seconds=s + p * (x if feature else 1) / n, params=params))
    return runs


def test_exact_recovery_of_serial_and_parallel_parts():
    model = fit("sim", amdahl_runs(3.0, 40.0, [(1, 0), (2, 0), (4, 0), (8, 0), (16, 0)]))
    assert model.serial_s == pytest.approx(3.0, rel=1e-9)
    assert model.parallel_s == pytest.approx(40.0, rel=1e-9)
    assert model.feature is None and model.runs == 5 and model.node_counts == (1, 2, 4, 8, 16)
    assert model.rms_rel_error < 1e-9 and model.q_rel_error < 1e-9 and model.max_rel_error < 1e-9
    assert model.predict(32) == pytest.approx(3 + 40 / 32)
    assert model.upper(32) == pytest.approx(3 + 40 / 32), "no overrun in exact data: the upper estimate is the prediction"


def test_feature_scales_the_parallel_part_only():
    shapes = [(1, 1), (2, 4), (4, 2), (8, 8), (3, 5), (1, 2)]
    model = fit("sim", amdahl_runs(0.5, 2.0, shapes, "size"), feature="size")
    assert (model.serial_s, model.parallel_s) == (pytest.approx(0.5), pytest.approx(2.0))
    assert model.predict(4, 10) == pytest.approx(0.5 + 2 * 10 / 4)
    assert model.predict(4, 0) == pytest.approx(0.5), "size 0: only the serial part is left"
    # Text values, as `job add --param size=4` stores them, are numbers too.
    as_text = [Run(r.job_id, r.nodes, r.seconds, params={"size": str(r.params["size"])}) for r in amdahl_runs(0.5, 2.0, shapes, "size")]
    assert fit("sim", as_text, feature="size").parallel_s == pytest.approx(2.0)
    with pytest.raises(BalsamError, match="needs a value of its feature 'size'"):
        model.predict(2)
    with pytest.raises(BalsamError, match="must be a number >= 0"):
        model.predict(2, -1.0)


def test_without_the_feature_a_size_dependent_app_fits_badly_and_says_so():
    runs = amdahl_runs(0.5, 2.0, [(1, 1), (2, 4), (4, 2), (8, 8), (3, 5), (1, 2)], "size")
    plain = fit("sim", runs)
    assert plain.rms_rel_error > 0.3 and plain.q_overrun > 0.3


def test_noisy_runs_report_an_error_that_covers_new_runs():
    rng = random.Random(7)

    def noisy(k):
        return [Run(i, n, (1.0 + 8.0 / n) * (1 + rng.uniform(-0.05, 0.05))) for i, n in enumerate(rng.choice([1, 2, 4, 8]) for _ in range(k))]

    model = fit("sim", noisy(200), quantile=0.95)
    assert model.serial_s == pytest.approx(1.0, rel=0.1) and model.parallel_s == pytest.approx(8.0, rel=0.05)
    assert 0.02 < model.rms_rel_error < 0.05 and model.q_rel_error <= model.max_rel_error
    held_out = noisy(200)
    within = sum(abs(r.seconds - model.predict(r.nodes)) / model.predict(r.nodes) <= model.q_rel_error for r in held_out)
    assert within >= 0.85 * len(held_out)
    overran = sum(r.seconds > model.upper(r.nodes) for r in held_out)
    assert overran <= 0.15 * len(held_out)


def test_efficiency_table():
    model = fit("sim", amdahl_runs(2.0, 30.0, [(1, 1), (2, 1), (4, 2), (8, 2), (1, 3)], "size"), feature="size")
    table = model.table(8, 2)
    assert [row["nodes"] for row in table] == [1, 2, 4, 8]
    for row in table:
        n = row["nodes"]
        assert row["seconds"] == pytest.approx(2 + 60 / n)
        assert row["efficiency"] == pytest.approx(62 / (n * (2 + 60 / n)))
        assert row["speedup"] == pytest.approx(62 / (2 + 60 / n))
    assert table[0]["efficiency"] == pytest.approx(1.0)
    assert node_ladder(64) == [1, 2, 4, 8, 16, 32, 64] and node_ladder(12) == [1, 2, 4, 8, 12] and node_ladder(1) == [1]


def test_nodes_chosen_at_the_efficiency_limit():
    model = fit("sim", amdahl_runs(2.0, 30.0, [(1, 1), (2, 1), (4, 2), (8, 2)], "size"), feature="size")
    # E(n) = 62 / (2n + 60) at size 2: exactly 0.5 at n = 32.
    assert model.best_nodes(0.5, 64, 2) == 32
    assert model.best_nodes(0.5, 16, 2) == 16, "never past the site's widest"
    assert model.best_nodes(0.75, 64, 2) == math.floor((62 / 0.75 - 60) / 2)
    assert model.best_nodes(1.0, 64, 2) == 1
    assert model.best_nodes(0.5, 64, 0.5) == 9  # E = 17 / (2n + 15) >= 0.5 up to n = 9.5
    serial_only = fit("s", amdahl_runs(5.0, 0.0, [(1, 0), (2, 0), (4, 0)]))
    assert serial_only.best_nodes(0.1, 64) == 1, "no speed-up: no second node"
    parallel_only = fit("p", amdahl_runs(0.0, 10.0, [(1, 0), (2, 0), (4, 0)]))
    assert parallel_only.best_nodes(0.5, 64) == 64


def test_quantile_wall_time_lies_above_the_runs():
    rng = random.Random(3)
    runs = [Run(i, n, (0.2 + 1.0 / n) * rng.uniform(0.9, 1.3)) for i, n in enumerate([1, 2, 4] * 20)]
    model = fit("sim", runs, quantile=0.95)
    assert model.q_overrun > 0
    above = [r for r in runs if model.upper(r.nodes) >= r.seconds]
    assert len(above) >= 0.95 * len(runs)
    assert model.upper(2, margin=0.2) == pytest.approx(model.predict(2) * (1 + model.q_overrun) * 1.2)
    full = fit("sim", runs, quantile=1.0)
    assert all(full.upper(r.nodes) >= r.seconds * (1 - 1e-9) for r in runs), "the 1.0 quantile covers every run"


def test_too_few_runs():
    with pytest.raises(TooLittleData, match="has 2 usable finished run"):
        fit("sim", amdahl_runs(1, 1, [(1, 0), (2, 0)]))
    with pytest.raises(TooLittleData, match="has 0 usable"):
        fit("sim", [])
    # Runs without a usable feature value do not count, and the message says why.
    runs = amdahl_runs(1, 1, [(1, 1), (2, 2), (4, 3)], "size") + [Run(9, 2, 1.0, params={"size": "big"}), Run(10, 2, 1.0)]
    with pytest.raises(TooLittleData, match=r"2 left out: no numeric parameter 'size'"):
        fit("sim", runs[1:], feature="size")
    assert fit("sim", runs, feature="size").skipped == 2


def test_one_node_count_predicts_there_only():
    model = fit("sim", [Run(i, 4, t) for i, t in enumerate([2.0, 2.2, 1.8])])
    assert not model.node_dependent
    assert model.predict(4) == pytest.approx(2.0, rel=0.02)
    for ask in (lambda: model.predict(8), lambda: model.efficiency(4), lambda: model.best_nodes(0.5, 64), lambda: model.table(8)):
        with pytest.raises(TooLittleData, match="runs on 4 node"):
            ask()


def test_bad_inputs():
    model = fit("sim", amdahl_runs(1, 4, [(1, 0), (2, 0), (4, 0)]))
    for nodes in (0, -1, 1.5, True):
        with pytest.raises(BalsamError, match="node count must be a whole number >= 1"):
            model.predict(nodes)
    for limit in (0, 1.5):
        with pytest.raises(BalsamError, match="min_efficiency must be in"):
            model.best_nodes(limit, 8)
    with pytest.raises(BalsamError, match="max_nodes must be"):
        model.best_nodes(0.5, 0)
    with pytest.raises(BalsamError, match="min_runs must be"):
        fit("sim", [], min_runs=1)
    with pytest.raises(BalsamError, match="quantile must be"):
        fit("sim", [], quantile=0)
    # Runs of no measurable length, or of broken records, are left out rather than dividing by zero.
    runs = amdahl_runs(1, 4, [(1, 0), (2, 0), (4, 0)]) + [Run(7, 2, 0.0), Run(8, 2, float("nan")), Run(9, 0, 1.0)]
    assert fit("sim", runs).skipped == 3
    assert [numeric(v) for v in (3, 2.5, "4", " 1e3 ", True, "abc", None, "nan", "inf", [1])] == [3.0, 2.5, 4.0, 1000.0] + [None] * 6


def test_backlog_minutes_keep_the_total_work_and_the_longest_job():
    model = fit("sim", amdahl_runs(6.0, 60.0, [(1, 1), (2, 2), (4, 3), (1, 4)], "size"), feature="size")
    # Ten jobs on 2 nodes, sizes averaging 3, the largest 5.
    parts = backlog_minutes(model, 2, 10, 3.0, 5.0, margin=0.5)
    assert sum(c for _, c in parts) == 10
    longest, rest = parts
    assert longest == (pytest.approx((6 + 60 * 5 / 2) * 1.5 / 60), 1)
    assert rest[0] * 9 + (6 + 150) / 60 == pytest.approx(10 * (6 + 90) / 60), "the total is exact"
    assert backlog_minutes(model, 2, 1, 3.0, 3.0) == [(pytest.approx(96 / 60), 1)]
    assert backlog_minutes(model, 2, 0, None, None) == []


def test_parse_auto_options():
    assert parse_auto("auto", "--nodes", int) == "auto" and parse_auto(" AUTO ", "--wall-time", float) == "auto"
    assert parse_auto("4", "--nodes", int) == 4 and parse_auto("2.5", "--wall-time", float) == 2.5
    assert parse_auto(None, "--nodes", int) is None
    with pytest.raises(BalsamError, match=r"--nodes must be a whole number or 'auto', got '2.5'"):
        parse_auto("2.5", "--nodes", int)
    with pytest.raises(BalsamError, match=r"--wall-time must be a number of minutes or 'auto', got 'soon'"):
        parse_auto("soon", "--wall-time", float)


def test_perf_settings_defaults_checks_and_round_trip(tmp_path):
    perf = PerfSettings()
    assert (perf.min_efficiency, perf.wall_time_quantile, perf.wall_time_margin, perf.min_runs) == (0.5, 0.95, 0.2, 3)
    perf.check()
    for bad, message in [
        ({"min_efficiency": 0}, "perf.min_efficiency must be a number in"), ({"min_efficiency": 1.5}, "perf.min_efficiency"),
        ({"wall_time_quantile": True}, "perf.wall_time_quantile"), ({"wall_time_margin": -0.1}, "perf.wall_time_margin"),
        ({"min_runs": 1}, "perf.min_runs must be a whole number >= 2"), ({"max_runs": 2, "min_runs": 3}, "below min_runs"),
        ({"features": {"sim": 3}}, "perf.features must map"), ({"elastic_queue": "yes"}, "perf.elastic_queue"),
    ]:
        with pytest.raises(BalsamError, match=message):
            PerfSettings(**bad).check()
    settings = SiteSettings(path=tmp_path, name="s")
    settings.perf = PerfSettings(min_efficiency=0.7, features={"sim": "size"})
    settings.save()
    assert SiteSettings.load(tmp_path).perf == settings.perf
    text = settings.settings_file.read_text().replace("min_efficiency = 0.7", "min_efficiency = 2")
    settings.settings_file.write_text(text)
    with pytest.raises(BalsamError, match="perf.min_efficiency must be a number in"):
        SiteSettings.load(tmp_path)
