"""Launcher batch jobs on the local scheduler, end to end: real batch scripts, real launchers, real jobs."""

from __future__ import annotations

import copy
import json
import os
import time
import tomllib

import pytest
import tomli_w

from launcher_helpers import wait_for
from sqlalchemy import text

from balsam.errors import BalsamError
from balsam.site.agent import Agent
from balsam.site.batch import BatchQueue, LaunchRequest
from balsam.site.db.models import BatchJob
from balsam.site.scheduler.base import BatchRequest, SchedulerError
from balsam.site.settings import SiteSettings


def _finished(site, count: int) -> bool:
    return site.count_jobs().get("JOB_FINISHED", 0) == count


def _batch_rows(site) -> list[dict]:
    with site.session() as session:
        return [dict(r._mapping) for r in session.execute(text("SELECT * FROM batch_jobs ORDER BY id"))]


def test_submit_launch_runs_the_sites_jobs_in_a_local_batch_job(site, balsam):
    site.add_app("hello", "echo hello {n}")
    site.add_jobs([{"app": "hello", "params": {"n": i}} for i in range(5)])
    result = balsam("submit-launch -n 1 -t 5 --job-mode serial --until-idle")
    assert result.code == 0, result.err
    assert "submitted to local as 1" in result.out
    wait_for(lambda: _finished(site, 5), timeout=60, what="5 jobs finished by the batch job's launcher")
    queue = BatchQueue(site)
    wait_for(lambda: (queue.sync(), queue.get(1).state)[1] == "finished", timeout=30, what="the batch job to end")
    row = queue.get(1)
    assert row.status_info["exit_code"] == 0 and row.message == "completed"
    # The launcher knew which batch job it ran in, and said so in the database.
    with site.session() as session:
        assert session.execute(text("SELECT batch_job_id FROM launchers")).scalars().all() == [1]
    listed = json.loads(balsam("queue ls --all --json").out)
    assert [(b["id"], b["state"], b["nodes"], b["minutes"], b["job_mode"]) for b in listed] == [(1, "finished", 1, 5, "serial")]
    script = (site.settings.batch_dir / "1.sh").read_text()
    assert "--job-mode serial --wall-time 5 --until-idle" in script and "BALSAM_BATCH_JOB_ID=1" in script


def test_queue_rm_stops_a_running_batch_job(site, balsam):
    site.add_app("nap", "sleep {s}")
    job = site.add_job("nap", params={"s": 300})
    assert balsam("submit-launch -n 1 -t 10").code == 0
    wait_for(lambda: site.job(job.id).state == "RUNNING", timeout=30, what="the job to run")
    result = balsam("queue rm 1")
    assert result.code == 0, result.err
    queue = BatchQueue(site)
    wait_for(lambda: (queue.sync(), queue.get(1).state)[1] == "finished", timeout=60, what="the batch job to end")
    assert queue.get(1).message == "cancelled"
    # The launcher stopped its task on the way out; the job is not left RUNNING for a dead launcher.
    assert site.job(job.id).state != "RUNNING"
    assert balsam("queue rm 1").code == 1


def test_a_refused_submission_is_recorded_and_named(site, balsam):
    # (`balsam submit-launch -n 2` asks the local scheduler for the 1 node it has, saying so: tests/test_compat.py)
    with pytest.raises(SchedulerError, match="the local scheduler runs on this host only"):
        BatchQueue(site).submit(LaunchRequest(nodes=2, minutes=5))
    rows = _batch_rows(site)
    assert [(r["state"], r["scheduler_id"]) for r in rows] == [("submit_failed", None)]
    assert "1 node" in rows[0]["message"]
    assert balsam("queue ls --json").out.strip() == "[]"  # nothing live


def test_bad_requests_are_refused_before_anything_is_stored(site, balsam):
    for args, message in [
        ("submit-launch -n 0 -t 5", "nodes >= 1"),
        ("submit-launch -n 1 -t 0", "at least 1 minute"),
        ("submit-launch -n 1 -t 5 --job-mode fast", "job mode must be"),
    ]:
        result = balsam(args)
        assert result.code == 1 and message in result.err, (args, result.err)
    site.settings.scheduler.allowed_projects = ["chem"]
    site.settings.save()
    result = balsam("submit-launch -n 1 -t 5 -A physics")
    assert result.code == 1 and "project 'physics' is not allowed at this site; allowed: chem" in result.err
    assert _batch_rows(site) == []


def test_the_agent_sizes_batch_jobs_to_the_backlog_and_they_finish_it(site):
    site.settings.elastic_queue.enabled = True
    site.settings.elastic_queue.job_mode = "serial"
    site.settings.elastic_queue.min_wall_min = 5
    site.settings.elastic_queue.linger_s = 1.0  # its launcher stays a second once idle, then gives its node back
    agent = Agent(site)
    report = agent.tick()
    assert report["errors"] == {} and _batch_rows(site) == []  # nothing to do, nothing submitted
    site.add_app("hello", "echo hello {n}")
    site.add_jobs([{"app": "hello", "params": {"n": i}, "wall_time_min": 1} for i in range(20)])
    report = agent.tick()
    assert report["elastic_queue"]["backlog_jobs"] == 20
    rows = _batch_rows(site)
    assert [(r["origin"], r["nodes"], r["wall_time_min"], r["job_mode"], r["state"]) for r in rows] == [
        ("elastic", 1, 20, "serial", "queued")
    ]
    agent.tick()
    assert len(_batch_rows(site)) == 1  # the batch job already covers the backlog: no second one
    wait_for(lambda: _finished(site, 20), timeout=90, what="the elastic batch job to finish the backlog")
    wait_for(lambda: agent.tick() and _batch_rows(site)[0]["state"] == "finished", timeout=30, what="the batch job to end")
    agent.tick()
    assert len(_batch_rows(site)) == 1  # no backlog, no new batch job


def test_new_work_starts_a_launcher_at_once_not_at_the_agents_next_round(site):
    """A job added while no launcher runs (a task Argo just assigned) wakes the agent by NOTIFY: its
    launcher is asked for within a few seconds, not after the round of a minute set here."""
    import threading

    site.settings.elastic_queue.enabled = True
    site.settings.elastic_queue.job_mode = "serial"
    site.settings.elastic_queue.min_wall_min = 5
    site.settings.elastic_queue.interval_s = 60.0
    site.settings.elastic_queue.linger_s = 0.5
    site.add_app("hello", "echo hello")
    agent = Agent(site)
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: agent.status.get("last_tick"), timeout=30, what="the agent's first round")
        time.sleep(0.5)  # that round saw no backlog; the next is a minute away
        added = time.monotonic()
        site.add_job("hello")
        wait_for(lambda: _batch_rows(site), timeout=20, what="a launcher batch job for the new job")
        assert time.monotonic() - added < 20
        wait_for(lambda: _finished(site, 1), timeout=60, what="the job to run")
    finally:
        stop.set()
        runner.join(timeout=15)
    assert not runner.is_alive()  # a stop still ends the agent's wait at once


def test_the_agent_retries_a_failed_submission_and_stays_consistent(site, monkeypatch):
    site.settings.elastic_queue.enabled = True
    site.settings.elastic_queue.interval_s = 0.01  # back-off of a few hundredths of a second
    site.add_app("hello", "echo hello")
    site.add_job("hello")
    agent = Agent(site)
    scheduler = agent.queue.scheduler
    real_submit = scheduler.submit
    calls = []

    def refuse_twice(request):
        calls.append(request.name)
        if len(calls) <= 2:
            raise SchedulerError("sbatch failed (exit 1): sbatch: error: Slurm controller not responding")
        return real_submit(request)

    monkeypatch.setattr(scheduler, "submit", refuse_twice)
    report = agent.tick()
    assert "controller not responding" not in json.dumps(report["errors"])  # logged and kept on the row, not a step failure
    rows = _batch_rows(site)
    assert [(r["state"], r["scheduler_id"], r["status_info"]["attempts"]) for r in rows] == [("pending_submission", None, 1)]
    assert "controller not responding" in rows[0]["message"]
    time.sleep(0.05)
    agent.tick()  # the same row again, not a second one
    rows = _batch_rows(site)
    assert [(r["state"], r["status_info"]["attempts"]) for r in rows] == [("pending_submission", 2)]
    time.sleep(0.1)
    agent.tick()
    rows = _batch_rows(site)
    assert [r["state"] for r in rows] in (["queued"], ["running"], ["finished"])
    assert calls == [f"balsam-testsite-{rows[0]['id']}-{rows[0]['status_info']['token']}"] * 3
    wait_for(lambda: _finished(site, 1), timeout=60, what="the job to run once the submission went through")


def _running_at_a_lost_launcher(site):
    """A job RUNNING under a launcher that stopped renewing its lease a minute ago."""
    site.add_app("hello", "echo hello")
    job = site.add_job("hello")
    with site.session() as session:
        launcher_id = session.execute(text(
            "INSERT INTO launchers (hostname, pid, job_mode, node_count, lease_seconds, state, message, heartbeat_at) "
            "VALUES ('gone', 1, 'mpi', 1, 0.1, 'running', '', now() - interval '1 minute') RETURNING id"
        )).scalar_one()  # fmt: skip  # a lease shorter than the database has been up: its start renews every lease
        session.execute(text("UPDATE jobs SET state = 'RUNNING', launcher_id = :l WHERE id = :j"), {"l": launcher_id, "j": job.id})
    return job


def test_the_agent_takes_back_jobs_of_a_lost_launcher_with_no_launcher_running(site):
    job = _running_at_a_lost_launcher(site)
    Agent(site).tick()
    assert site.job(job.id).state == "RESTART_READY"
    assert "lost: no heartbeat" in site.history(job.id)[-1].message


def test_a_job_killed_while_its_lost_launcher_held_it_keeps_the_kill_as_its_last_word(site):
    # Argo's kill order reaches a returning site before the agent reaps the launchers that died with it.
    job = _running_at_a_lost_launcher(site)
    site.kill_job(job.id, "killed while its launcher was gone")
    Agent(site).tick()
    assert site.job(job.id).state == "USER_KILLED"
    assert site.history(job.id)[-1].message == "killed while its launcher was gone"
    with site.session() as session:
        assert session.execute(text("SELECT launcher_id FROM jobs WHERE id = :j"), {"j": job.id}).scalar_one() is None


def test_site_start_runs_the_agent_as_a_daemon_and_stop_ends_it(site, balsam):
    settings = site.settings
    result = balsam("site start")
    assert result.code == 0, result.err
    assert "agent started (pid" in result.out
    pid = int((settings.logs_dir / "agent.pid").read_text())
    os.kill(pid, 0)
    assert "already running" in balsam("site start").out
    wait_for(lambda: (settings.logs_dir / "agent-status.json").exists(), timeout=20, what="the agent's first round")
    status = json.loads(balsam("site status --json").out)
    assert status["agent"]["running"] and status["agent"]["pid"] == pid and status["agent"]["errors"] == {}
    result = balsam("site stop")
    assert f"agent (pid {pid}) stopped" in result.out
    status = json.loads(balsam("site status --json").out)
    assert status["agent"]["running"] is False
    assert "agent stopped" in (settings.logs_dir / "agent.log").read_text()


def test_settings_with_bad_limits_are_refused_with_the_file_named(site):
    path = site.settings.settings_file
    original = tomllib.loads(path.read_text())
    for section, key, value, message in [
        ("elastic_queue", "max_nodes", 0, "elastic_queue.max_nodes must be a whole number >= 1"),
        ("elastic_queue", "min_wall_min", 90, "min_wall_min (90) is above max_wall_min (60)"),
        ("elastic_queue", "speed", 3, "unknown setting elastic_queue.speed"),
        ("scheduler", "name", "torque", "scheduler.name must be one of local, slurm, pbs, cobalt, lsf"),
    ]:
        doc = copy.deepcopy(original)
        doc[section][key] = value
        path.write_text(tomli_w.dumps(doc))
        with pytest.raises(BalsamError) as refused:
            SiteSettings.load(site.settings.path)
        assert message in str(refused.value) and str(path) in str(refused.value)
    path.write_text(tomli_w.dumps(original))
    assert SiteSettings.load(site.settings.path).elastic_queue.max_nodes == 1


def test_a_submission_that_went_through_before_it_was_recorded_is_adopted_not_repeated(site):
    """As after a crash between the scheduler's reply and the database write."""
    site.add_app("nap", "sleep 1")
    queue = BatchQueue(site)
    with site.session() as session:
        session.add(BatchJob(scheduler="local", nodes=1, wall_time_min=5, job_mode="mpi", state="pending_submission",
                             origin="elastic", status_info={"attempts": 0, "token": "abc123"}))  # fmt: skip
    row = queue.get(1)
    script, output = queue.write_script(row)
    scheduler_id = queue.scheduler.submit(BatchRequest(script=script, nodes=1, minutes=5, name=queue.job_name(row), output=output))
    queue.sync()
    assert queue.get(1).scheduler_id == scheduler_id and queue.get(1).state in ("running", "finished")
    assert queue.submit_pending() == []  # nothing left to submit: no second batch job
    assert len(queue.scheduler.status()) == 1
    queue.cancel(1)
