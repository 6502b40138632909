"""The sites' batches applied in worker processes of the server (``balsam.argo.syncworkers``), killed
at bad moments: a real coordinator, a real site (its PostgreSQL, agent, launchers, processes).

What a user must be able to trust: a worker killed while it applies a batch loses nothing and runs
nothing twice (its transaction commits whole or not at all, the site resends what was not
acknowledged), the server goes on with new workers, and a server killed outright leaves no worker
behind holding its database.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from argo_helpers import alive, killing, wait_for, workers_of

pytestmark = pytest.mark.timeout(300)


def serving(fed) -> int:
    """Site alpha up and its batches applied by the server's workers: the server's pid."""
    fed.add_site("alpha")
    server = fed.server_pid()
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
    wait_for(lambda: workers_of(server), 30, "the server's sync workers")
    return server


def test_workers_killed_while_they_apply_the_sites_batches_lose_nothing_and_run_nothing_twice(federation):
    fed = federation
    server = serving(fed)
    with fed.client() as client:
        tasks = [{"name": f"t{i}", "app": "run", "params": {"log": str(fed.runs_log), "task": f"t{i}", "seconds": 0.2}} for i in range(60)]
        workflow_id = client.submit({"name": "killed", "tasks": tasks})
        # Once the site's events flow, every 0.7 s: SIGKILL whichever workers there are, while they
        # may be in the middle of a batch (the launcher reports each task's moves as it goes). The
        # 60 tasks take at least 6 s, two at a time.
        with killing(fed, lambda: workers_of(server), every_s=0.7, up_to=4) as killed:
            assert client.wait(workflow_id, timeout_s=180) == "finished"
        ended = {t["name"]: (t["state"], t["attempt"]) for t in client.tasks(workflow_id)}
    assert len(killed) >= 2, "workers were killed while the tasks ran"
    assert ended == {f"t{i}": ("JOB_FINISHED", 1) for i in range(60)}, "every task finished, on its first attempt"
    assert Counter(task for _, task in fed.runs()) == Counter({f"t{i}": 1 for i in range(60)}), "each ran once"
    log = (fed.data / "logs" / "server.log").read_text()
    assert "a worker applying the sites' batches died" in log
    assert workers_of(server), "new workers serve the next batches"


def test_a_server_killed_outright_leaves_no_worker_behind(federation):
    server = serving(federation)
    workers = workers_of(server)
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "each worker left with its server"
