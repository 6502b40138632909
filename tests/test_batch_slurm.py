"""Launcher batch jobs on a real single-node Slurm: sbatch, squeue and scancel for real, jobs run for real."""

from __future__ import annotations

import json
import time

import pytest
from launcher_helpers import wait_for
from sqlalchemy import text

from balsam.site.agent import Agent


@pytest.fixture
def slurm_site(site, slurm):
    site.settings.scheduler.name = "slurm"
    site.settings.scheduler.queue = "debug"
    site.settings.save()
    site.add_app("hello", "echo hello {n}")
    yield site
    slurm.run("scancel", "--user=root", check=False)


def _rows(site) -> list[dict]:
    with site.session() as session:
        return [dict(r._mapping) for r in session.execute(text("SELECT * FROM batch_jobs ORDER BY id"))]


def _squeue_state(slurm, scheduler_id: str) -> str:
    return slurm.run("squeue", "-h", "-t", "all", "-j", scheduler_id, "-o", "%T").stdout.strip()


def test_submit_launch_runs_jobs_in_a_slurm_batch_job(slurm_site, slurm, balsam):
    site = slurm_site
    site.add_jobs([{"app": "hello", "params": {"n": i}} for i in range(6)])
    result = balsam("submit-launch -n 1 -t 5 --job-mode serial --until-idle")
    assert result.code == 0, result.err
    (row,) = _rows(site)
    assert row["scheduler"] == "slurm" and row["queue"] == "debug" and row["scheduler_id"].isdigit()
    wait_for(lambda: site.count_jobs() == {"JOB_FINISHED": 6}, timeout=90, what="the Slurm batch job's launcher to finish 6 jobs")
    wait_for(lambda: json.loads(balsam("queue ls --all --json").out)[0]["state"] == "finished", timeout=60, what="Slurm to end the batch job")
    (listed,) = json.loads(balsam("queue ls --all --json").out)
    assert listed["native_state"] == "COMPLETED" and listed["nodes"] == 1 and listed["minutes"] == 5
    assert _squeue_state(slurm, row["scheduler_id"]) == "COMPLETED"
    with site.session() as session:
        assert session.execute(text("SELECT batch_job_id FROM launchers")).scalars().all() == [row["id"]]
    assert "launcher" in (site.settings.batch_dir / f"{row['id']}.out").read_text()


def test_the_elastic_queue_submits_for_the_backlog_and_cancels_what_is_no_longer_needed(slurm_site, slurm):
    site = slurm_site
    limits = site.settings.elastic_queue
    limits.enabled, limits.job_mode, limits.min_wall_min, limits.max_queued = True, "serial", 5, 1
    # A job of someone else's holds the only node, so ours waits in the queue.
    blocker = slurm.run("sbatch", "--parsable", "-p", "debug", "--exclusive", "-N", "1", "-t", "5",
                        "-o", "/dev/null", "--wrap", "sleep 300").stdout.strip()  # fmt: skip
    wait_for(lambda: _squeue_state(slurm, blocker) == "RUNNING", timeout=30, what="the blocking job to run")
    ids = site.add_jobs([{"app": "hello", "params": {"n": i}, "wall_time_min": 1} for i in range(3)])
    agent = Agent(site)
    agent.tick()
    (row,) = _rows(site)
    assert (row["origin"], row["state"], row["nodes"], row["wall_time_min"]) == ("elastic", "queued", 1, 5)
    wait_for(lambda: _squeue_state(slurm, row["scheduler_id"]) == "PENDING", timeout=20, what="our batch job to wait")
    agent.tick()
    assert len(_rows(site)) == 1 and _rows(site)[0]["state"] == "queued"  # covered: no second batch job
    # The backlog goes away (killed): the queued batch job is no longer needed.
    for job_id in ids:
        site.kill_job(job_id)
    agent.tick()
    assert _rows(site)[0]["state"] in ("pending_deletion", "finished")
    wait_for(lambda: agent.tick() and _rows(site)[0]["state"] == "finished", timeout=30, what="the cancel to show")
    assert _rows(site)[0]["status_info"]["native_state"] == "CANCELLED"
    # New work once the node is free: a batch job is submitted, runs, and finishes the backlog.
    slurm.run("scancel", blocker)
    site.add_jobs([{"app": "hello", "params": {"n": i}, "wall_time_min": 1} for i in range(4)])
    agent.tick()
    rows = _rows(site)
    assert len(rows) == 2 and rows[1]["state"] in ("queued", "running")
    wait_for(lambda: site.count_jobs().get("JOB_FINISHED", 0) == 4, timeout=90, what="the elastic batch job to finish 4 jobs")
    wait_for(lambda: agent.tick() and _rows(site)[1]["state"] == "finished", timeout=60, what="the batch job to end")
    assert _rows(site)[1]["status_info"]["native_state"] == "COMPLETED"


def test_a_refused_sbatch_leaves_the_site_consistent_and_is_retried(slurm_site, slurm, caplog):
    site = slurm_site
    site.settings.elastic_queue.enabled = True
    site.settings.elastic_queue.interval_s = 0.2  # back-off measured in tenths of a second
    site.add_job("hello", params={"n": 1}, wall_time_min=1)
    agent = Agent(site)
    slurm.run("scontrol", "update", "PartitionName=debug", "State=INACTIVE")
    try:
        report = agent.tick()
        (row,) = _rows(site)
        assert (row["state"], row["scheduler_id"], row["status_info"]["attempts"]) == ("pending_submission", None, 1)
        assert "sbatch failed (exit 1)" in row["message"] and "Required partition not available" in row["message"]
        assert report["errors"] == {}  # the agent carried on; the failure is on the row and in the log
        assert slurm.run("squeue", "-h", "-o", "%i").stdout.strip() == ""  # nothing half-submitted
        assert any("submission 1 failed (will retry)" in r.getMessage() and "inactive or drain" in r.getMessage() for r in caplog.records)
    finally:
        slurm.run("scontrol", "update", "PartitionName=debug", "State=UP")
    time.sleep(0.3)  # past the first back-off
    agent.tick()
    rows = _rows(site)
    assert len(rows) == 1, rows
    (row,) = rows  # the same row, not a second one
    assert row["state"] in ("queued", "running") and row["scheduler_id"] and row["status_info"]["attempts"] == 1
    wait_for(lambda: site.count_jobs() == {"JOB_FINISHED": 1}, timeout=90, what="the retried batch job to run the job")
