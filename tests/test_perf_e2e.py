"""Performance models end to end: a real program run by a real launcher, then the CLI and the agent.

The program sleeps ``A + B*size/N`` seconds, ``N`` being the number of nodes it was given
(``BALSAM_JOB_NODES``). Several nodes on this one host: the launcher runs inside a pretend Slurm
allocation of 8 nodes (``SLURM_JOB_NODELIST=n[1-8]``) and the app is ``launch="script"``, which
the launcher starts once, here, handing it its node list as a multi-node job script gets it. So
the node counts are the launcher's own placement on a real (if pretend) allocation, and the run
time truly depends on them; only the ranks on the other nodes are not started (there are no
other hosts to start them on).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import balsam_script
from launcher_helpers import launcher_env

from balsam.site import perf_data
from balsam.site.agent import Agent

A, B = 0.2, 0.3  # seconds: serial, and parallel per unit of size on one node

PROGRAM = """
import os, sys, time
nodes = [h for h in os.environ["BALSAM_JOB_NODES"].replace(",", " ").split() if h]
time.sleep({a} + {b} * float(sys.argv[1]) / len(nodes))
"""


def run_jobs(site) -> None:
    env = launcher_env(site, SLURM_JOB_ID="1", SLURM_JOB_NODELIST="n[1-8]")
    env.pop("SLURM_CPUS_ON_NODE", None)
    result = subprocess.run([balsam_script(), "launcher", "--until-idle"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_models_learnt_from_real_runs_size_jobs_and_batch_jobs(site, balsam, tmp_path):
    program = tmp_path / "sim.py"
    program.write_text(PROGRAM.format(a=A, b=B))
    site.add_app("sim", f"{sys.executable} {program} {{size}}", launch="script")
    site.settings.perf.features = {"sim": "size"}
    site.settings.perf.min_efficiency = 0.6
    site.settings.elastic_queue.max_nodes = 8
    site.settings.save()

    # No runs yet: plainly too little data, and the defaults hold.
    result = balsam("app model sim")
    assert result.code == 0 and "no model yet" in result.out and "has 0 usable finished run(s)" in result.out
    result = balsam("job add --app sim -p size=2 --nodes auto --wall-time auto")
    assert result.code == 0, result.err
    assert "too little data for a model" in result.err and "using 1 node and no wall time" in result.err
    early = site.job(int(result.out))
    assert (early.nodes, early.wall_time_min) == (1, None)
    site.remove_job(early.id)
    for bad, message in (("--nodes lots", "--nodes must be a whole number or 'auto', got 'lots'"),
                         ("--wall-time soon", "--wall-time must be a number of minutes or 'auto', got 'soon'"),
                         ("--nodes 0", "nodes must be a whole number from 1 to")):  # fmt: skip
        result = balsam(f"job add --app sim -p size=1 {bad}")
        assert result.code == 1 and message in result.err, result.err

    # Training runs: 1-8 nodes, three sizes.
    site.add_jobs([{"app": "sim", "nodes": n, "params": {"size": x}} for n in (1, 2, 4, 8) for x in (1, 2, 3)])
    run_jobs(site)
    assert site.count_jobs() == {"JOB_FINISHED": 12}

    plot = tmp_path / "model.png"
    result = balsam(f"app model sim --json --plot {plot}")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    model = doc["model"]
    assert model["feature"] == "size" and model["runs"] == 12 and model["node_counts"] == [1, 2, 4, 8]
    # The fit finds the program's own constants (the serial part also holds Python's start-up).
    assert A <= model["serial_s"] < A + 0.15, model
    assert abs(model["parallel_s"] - B) < 0.15 * B, model
    assert model["rms_rel_error"] < 0.15
    assert [row["nodes"] for row in doc["efficiency"]] == [1, 2, 4, 8] and doc["at"] == {"size": 2}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = balsam("app model sim")
    assert result.code == 0, result.err
    assert "T(n) = s + p*size/n" in result.out and "fitted to 12 run(s)" in result.out and "EFFICIENCY" in result.out
    default_plot = site.settings.logs_dir / "model-sim.png"
    assert f"plot: {default_plot}" in result.out and default_plot.read_bytes()[:4] == b"\x89PNG"

    # Held-out runs, at node counts and sizes the fit never saw, land within the reported error.
    s, p = model["serial_s"], model["parallel_s"]
    held = site.add_jobs([{"app": "sim", "nodes": n, "params": {"size": x}} for n in (3, 6) for x in (1.5, 2.5)])
    run_jobs(site)
    with site.session() as session:
        measured = {r.job_id: r for r in perf_data.runs(session, "sim")}
    bound = max(model["max_rel_error"], 3 * model["rms_rel_error"])
    for job_id in held:
        run = measured[job_id]
        predicted = s + p * float(run.params["size"]) / run.nodes
        # Plus 20 ms: the start of a process on this busy 2-core host jitters by about that much,
        # more than 12 training runs of a few tenths of a second can show.
        assert abs(run.seconds - predicted) / predicted <= bound + 0.02 / predicted, (run, predicted, bound)

    # --nodes auto: the widest node count at efficiency >= 0.6 under the fit, computed by hand.
    refit = json.loads(balsam("app model sim --json").out)["model"]
    s, p = refit["serial_s"], refit["parallel_s"]
    efficient = [n for n in range(1, 9) if (s + 2 * p) / (n * (s + 2 * p / n)) >= 0.6 - 1e-9]
    result = balsam("job add --app sim -p size=2 --nodes auto --wall-time auto")
    assert result.code == 0, result.err
    job = site.job(int(result.out))
    assert job.nodes == max(efficient) and 1 < job.nodes < 8, (job.nodes, refit)
    assert f"--nodes auto: {job.nodes} node(s)" in result.err
    # --wall-time auto: above every measured run of that size (on any node count it is shorter).
    longest = max(r.seconds for r in measured.values() if float(r.params["size"]) <= 2 and r.nodes >= job.nodes)
    assert job.wall_time_min * 60 > longest
    assert job.wall_time_min * 60 >= (s + 2 * p / job.nodes) * 1.2
    # A number still works, with auto for the other option.
    result = balsam("job add --app sim -p size=3 --nodes 2 --wall-time auto")
    fixed = site.job(int(result.out))
    assert fixed.nodes == 2 and fixed.wall_time_min * 60 >= (s + 3 * p / 2) * 1.2

    # The elastic queue counts predicted work for jobs without a wall time.
    site.remove_job(job.id)
    site.remove_job(fixed.id)
    waiting = site.add_jobs([{"app": "sim", "nodes": 4, "params": {"size": x}} for x in (1, 2, 3, 4)])
    shapes = [sh for sh in Agent(site).backlog() if sh.nodes == 4]
    assert sum(sh.count for sh in shapes) == len(waiting)
    # The work in all is the predicted one, plus the margin given to the longest job only.
    longest_s = s + p * 4 / 4
    extra = longest_s * ((1 + refit["q_overrun"]) * (1 + site.settings.perf.wall_time_margin) - 1)
    total_s = sum(sh.count * sh.minutes for sh in shapes) * 60
    assert total_s == pytest.approx(sum(s + p * x / 4 for x in (1, 2, 3, 4)) + extra, rel=1e-6), shapes
    assert max(sh.minutes for sh in shapes) * 60 >= s + p * 4 / 4, "the longest job gets the upper estimate"
    assert all(sh.minutes < site.settings.elastic_queue.default_job_min for sh in shapes)
    estimated = site.add_job("sim", params={"size": 1}, nodes=2, wall_time_min=7.5)
    assert [(sh.minutes, sh.count) for sh in Agent(site).backlog() if sh.nodes == 2] == [(7.5, 1)], "a wall time given is kept"
    site.remove_job(estimated.id)
    site.settings.elastic_queue.job_mode = "serial"  # only single-node jobs count there
    assert Agent(site).backlog() == []
    site.settings.elastic_queue.job_mode = "mpi"
    site.settings.perf.elastic_queue = False
    assert {sh.minutes for sh in Agent(site).backlog() if sh.nodes == 4} == {site.settings.elastic_queue.default_job_min}

    # What the site tells Argo in its heartbeats, so placement can compare sites on this app.
    from balsam.site.argo_sync import ArgoSync

    beat, counted = ArgoSync(site).heartbeat()
    assert counted == [], "no launcher runs now: none may start Argo tasks under this heartbeat's lease"
    sent = beat.models["sim"]
    assert (sent.feature, sent.serial_s, sent.parallel_s) == ("size", pytest.approx(s), pytest.approx(p))

    # A feature chosen with `app model --feature` is remembered for everything that uses the model.
    from balsam.site.settings import SiteSettings

    assert balsam("app model sim --feature '' --json").code == 0
    assert "sim" not in SiteSettings.load(site.settings.path).perf.features
    result = balsam("app model sim --feature size")
    assert "saved perf.features['sim'] = 'size'" in result.out
    assert SiteSettings.load(site.settings.path).perf.features == {"sim": "size"}


def test_the_elastic_queue_refits_a_model_once_a_minute_not_at_every_round(site):
    """The agent sizes its queue every round (each second in a demo): a fit reads the app's runs from
    the event log, which grows with the site's history, so each fit is kept a while (FitCache)."""
    site.add_app("quick", "true")
    site.add_jobs([{"app": "quick", "workflow": "runs"} for _ in range(4)])
    result = subprocess.run([balsam_script(), "launcher", "--until-idle", "--job-mode", "serial"], env=launcher_env(site),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    site.add_jobs([{"app": "quick", "workflow": "waiting"} for _ in range(2)])
    default = site.settings.elastic_queue.default_job_min
    agent = Agent(site)
    estimated = {sh.minutes for sh in agent.backlog()}
    assert estimated and max(estimated) < default, "4 runs of `true` make a model: far less than the default"
    for job in site.jobs(workflow="runs"):
        site.remove_job(job.id)  # its runs gone, a fit now finds too little data
    assert {sh.minutes for sh in agent.backlog()} == estimated, "the model fitted a moment ago is kept"
    agent.fits.every_s = 0.0
    assert {sh.minutes for sh in agent.backlog()} == {default}, "a fit older than its period is made again"
