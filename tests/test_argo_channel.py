"""The sync channel carries what the coordinator sends, whatever its size, and placement tells why a
task waits: a real coordinator and a real site agent as processes.

A site's channel once kept gRPC's default 4 MiB receive limit while the coordinator sent envelopes
of up to 16 MiB: a batch of large assignments then jammed the site for good. Both ends now build
their channels in one place (``balsam.wire.channel``) with one limit, and envelopes are sized by
bytes (``balsam.wire.outbox``).
"""

from __future__ import annotations

import json

import pytest

from argo_helpers import Federation, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.site_timeout(3.0)]


def _quiet_site(fed: Federation, name: str):
    """A site whose elastic queue is off: assignments become jobs there and wait, nothing runs them."""
    site = fed.add_site(name, start=False)
    site.settings.elastic_queue.enabled = False
    site.settings.save()
    fed.start_agent(name)
    return site


def test_a_ten_mebibyte_batch_of_assignments_arrives_at_a_site(federation):
    fed = federation
    site = _quiet_site(fed, "alpha")
    payload = "x" * 9000  # 1,200 tasks of 9 kB: 10.8 MB of assignments, sent at once
    tasks = [{"name": f"t{i}", "app": "run", "params": {"log": str(fed.runs_log), "task": f"{i}-{payload}", "seconds": 0}}
             for i in range(1200)]  # fmt: skip
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "the site up")
        workflow_id = client.submit({"name": "big", "tasks": tasks})
        jobs = wait_for(lambda: (found := fed.local_jobs("alpha")) and len(found) == 1200 and found, 90, "1,200 jobs at the site")
        assert {job.parameters["task"] for job in jobs} == {f"{i}-{payload}" for i in range(1200)}
        assert {job.argo_task_id for job in jobs} == {f"{workflow_id}/t{i}" for i in range(1200)}
        # The channel stayed usable: the site is up, and nothing is left unacknowledged there.
        assert [s["status"] for s in client.sites()] == ["up"]
    log = (site.settings.logs_dir / "agent.log").read_text()
    assert "larger than max" not in log


def test_a_waiting_task_says_why_in_the_cli_its_json_and_the_watch_stream(federation):
    fed = federation
    fed.add_site("alpha", start=False)
    fed.start_agent("alpha")
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
        fed.kill_site("alpha")
        wait_for(lambda: [s["status"] for s in client.sites()] == ["down"], 30, "alpha down")
        workflow_id = client.submit({"name": "pinned", "tasks": [
            {"name": "a", "app": "run", "site": "alpha", "params": {"log": str(fed.runs_log), "task": "a", "seconds": 0}},
        ]})  # fmt: skip
        reason = "pinned to site 'alpha', which is down"
        task = wait_for(lambda: (t := client.task(f"{workflow_id}/a"))["waiting"] and t, 30, "a waiting reason")
        assert task["waiting"] == reason and task["state"] == "READY"
        events = [e for e in client.watch(workflow_id, until_done=False, timeout_s=3) if e.message.startswith("waiting")]
        assert [e.message for e in events] == [f"waiting: {reason}"]

    shown = fed.argo("tasks", str(workflow_id), "--address", fed.address).stdout
    assert reason in shown
    listed = json.loads(fed.argo("tasks", str(workflow_id), "--address", fed.address, "--json").stdout)
    assert listed[0]["waiting"] == reason

    # Once the site is back, the task is placed, runs, and no longer waits.
    fed.start_agent("alpha")
    with fed.client() as client:
        assert client.wait(workflow_id, timeout_s=90) == "finished"
        assert client.task(f"{workflow_id}/a")["waiting"] == ""


def _few_per_round(fed: Federation, n: int) -> None:
    """The coordinator restarted to place (and read) at most ``n`` ready tasks a round."""
    from balsam.argo.config import ServerSettings
    from balsam.argo.server import stop_server

    stop_server(fed.data)
    settings = ServerSettings.load(fed.data)
    settings.coordinator.max_place_per_round = n
    settings.save()
    fed.start_server()


def test_every_task_of_a_backlog_no_site_can_take_says_why_and_runs_once_a_site_is_back(federation):
    # Placement reads a round's worth of ready tasks; it once read the same first ones every round,
    # so past the first round's worth a task never said why it waited.
    fed = federation
    _few_per_round(fed, 10)
    fed.add_site("alpha")
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
        fed.kill_site("alpha")
        wait_for(lambda: [s["status"] for s in client.sites()] == ["down"], 30, "alpha down")
        tasks = [{"name": f"t{i}", "app": "run", "params": {"log": str(fed.runs_log), "task": f"t{i}", "seconds": 0}} for i in range(35)]
        workflow_id = client.submit({"name": "backlog", "tasks": tasks})
        reason = "no healthy site offers app 'run' (offered only by down sites: alpha)"
        said = lambda: [t for t in client.tasks(workflow_id) if t["waiting"] == reason]  # noqa: E731
        wait_for(lambda: len(said()) == 35, 30, "all 35 tasks saying why they wait")
        assert {t["state"] for t in client.tasks(workflow_id)} == {"READY"}
        # Once alpha is back, every task is placed and runs, once each.
        fed.start_agent("alpha")
        assert client.wait(workflow_id, timeout_s=120) == "finished"
    assert sorted(task for _, task in fed.runs()) == sorted(f"t{i}" for i in range(35))


def test_a_site_at_its_cap_is_given_each_waiting_task_as_a_slot_frees(federation):
    fed = federation
    site = fed.add_site("alpha", start=False)
    site.settings.argo.max_tasks = 2
    site.settings.save()
    fed.start_agent("alpha")
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
        # A second each: the first two still run when the test looks at the four that wait.
        tasks = [{"name": f"t{i}", "app": "run", "params": {"log": str(fed.runs_log), "task": f"t{i}", "seconds": 1.0}} for i in range(6)]
        workflow_id = client.submit({"name": "capped", "tasks": tasks})
        reason = "all healthy sites offering app 'run' are at their cap of tasks in flight: alpha (2)"
        wait_for(lambda: sum(t["waiting"] == reason for t in client.tasks(workflow_id)) == 4, 30, "4 tasks waiting for the cap")
        assert client.wait(workflow_id, timeout_s=120) == "finished"
    assert sorted(task for _, task in fed.runs()) == sorted(f"t{i}" for i in range(6))
