"""Faults of a real machine room, with real processes killed at bad moments: nothing lost, nothing
run twice (docs/argo.md, "What is promised under failures").

Each test builds a coordinator and site agents as processes (``argo_helpers.Federation``), each site
with its own PostgreSQL, launchers started by the elastic queues, and counts every run of every
task in one log shared by all sites.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from argo_helpers import Federation, wait_for

pytestmark = pytest.mark.timeout(300)


def tasks_of(fed: Federation, name: str, count: int, seconds: float, pin: str | None = None) -> dict:
    tasks = [{"name": f"t{i}", "app": "run", "params": {"log": str(fed.runs_log), "task": f"{name}-t{i}", "seconds": seconds},
              **({"site": pin} if pin else {})} for i in range(count)]  # fmt: skip
    return {"name": name, "tasks": tasks}


def ran(fed: Federation, prefix: str) -> Counter:
    return Counter(task for _, task in fed.runs() if task.startswith(prefix + "-"))


def test_a_site_joining_a_recreated_coordinator_runs_every_new_task_and_keeps_its_old_jobs(federation):
    fed = federation
    fed.add_site("alpha")
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
        first = client.submit(tasks_of(fed, "old", 4, 0.1))
        assert client.wait(first, timeout_s=120) == "finished"
    old_jobs = {j.id: j.argo_task_id for j in fed.local_jobs("alpha")}
    assert len(old_jobs) == 4

    # The coordinator is lost and made anew at the same address: its ids start again at 1.
    from balsam.argo.server import stop_server

    stop_server(fed.data)
    shutil.rmtree(fed.data)
    fed.start_server()
    fed.enrol("alpha")  # a new coordinator knows no credential of the old one
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 60, "alpha up with the new coordinator")
        second = client.submit(tasks_of(fed, "new", 4, 0.1))
        assert second == first  # the same ids as the old coordinator's tasks
        assert client.wait(second, timeout_s=120) == "finished"
        assert all(t["state"] == "JOB_FINISHED" for t in client.tasks(second))
    assert ran(fed, "new") == Counter({f"new-t{i}": 1 for i in range(4)})
    assert ran(fed, "old") == Counter({f"old-t{i}": 1 for i in range(4)})
    jobs = fed.local_jobs("alpha")
    assert len(jobs) == 8
    # The old jobs and their history stay; the new ones are told apart by their coordinator.
    assert {j.id: j.argo_task_id for j in jobs if j.id in old_jobs} == old_jobs
    assert len({j.argo_coordinator for j in jobs}) == 2


@pytest.mark.site_timeout(3.0)
def test_an_agent_silent_for_three_site_timeouts_while_its_launchers_run_runs_nothing_twice(federation):
    fed = federation
    fed.add_site("alpha")
    fed.add_site("beta")
    with fed.client() as client:
        wait_for(lambda: sorted(s["status"] for s in client.sites()) == ["up", "up"], 30, "both sites up")
        workflow_id = client.submit(tasks_of(fed, "fence", 60, 1.0))
        wait_for(lambda: sum(1 for site, t in fed.runs() if site == "alpha") >= 2, 60, "tasks running at alpha")
        agent = fed.agent_pid("alpha")
        os.kill(agent, signal.SIGKILL)  # the agent alone: its launchers go on
        silent_from = time.monotonic()
        wait_for(lambda: {s["name"]: s["status"] for s in client.sites()}["alpha"] == "down", 30, "alpha marked down")
        time.sleep(max(0.0, 3 * fed.site_timeout_s - (time.monotonic() - silent_from)))
        fed.start_agent("alpha")
        assert client.wait(workflow_id, timeout_s=240) == "finished"
        tasks = client.tasks(workflow_id)
    assert all(t["state"] == "JOB_FINISHED" for t in tasks)
    runs = ran(fed, "fence")
    assert runs == Counter({f"fence-t{i}": 1 for i in range(60)}), {t: n for t, n in runs.items() if n != 1}


def confirmed_jobs(fed: Federation, name: str) -> int:
    """How many of the site's Argo jobs a launcher may start as far as their confirmation goes."""
    from sqlalchemy import text

    with fed.sites[name].session() as session:
        return session.scalar(text("SELECT count(*) FROM jobs j, argo_link l WHERE j.argo_seq <= l.confirmed"))


@pytest.mark.site_timeout(8.0)
def test_a_launcher_started_after_the_sites_last_heartbeat_starts_no_argo_task_placed_elsewhere_meanwhile(federation):
    # The coordinator places a silent site's tasks elsewhere once its lease is over and every launcher
    # its last heartbeat reported has ended. A batch job that starts after that heartbeat, while the
    # lease still holds, was not reported: were it to start the site's tasks, they would run twice.
    fed = federation
    beta = fed.add_site("beta", start=False)
    beta.settings.elastic_queue.enabled = False  # no launcher until this test starts one
    beta.settings.save()
    fed.start_agent("beta")
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "beta up")
        workflow_id = client.submit(tasks_of(fed, "late", 3, 5.0))
        wait_for(lambda: confirmed_jobs(fed, "beta") == 3, 60, "beta's three jobs confirmed")
        fed.kill_site("beta")  # its agent: its heartbeats said no launcher runs, and its lease holds a while
        env = {**os.environ, "BALSAM_SITE_NAME": "beta"}
        launcher = subprocess.Popen([str(Path(sys.executable).with_name("balsam")), "launcher", "--site", str(beta.settings.path),
                                     "--job-mode", "serial"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            fed.add_site("alpha")
            assert client.wait(workflow_id, timeout_s=150) == "finished"
            tasks = client.tasks(workflow_id)
        finally:
            launcher.kill()
            launcher.wait()
    assert {t["site"] for t in tasks} == {"alpha"} and all(t["attempt"] == 2 for t in tasks)
    assert ran(fed, "late") == Counter({f"late-t{i}": 1 for i in range(3)}), fed.runs()
    assert not [task for site, task in fed.runs() if site == "beta"], "the late launcher started a task of the lease it was not counted in"


JAM = """
CREATE FUNCTION jam() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk quota exceeded'; END $$;
CREATE TRIGGER jam BEFORE INSERT ON jobs FOR EACH STATEMENT EXECUTE FUNCTION jam();
"""


@pytest.mark.site_timeout(3.0)
def test_a_site_that_cannot_apply_what_it_is_sent_is_shown_stalled_and_its_tasks_go_elsewhere(federation):
    from sqlalchemy import text

    fed = federation
    alpha = fed.add_site("alpha")
    fed.add_site("beta")
    with fed.client() as client:
        wait_for(lambda: sorted(s["status"] for s in client.sites()) == ["up", "up"], 30, "both sites up")
        with alpha.session() as session:  # alpha's database refuses every new job: it cannot apply an assignment
            session.execute(text(JAM))
        workflow_id = client.submit(tasks_of(fed, "jam", 8, 0.2))
        stalled = wait_for(lambda: (s := {x["name"]: x for x in client.sites()}["alpha"])["status"] == "stalled" and s, 60, "alpha stalled")
        assert "disk quota exceeded" in stalled["channel_error"]
        assert client.wait(workflow_id, timeout_s=120) == "finished"
        tasks = client.tasks(workflow_id)
        assert {t["site"] for t in tasks} == {"beta"}
        news = [e.message for e in client.watch(0, until_done=False, timeout_s=3) if not e.task_id and e.site == "alpha"]
        assert any("site alpha stalled" in m and "placed again" in m for m in news), news
        shown = fed.argo("sites", "--address", fed.address).stdout
        assert "stalled" in shown and "disk quota exceeded" in shown

        with alpha.session() as session:  # the disk has room again
            session.execute(text("DROP TRIGGER jam ON jobs"))
        wait_for(lambda: {s["name"]: s["status"] for s in client.sites()}["alpha"] == "up", 60, "alpha up again")
        # What it applies now is killed at once: those tasks finished elsewhere.
        stale = wait_for(lambda: (jobs := fed.local_jobs("alpha")) and all(j.state == "USER_KILLED" for j in jobs) and jobs, 30,
                         "alpha's stale copies killed")  # fmt: skip
        assert stale
    time.sleep(2)
    assert ran(fed, "jam") == Counter({f"jam-t{i}": 1 for i in range(8)})
