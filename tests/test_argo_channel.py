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
