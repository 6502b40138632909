"""A real federation end to end: the coordinator and two site agents as separate processes on
loopback, each with its own PostgreSQL, launchers started by the sites' elastic queues.

What a user relies on: tasks of one workflow run at both sites with dependencies across them;
nothing is lost and nothing runs twice when the coordinator is killed and restarted, when a site
is killed (its tasks finish elsewhere, its stale copies are killed when it returns) or when the
network between a site and the coordinator is cut and restored.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest

from argo_helpers import Federation, TcpProxy, wait_for  # federation: a fixture of conftest.py

pytestmark = pytest.mark.timeout(240)


def spec(fed: Federation, name: str, squares: int, seconds: float = 0.2, report_site: str = "beta") -> dict:
    tasks = [
        {"name": f"t{i}", "app": "run", "params": {"log": str(fed.runs_log), "task": f"t{i}", "seconds": seconds}}
        for i in range(squares)
    ]
    tasks.append({"name": "last", "app": "run", "site": report_site, "parents": [t["name"] for t in tasks],
                  "params": {"log": str(fed.runs_log), "task": "last", "seconds": 0}})  # fmt: skip
    return {"name": name, "tasks": tasks}


def finished(client, workflow_id: int) -> str | None:
    status = client.status(workflow_id)["status"]
    return status if status != "running" else None


def test_a_workflow_spans_two_sites_with_dependencies_across_them(federation):
    fed = federation
    fed.add_site("alpha")
    fed.add_site("beta")
    with fed.client() as client:
        wait_for(lambda: {s["name"] for s in client.sites() if s["status"] == "up"} == {"alpha", "beta"}, 30, "both sites up")
        workflow_id = client.submit(spec(fed, "cross", 6))
        assert client.wait(workflow_id, timeout_s=120) == "finished"
        tasks = {t["name"]: t for t in client.tasks(workflow_id)}
        events = list(client.watch(workflow_id))
    # Placement used both sites, and the pinned fan-in ran where it was pinned, after every parent.
    assert {t["site"] for n, t in tasks.items() if n != "last"} == {"alpha", "beta"}
    assert tasks["last"]["site"] == "beta"
    assert all(t["state"] == "JOB_FINISHED" and t["return_code"] == 0 for t in tasks.values())
    # Each task's one attempt, timed: ready, then placed, then started, then ended, at its site.
    for t in tasks.values():
        (attempt,) = t["attempts"]
        assert attempt["number"] == 1 and attempt["site"] == t["site"] and attempt["state"] == "JOB_FINISHED"
        times = [attempt[k] for k in ("ready_at", "placed_at", "started_at", "ended_at")]
        assert all(times) and times == sorted(times), attempt
    status = json.loads(fed.argo("status", str(workflow_id), "--address", fed.address, "--json").stdout)
    assert status["created_at"] < status["ended_at"]
    assert max(t["attempts"][0]["ended_at"] for t in tasks.values()) <= status["ended_at"]
    runs = fed.runs()
    assert Counter(task for _, task in runs) == Counter({**{f"t{i}": 1 for i in range(6)}, "last": 1})
    assert runs[-1] == ("beta", "last")  # it ran after all six, wherever they ran
    assert {(site, task) for site, task in runs} == {(t["site"], n) for n, t in tasks.items()}
    # The event stream tells the whole story: each task finished once, then the workflow ended.
    done = Counter(e.task_id for e in events if e.to_state and e.site and e.task_id and e.to_state == 10)
    assert done == Counter({t["id"]: 1 for t in tasks.values()})
    assert events[-1].workflow_status == "finished"
    # The local jobs carry the task ids; the sites' own databases agree with the coordinator.
    for name in ("alpha", "beta"):
        local = {job.argo_task_id: job for job in fed.local_jobs(name)}
        assert {t["id"] for t in tasks.values() if t["site"] == name} == set(local)
        assert all(job.state == "JOB_FINISHED" for job in local.values())


@pytest.mark.site_timeout(5.0)
def test_the_coordinator_killed_and_restarted_mid_workflow_loses_nothing_and_runs_nothing_twice(federation):
    fed = federation
    fed.add_site("alpha")
    fed.add_site("beta")
    with fed.client() as client:
        wait_for(lambda: len([s for s in client.sites() if s["status"] == "up"]) == 2, 30, "both sites up")
        workflow_id = client.submit(spec(fed, "restart", 8, seconds=1.0))
        wait_for(lambda: len(fed.runs()) >= 2, 60, "the first tasks to start")
    os.kill(fed.server_pid(), signal.SIGKILL)
    time.sleep(3)  # the sites keep running their tasks and keep the events for later
    fed.start_server()
    with fed.client() as client:
        assert client.wait(workflow_id, timeout_s=150) == "finished"
        tasks = client.tasks(workflow_id)
        events = list(client.watch(workflow_id))
    assert all(t["state"] == "JOB_FINISHED" for t in tasks)
    assert Counter(task for _, task in fed.runs()) == Counter({**{f"t{i}": 1 for i in range(8)}, "last": 1})
    finishes = Counter(e.task_id for e in events if e.to_state == 10)
    assert finishes == Counter({t["id"]: 1 for t in tasks}), "an event applied twice or lost"


@pytest.mark.site_timeout(4.0)
def test_a_killed_site_marked_lost_has_its_tasks_placed_elsewhere_and_its_stale_copies_killed_when_it_returns(federation):
    fed = federation
    fed.add_site("alpha")
    fed.add_site("beta")
    with fed.client() as client:
        wait_for(lambda: len([s for s in client.sites() if s["status"] == "up"]) == 2, 30, "both sites up")
        workflow_id = client.submit(spec(fed, "failover", 6, seconds=4.0, report_site="alpha"))
        wait_for(lambda: any(site == "beta" for site, _ in fed.runs()), 60, "a task running at beta")
        at_beta = {t["id"] for t in client.tasks(workflow_id) if t["site"] == "beta"}
        fed.kill_site("beta")
        wait_for(lambda: {s["name"]: s["status"] for s in client.sites()}["beta"] == "down", 30, "beta marked down")
        # Beta may be running them as far as the coordinator knows: they are held for it...
        time.sleep(2 * fed.site_timeout_s)
        assert {t["id"] for t in client.tasks(workflow_id) if t["site"] == "beta" and t["state"] != "JOB_FINISHED"}
        # ... until the owner says nothing runs there any more: then they go elsewhere once its lease is over.
        lost = fed.argo("site", "lost", "beta", "--data", str(fed.data))
        assert "marked lost" in lost.stdout
        assert client.wait(workflow_id, timeout_s=150) == "finished"
        tasks = {t["id"]: t for t in client.tasks(workflow_id)}
    assert at_beta and all(tasks[t]["site"] == "alpha" and tasks[t]["attempt"] == 2 for t in at_beta)
    assert all(t["state"] == "JOB_FINISHED" for t in tasks.values())
    beta_runs_before = [r for r in fed.runs() if r[0] == "beta"]

    fed.start_agent("beta")  # the site comes back
    with fed.client() as client:
        wait_for(lambda: {s["name"]: s["status"] for s in client.sites()}["beta"] == "up", 30, "beta up again")
    try:
        stale = wait_for(
            lambda: (jobs := fed.local_jobs("beta")) and all(j.state == "USER_KILLED" for j in jobs) and jobs, 30, "stale copies killed"
        )
    except AssertionError as exc:  # say where each copy stands: a copy that ran again ends otherwise
        shown = [(j.argo_task_id, j.state, [(e.to_state, e.message) for e in fed.sites["beta"].history(j.id)])
                 for j in fed.local_jobs("beta")]  # fmt: skip
        raise AssertionError(f"{exc}: {shown}") from None
    assert {j.argo_task_id for j in stale} == at_beta
    assert all("killed by Argo" in fed.sites["beta"].history(j.id)[-1].message for j in stale)
    time.sleep(2)  # give a wrongly revived copy the time to start
    assert [r for r in fed.runs() if r[0] == "beta"] == beta_runs_before, "a stale copy ran again"


def test_a_site_cut_off_from_the_coordinator_catches_up_when_the_network_returns(federation):
    fed = federation
    proxy = TcpProxy(fed.address)
    fed.add_site("alpha", address=proxy.address)
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
        # Long enough that the first four cannot end and be reported before the cut, however late
        # this test sees the first one start.
        workflow_id = client.submit(spec(fed, "cut", 4, seconds=4.0, report_site="alpha"))
        # By name: the list is in name order, where "last" comes before "t0".
        wait_for(lambda: sum(1 for t in client.tasks(workflow_id) if t["name"] != "last" and t["site"]) == 4, 30, "placement")
        wait_for(lambda: len(fed.runs()) >= 1, 60, "a task to start")
        proxy.cut()
        # Cut for longer than two rounds of reconnection attempts, shorter than the site timeout.
        wait_for(lambda: len(fed.runs()) >= 4, 60, "the site to go on running while cut off")
        during = client.status(workflow_id)
        assert during["status"] == "running"
        time.sleep(2)
        proxy.restore()
        assert client.wait(workflow_id, timeout_s=120) == "finished"
        tasks = client.tasks(workflow_id)
        events = list(client.watch(workflow_id))
    assert all(t["state"] == "JOB_FINISHED" and t["attempt"] == 1 for t in tasks)
    assert Counter(task for _, task in fed.runs()) == Counter({"t0": 1, "t1": 1, "t2": 1, "t3": 1, "last": 1})
    assert Counter(e.task_id for e in events if e.to_state == 10) == Counter({t["id"]: 1 for t in tasks})


SPAWNER = (
    "{python} -c 'import sys; from balsam.site import spawn_child; "
    "spawn_child(\"run\", params=dict(log=sys.argv[1], task=\"child\", seconds=0), name=\"child\")' {{log}}"
)


def test_a_task_spawned_at_a_site_joins_the_global_graph(federation):
    import shlex
    import sys

    fed = federation
    site = fed.add_site("alpha", start=False)
    site.add_app("spawner", SPAWNER.format(python=shlex.quote(sys.executable)))
    fed.start_agent("alpha")
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
        workflow_id = client.submit({"name": "grow", "tasks": [{"name": "parent", "app": "spawner", "params": {"log": str(fed.runs_log)}}]})
        assert client.wait(workflow_id, timeout_s=120) == "finished"
        tasks = {t["name"]: t for t in client.tasks(workflow_id)}
    child_job = next(j for j in fed.local_jobs("alpha") if j.name == "child")
    child = tasks[f"alpha:{child_job.id}"]
    assert child["parents"] == [f"{workflow_id}/parent"]
    assert child["state"] == "JOB_FINISHED" and child["site"] == "alpha" and child["app"] == "run"
    assert fed.runs() == [("alpha", "child")]
