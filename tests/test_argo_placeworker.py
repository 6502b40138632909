"""Placement in a process of its own (``balsam.argo.placeworker``), killed at bad moments: a real
coordinator, a real site (its PostgreSQL, agent, launchers, processes).

What a user must be able to trust: the placement process killed while it places (a workflow's
first tasks, and children as their parents finish) loses no task and places none twice (a round is
one transaction), the server starts it again and goes on; a server stopped, or killed outright,
leaves no placement process behind.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

import pytest

from argo_helpers import alive, killing, wait_for
from test_argo_syncworkers import serving

pytestmark = pytest.mark.timeout(300)


def placement_pid(fed) -> int:
    """The pid of the server's newest placement process, as its log says."""
    found = re.findall(r"placement runs in process (\d+)", (fed.data / "logs" / "server.log").read_text())
    assert found, "the server started a placement process"
    return int(found[-1])


def test_the_placement_process_killed_while_it_places_loses_nothing_and_places_nothing_twice(federation):
    fed = federation
    serving(fed)
    # Thirty parents and a child of each: every parent's end makes a child ready, to be placed by a
    # round of the process being killed.
    tasks = [{"name": f"p{i}", "app": "run", "params": {"log": str(fed.runs_log), "task": f"p{i}", "seconds": 0.2}} for i in range(30)]
    tasks += [{"name": f"c{i}", "app": "run", "parents": [f"p{i}"], "params": {"log": str(fed.runs_log), "task": f"c{i}", "seconds": 0.1}}
              for i in range(30)]  # fmt: skip
    with fed.client() as client:
        # Once tasks run, every 0.6 s: SIGKILL the placement process of the moment, up to four times.
        with killing(fed, lambda: [placement_pid(fed)], every_s=0.6, up_to=4) as killed:
            workflow_id = client.submit({"name": "killed", "tasks": tasks})
            assert client.wait(workflow_id, timeout_s=180) == "finished"
        ended = {t["name"]: (t["state"], t["attempt"]) for t in client.tasks(workflow_id)}
    assert len(killed) >= 2, "the placement process was killed while the tasks ran"
    names = [f"p{i}" for i in range(30)] + [f"c{i}" for i in range(30)]
    assert ended == {name: ("JOB_FINISHED", 1) for name in names}, "every task finished, placed once"
    assert Counter(task for _, task in fed.runs()) == Counter({name: 1 for name in names}), "each ran once"
    runs = [task for _, task in fed.runs()]
    assert all(runs.index(f"p{i}") < runs.index(f"c{i}") for i in range(30)), "each child after its parent"
    log = (fed.data / "logs" / "server.log").read_text()
    assert log.count("the placement process died") >= len(killed) - 1  # the last kill's restart may not be logged yet
    newest = placement_pid(fed)
    assert newest not in killed and alive(newest), "a new placement process serves"


def test_a_server_stopped_or_killed_leaves_no_placement_process_behind(federation):
    from balsam.argo.server import stop_server

    fed = federation
    first = placement_pid(fed)
    assert alive(first)
    stop_server(fed.data)
    assert not alive(first), "stopping the server stopped its placement process"
    fed.start_server()
    wait_for(lambda: placement_pid(fed) != first, 30, "the new server's placement process")
    second = placement_pid(fed)
    assert alive(second)
    os.kill(fed.server_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(second) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(second), "the placement process left with its server"
