"""A site is stalled only for what waits at the site: messages its streams handed it that it did not
acknowledge (``balsam.argo.deliveries``). Messages waiting at the coordinator (not sent yet, or the
site's acknowledgement not applied yet) are the coordinator's backlog, not the site's fault, and
they still go out while the site's events wait to be applied.

The health check's rule runs on a real coordinator database; the stream's side, on a real server
process and its PostgreSQL with the bench's simulated site (a real gRPC client of the real sync
protocol), whose events wait because this test holds their workflow's lock, as a long transaction
of that workflow would. (End to end, a site handed messages it cannot apply is marked stalled and
its tasks run elsewhere, once: tests/test_argo_faults.py.)"""

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
from balsam.argo.database import Database
from balsam.argo.db import taskstore
from balsam.argo.db.engine import database_url
from balsam.argo.deliveries import Deliveries
from balsam.argo.sites import SiteRegistry
from balsam.taskspec import TaskSpec
from balsam.wire.convert import KillOrder, kill_message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from simsite import SimulatedSite, site_token  # noqa: E402


def test_messages_long_in_a_sites_outbox_make_it_stalled_only_once_its_stream_handed_them(argo_session):
    # s1 was heard just now, has acknowledged nothing for an hour, and its outbox has held a message
    # as long, with 1/p placed there unconfirmed: the rule before judged that alone a stall.
    session = argo_session
    graph.lock_graph(session)
    taskstore.insert(session, 1, [TaskSpec("p", "a")], existing={})
    taskstore.place(session, [("1/p", "s1")])
    graph.send(session, "s1", [kill_message(KillOrder("1/none", 1, "a message for s1"))])
    taskstore.record_assignments(session, [("1/p", 1)])
    session.execute(text("UPDATE sites SET last_seen_at = now(), registered_at = now() - interval '1 hour' WHERE name = 's1'"))
    session.execute(text("UPDATE site_outbox SET created_at = now() - interval '1 hour'"))
    session.commit()
    registry = SiteRegistry(Database(session.get_bind()))

    assert registry.check_health(60.0, overdue=[]) == []
    assert session.execute(text("SELECT status FROM sites WHERE name = 's1'")).scalar_one() == "up"
    assert session.execute(text("SELECT site FROM tasks WHERE id = '1/p'")).scalar_one() == "s1"

    said = registry.check_health(60.0, overdue=["s1"])
    assert len(said) == 1 and said[0].startswith("site s1 stalled") and "1 task(s) it never started placed again" in said[0], said
    session.rollback()
    assert session.execute(text("SELECT status FROM sites WHERE name = 's1'")).scalar_one() == "stalled"
    assert session.execute(text("SELECT site, state FROM tasks WHERE id = '1/p'")).one() == (None, "READY")
    assert session.execute(text("SELECT count(*) FROM site_fences WHERE site = 's1'")).scalar_one() == 1


def test_a_site_is_overdue_once_what_its_streams_handed_it_goes_unacknowledged_past_the_timeout():
    deliveries = Deliveries()
    deliveries.opened("s1", applied=4)
    deliveries.sent("s1", 9)
    assert deliveries.overdue(0.05) == []  # handed just now
    time.sleep(0.1)
    assert deliveries.overdue(0.05) == ["s1"]
    deliveries.acknowledged("s1", 7)  # part of it applied: the site moves, not stalled
    assert deliveries.overdue(0.05) == []
    time.sleep(0.1)
    assert deliveries.overdue(0.05) == ["s1"]  # ... but 8 and 9 wait on
    deliveries.acknowledged("s1", 9)
    time.sleep(0.1)
    assert deliveries.overdue(0.05) == []  # nothing handed waits: silence alone is the down rule's

    # Streams that break before the site applies what they hand it: a stall all the same.
    deliveries.sent("s1", 12)
    deliveries.opened("s1", applied=9)
    deliveries.sent("s1", 12)
    time.sleep(0.1)
    assert deliveries.overdue(0.05) == ["s1"]
    deliveries.opened("s1", applied=12)  # a new stream, the site having applied it all meanwhile
    assert deliveries.overdue(0.05) == []

    deliveries.sent("s1", 15)
    time.sleep(0.1)
    deliveries.opened("s1", applied=0)  # its numbering began again (it went to another coordinator and back)
    assert deliveries.overdue(0.05) == []
    deliveries.sent("s1", 3)
    time.sleep(0.1)
    assert deliveries.overdue(0.05) == ["s1"]
    deliveries.opened("s1", applied=0, afresh=True)  # back from being marked down: it is handed all again
    assert deliveries.overdue(0.05) == []
    deliveries.opened("s2", applied=0)
    time.sleep(0.1)
    assert deliveries.overdue(0.05) == []  # heard, handed nothing


HOLD_S = 9.0  # three site timeouts


@pytest.mark.timeout(240)
def test_a_site_whose_events_wait_at_the_coordinator_still_gets_its_next_assignment(tmp_path):
    fed = Federation(tmp_path, site_timeout_s=HOLD_S / 3)
    fed.start_server()
    engine = create_engine(database_url(ServerSettings.load(fed.data)))
    site = None

    def query(sql: str, **params):
        return _query(engine, sql, **params)

    try:
        enrolment = fed.argo("site", "enrol", "sim", "--data", str(fed.data)).stdout.strip()
        site = SimulatedSite(fed.address, "sim", site_token(fed.address, enrolment, "sim"), nodes=4, heartbeat_s=0.3, run_s=2.0)
        site.start()
        with fed.client() as client:
            first_wf = client.submit({"name": "w1", "tasks": [{"name": "a", "app": "run"}]})
            wait_for(lambda: query("SELECT state FROM tasks WHERE id = :t", t=f"{first_wf}/a") == [("RUNNING",)], 60, "a running")
            with Session(engine) as holding:
                graph.lock_workflows(holding, [first_wf])  # a's end, reported now, waits for this
                wait_for(lambda: f"{first_wf}/a" in site.finished, 30, "a ended at the site")
                time.sleep(0.5)  # its events on their way
                held_at = time.monotonic()
                second_wf = client.submit({"name": "w2", "tasks": [{"name": "b", "app": "run"}]})
                statuses: set[str] = set()
                while time.monotonic() - held_at < HOLD_S:
                    statuses |= {status for (status,) in query("SELECT status FROM sites WHERE name = 'sim'")}
                    time.sleep(0.2)
                handed = f"{second_wf}/b" in site.assigned
                waiting = query("SELECT state FROM tasks WHERE id = :t", t=f"{first_wf}/a") == [("RUNNING",)]
                holding.rollback()
            assert waiting, "a's end was applied while its workflow's lock was held: nothing waited at the coordinator"
            assert handed, f"b's assignment was not handed to the site in {HOLD_S:.0f} s while the site's events waited"
            assert statuses == {"up"}, f"the site was marked {statuses - {'up'}} while its events waited at the coordinator"
            assert client.wait(first_wf, timeout_s=60) == "finished" and client.wait(second_wf, timeout_s=60) == "finished"
        assert site.failure == "", site.failure
        placed = query("SELECT id, site, attempt FROM tasks ORDER BY id")
        assert placed == [(f"{first_wf}/a", "sim", 1), (f"{second_wf}/b", "sim", 1)], f"placed more than once: {placed}"
    finally:
        engine.dispose()
        if site is not None:
            site.stop()
        fed.stop()


class _Deaf(SimulatedSite):
    """Takes what its stream hands it and never says so."""

    def _receive(self, messages) -> None:
        self.handed = True


class _SlowToApply(SimulatedSite):
    """Applies what it is handed a while after it comes (its reading thread busy)."""

    def _receive(self, messages) -> None:
        time.sleep(SLOW_S)
        super()._receive(messages)


TIMEOUT_S, SLOW_S = 2.0, 1.5


@pytest.mark.timeout(240)
def test_a_site_back_from_being_down_is_not_stalled_for_what_it_was_handed_before(tmp_path):
    fed = Federation(tmp_path, site_timeout_s=TIMEOUT_S)
    fed.start_server()
    engine = create_engine(database_url(ServerSettings.load(fed.data)))
    sites: list[SimulatedSite] = []

    def status() -> str:
        return _query(engine, "SELECT status FROM sites WHERE name = 'sim'")[0][0]

    try:
        enrolment = fed.argo("site", "enrol", "sim", "--data", str(fed.data)).stdout.strip()
        token = site_token(fed.address, enrolment, "sim")
        deaf = _Deaf(fed.address, "sim", token, heartbeat_s=0.3)
        sites.append(deaf)
        deaf.start()
        with fed.client() as client:
            workflow = client.submit({"name": "w", "tasks": [{"name": "a", "app": "run"}]})
            wait_for(lambda: getattr(deaf, "handed", False), 30, "a's assignment handed to the site")
            deaf.stop()  # gone before its timeout, what it was handed not acknowledged
            wait_for(lambda: status() == "down", 30, "the site marked down")

            back = _SlowToApply(fed.address, "sim", token, heartbeat_s=0.3, run_s=0.2)
            sites.append(back)
            back.start()
            seen = set()
            deadline = time.monotonic() + SLOW_S - 0.2
            while time.monotonic() < deadline:
                seen.add(status())
                time.sleep(0.1)
            assert "stalled" not in seen, "the site was marked stalled, as it came back, for what it was handed before it went down"
            assert client.wait(workflow, timeout_s=60) == "finished"
        news = _query(engine, "SELECT message FROM task_events WHERE task_id = '' AND message LIKE '%stalled%'")
        assert not news, news
    finally:
        engine.dispose()
        for site in sites:
            site.stop()
        fed.stop()


def _query(engine, sql: str, **params) -> list:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).all()
