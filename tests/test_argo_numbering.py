"""A transaction numbering messages to a site (as a placement round does for its assignments) holds
only the site's counter, never the site's row: the site's events and heartbeats are applied
meanwhile, and a number it took and rolled back is taken again, leaving no gap.

A real server process and its PostgreSQL; the site is the bench's simulated one (a real gRPC client
of the real sync protocol); the numbering is the project's own ``graph.send`` in a transaction this
test holds open, as a long placement round holds its own."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from argo_helpers import Federation, wait_for
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from balsam.argo import graph
from balsam.argo.config import ServerSettings
from balsam.argo.db.engine import database_url
from balsam.wire.convert import KillOrder, kill_message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from simsite import SimulatedSite, site_token  # noqa: E402

pytestmark = pytest.mark.timeout(240)

RUN_S = 3.0  # the simulated task's runtime: it ends while the numbering transaction is open


def test_a_transaction_numbering_a_sites_messages_holds_back_neither_its_events_nor_its_heartbeats(tmp_path):
    fed = Federation(tmp_path)
    fed.start_server()
    engine = create_engine(database_url(ServerSettings.load(fed.data)))
    site = None
    try:
        enrolment = fed.argo("site", "enrol", "sim", "--data", str(fed.data)).stdout.strip()
        site = SimulatedSite(fed.address, "sim", site_token(fed.address, enrolment, "sim"), nodes=4, heartbeat_s=0.3, run_s=RUN_S)
        site.start()

        def state(task_id: str) -> str | None:
            with engine.connect() as connection:
                return connection.execute(text("SELECT state FROM tasks WHERE id = :t"), {"t": task_id}).scalar()

        with fed.client() as client:
            first = f"{client.submit({'name': 'w', 'tasks': [{'name': 'a', 'app': 'run'}]})}/a"
        wait_for(lambda: state(first) == "RUNNING", 60, "the first task running at the site")

        with Session(engine) as holding:
            # The next number for the site, taken and held uncommitted, as by a long placement round.
            graph.send(holding, "sim", [kill_message(KillOrder("0/none", 1, "a message never committed"))])
            holding.flush()
            beats_before = len(site.heartbeat_latencies)
            held_at = time.monotonic()
            # The task ends at the site while the number is held: its events are applied, its heartbeats answered.
            deadline = held_at + RUN_S + 20
            while first not in site.applied_at and time.monotonic() < deadline:
                time.sleep(0.1)
            applied = first in site.applied_at
            answered = site.heartbeat_latencies[beats_before:]
            held_s = time.monotonic() - held_at
            holding.rollback()
        assert applied, f"the site's events were not applied in {held_s:.0f} s while another transaction numbered messages to it"
        assert state(first) == "JOB_FINISHED"
        assert len(answered) >= 3 and max(answered) < 3.0, (
            f"heartbeats while another transaction numbered messages to the site: {len(answered)} answered"
            f" in {held_s:.1f} s, slowest {max(answered, default=0):.1f} s"
        )

        # The number given up is given again: the next assignment follows the last one without a gap
        # (the site refuses a gap), and runs.
        with fed.client() as client:
            second = f"{client.submit({'name': 'w2', 'tasks': [{'name': 'b', 'app': 'run'}]})}/b"
        wait_for(lambda: second in site.applied_at, 60, "the second task finished at the site")
        assert site.failure == "", site.failure
        with engine.connect() as connection:
            numbers = connection.execute(text("SELECT assigned_seq FROM tasks WHERE id IN (:a, :b) ORDER BY assigned_seq"),
                                         {"a": first, "b": second}).scalars().all()  # fmt: skip
        assert numbers[1] == numbers[0] + 1, numbers
    finally:
        engine.dispose()
        if site is not None:
            site.stop()
        fed.stop()
