"""Sites reporting at once on the same workflows: each batch applies under its workflows' locks
(``balsam.argo.graph.lock_workflows``), batches of different workflows side by side.

A real coordinator (its own process, its PostgreSQL) and several sites speaking the real sync
protocol at once (``bench/simsite.py``: real gRPC clients whose executor finishes each task it is
confirmed after a short drawn runtime, so many sites' reports on one workflow's tasks arrive
together). Each workflow is a layer of parents and a layer of children of several parents each,
many small workflows placed over all sites at once: a child is released by parents finishing at different sites, and each
workflow's last tasks finish at different sites at about the same time. Without the locks, two
batches each finishing a workflow's last tasks see the other's tasks still running (neither ends the
workflow), and batches deadlock on each other's rows: with ``lock_workflows`` made to take nothing,
this test failed in each of 3 runs (a site's stream ended by a deadlock; workflows left running in
an earlier run). The server applies up to 8 batches at once here (2 by default), so that every
site's batch is in flight together.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from simsite import END, START, SimulatedSite, site_token  # noqa: E402

from balsam.argo.client import ArgoClient
from balsam.argo.config import ServerSettings
from balsam.argo.db.engine import database_url
from balsam.argo.server import start_server, stop_server
from balsam.postgres import free_port

SITES, WORKFLOWS, PARENTS, CHILDREN = 6, 60, 6, 6


def _workflow(k: int, rng: random.Random) -> dict:
    parents = [{"name": f"p{i:03d}", "app": "run"} for i in range(PARENTS)]
    children = [{"name": f"c{i:03d}", "app": "run", "parents": sorted(rng.sample([p["name"] for p in parents], 3))} for i in range(CHILDREN)]
    return {"name": f"w{k}", "tasks": parents + children}


@pytest.fixture
def coordinator(tmp_path):
    settings = ServerSettings(data=tmp_path / "argo", address=f"127.0.0.1:{free_port()}")
    settings.coordinator.sync_batches_at_once = 8  # every site's batch in flight at once: the races, if the locks let them
    start_server(settings)
    try:
        yield settings
    finally:
        stop_server(settings.data)


def test_sites_reporting_at_once_finish_each_task_once_and_release_each_child_once(coordinator):
    address = coordinator.address
    owner = (coordinator.data / "owner-token").read_text().strip()
    rng = random.Random(23)
    fleet: list[SimulatedSite] = []
    try:
        with ArgoClient(address, token=owner, timeout_s=120) as client:
            for i in range(SITES):
                name = f"s{i}"
                site = SimulatedSite(address, name, site_token(address, client.enrol_site(name)["token"], name), nodes=16, run_s=0.01)
                site.start()
                fleet.append(site)
            ids = [client.submit(_workflow(k, rng)) for k in range(WORKFLOWS)]
            total = WORKFLOWS * (PARENTS + CHILDREN)
            deadline = time.monotonic() + 120
            while sum(len(s.finished) for s in fleet) < total or any(client.status(w)["status"] == "running" for w in ids):
                failed = [f"{s.name}: {s.failure}" for s in fleet if s.failure]
                assert not failed, f"site streams failed: {failed}"
                if sum(len(s.finished) for s in fleet) == total:  # what remains is the coordinator's: the last reports and endings
                    deadline = min(deadline, time.monotonic() + 20)
                if time.monotonic() > deadline:
                    statuses = {w: client.status(w)["status"] for w in ids}
                    raise AssertionError(f"{sum(len(s.finished) for s in fleet)} of {total} tasks finished at the sites,"
                                         f" workflows {statuses} at the deadline")  # fmt: skip
                time.sleep(0.5)
    finally:
        for site in fleet:
            site.stop()

    ran = [task for site in fleet for task in site.finished]
    assert len(ran) == len(set(ran)) == total, "a task ran twice, or not at all"
    assert len({task: site.name for site in fleet for task in site.finished}) == total
    busy = [site.name for site in fleet if len(site.finished) > total // (2 * SITES)]
    assert len(busy) >= 2, f"the tasks did not spread over the sites ({[len(s.finished) for s in fleet]}): nothing was concurrent"

    engine = create_engine(database_url(ServerSettings.load(coordinator.data)))
    try:
        with engine.connect() as db:
            states = dict(db.execute(text("SELECT state, count(*) FROM tasks GROUP BY state")).all())
            assert states == {"JOB_FINISHED": total}
            finishes = db.execute(text(
                "SELECT task_id, count(*) FROM task_events WHERE move = 'reported' AND to_state = 'JOB_FINISHED' GROUP BY task_id"
            )).all()  # fmt: skip
            assert len(finishes) == total and {n for _, n in finishes} == {1}, "a finish applied twice, or lost"
            # A child whose parents were all placed at one site went there ahead of their end, and was
            # released by that site (one move more: CREATED -> AWAITING_PARENTS -> READY); the others by the coordinator.
            released = db.execute(text(
                "SELECT t.id, count(e.id) FILTER (WHERE e.move = 'released'), count(e.id) FILTER (WHERE e.move = 'sent ahead')"
                " FROM tasks t LEFT JOIN task_events e ON e.task_id = t.id WHERE t.name LIKE 'c%' GROUP BY t.id"
            )).all()  # fmt: skip
            assert len(released) == WORKFLOWS * CHILDREN and {(r, a) for _, r, a in released} <= {(1, 0), (0, 1)}, \
                "a child released twice, or never"
            ahead = sum(a for _, _, a in released)
            moves = db.execute(text("SELECT count(*) FROM task_events WHERE move = 'reported'")).scalar_one()
            assert moves == (len(START) - 1 + len(END) - 1) * total + ahead, "every move of every task applied once"
            assert db.execute(text("SELECT count(*) FROM tasks WHERE pending_parents <> 0")).scalar_one() == 0
            endings = db.execute(text(
                "SELECT w.id, w.status, count(e.id) FROM workflows w"
                " LEFT JOIN task_events e ON e.workflow_id = w.id AND e.task_id = '' AND e.workflow_status <> ''"
                " GROUP BY w.id, w.status ORDER BY w.id"
            )).all()  # fmt: skip
            assert [(w, status, n) for w, status, n in endings] == [(w, "finished", 1) for w in ids], "each workflow ends once, finished"
    finally:
        engine.dispose()
