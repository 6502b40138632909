"""The coordinator's event feed (argo/feed.py): one reader of the event log for every watcher.

A real server process and its PostgreSQL; the watchers are real Watch streams. The out-of-order
commit is made for real: a transaction of our own holds an event's number uncommitted while later
events commit, as a long transaction of the coordinator's can."""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path

import grpc
import psycopg2
import pytest
from argo_helpers import Federation

from balsam.argo.config import ServerSettings
from balsam.argo.database import Database
from balsam.argo.db.engine import cluster, connect, database_url
from balsam.argo.feed import LATE_EVERY_S, EventFeed
from balsam.argo.workflows import WorkflowStore
from balsam.postgres import free_port
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.wire.channel import OPTIONS, bearer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from simsite import SimulatedSite, site_token  # noqa: E402

pytestmark = pytest.mark.timeout(300)


class Watcher:
    """A Watch stream read in a thread: its events' messages, in the order they came."""

    def __init__(self, channel: grpc.Channel, token: str, **request) -> None:
        self.events: queue.Queue[pb.Event] = queue.Queue()
        self.seen: list[pb.Event] = []
        self.stream = rpc.MonitorStub(channel).Watch(pb.WatchRequest(**request), metadata=bearer(token), timeout=240)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.events.put(event)
        except grpc.RpcError:
            pass

    def wait_for(self, message: str, timeout_s: float) -> float:
        """Seconds until an event with ``message`` came (AssertionError naming what came instead)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(event)
            if event.message == message:
                return time.monotonic() - started
        raise AssertionError(f"no event {message!r} within {timeout_s} s; came: {[e.message for e in self.seen][-10:]}")


def _libpq_url(settings: ServerSettings) -> str:
    """The coordinator database's address as psycopg2 takes it (for connections of the test's own)."""
    return database_url(settings).set(drivername="postgresql").render_as_string(hide_password=False)


def _site_event(connection, message: str) -> None:
    with connection.cursor() as cursor:  # a site's own event (workflow 0): every watcher's to see
        cursor.execute("INSERT INTO task_events (task_id, workflow_id, site, from_state, to_state, message) VALUES ('', 0, 'x', '', '', %s)",
                       (message,))  # fmt: skip


def _collect_until(watcher: Watcher, workflow_id: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while workflow_id not in {e.workflow_id for e in watcher.seen}:
        assert time.monotonic() < deadline, f"no event of workflow {workflow_id} within {timeout_s} s"
        try:
            watcher.seen.append(watcher.events.get(timeout=0.1))
        except queue.Empty:
            pass


def test_an_event_committed_after_later_ones_still_reaches_watchers_and_does_not_hold_them_back(tmp_path):
    fed = Federation(tmp_path)
    fed.start_server()
    channel = grpc.insecure_channel(fed.address, options=OPTIONS)
    held = later = site = None
    try:
        url = _libpq_url(ServerSettings.load(fed.data))
        owner = fed.owner_token()
        enrolment = fed.argo("site", "enrol", "sim", "--data", str(fed.data)).stdout.strip()
        site = SimulatedSite(fed.address, "sim", site_token(fed.address, enrolment, "sim"))  # offers the app "run"
        site.start()
        with fed.client() as client:
            viewer = client.add_user("vera", "viewer", ["p"])["token"]
            client.submit({"name": "first", "tasks": [{"name": "t", "app": "run"}]}, project="p")
        watching = Watcher(channel, owner)
        viewing = Watcher(channel, viewer)
        # A transaction takes the next number and holds it; a later event commits past it.
        held = psycopg2.connect(url)
        _site_event(held, "held back")
        later = psycopg2.connect(url)
        later.autocommit = True
        _site_event(later, "committed first")
        with fed.client() as client:  # a change through the server, which wakes the feed's reader
            hidden = client.submit({"name": "second", "tasks": [{"name": "t", "app": "run"}]}, project="q")
        # The gap is held about a second, then passed: the later event is not stuck behind it.
        assert watching.wait_for("committed first", 20) < 15
        viewing.wait_for("committed first", 20)
        _collect_until(watching, hidden, 20)
        # The held transaction commits late; the next change wakes the reader, which still looks.
        held.commit()
        with fed.client() as client:
            shown = client.submit({"name": "third", "tasks": [{"name": "t", "app": "run"}]}, project="p")
        watching.wait_for("held back", 20)
        viewing.wait_for("held back", 20)
        _collect_until(viewing, shown, 20)
        # Each watcher got each event once, and the viewer none of project q's workflow.
        for watcher in (watching, viewing):
            ids = [e.id for e in watcher.seen]
            assert len(ids) == len(set(ids)), ids
        assert hidden not in {e.workflow_id for e in viewing.seen}

        # After a restart the ring is empty: a watcher from the start reads the history from the
        # database, then follows the live events, each once.
        for connection in (held, later):
            connection.close()
        site.stop()
        site = None
        channel.close()
        fed.stop()
        fed.start_server()
        channel = grpc.insecure_channel(fed.address, options=OPTIONS)
        again = Watcher(channel, fed.owner_token())
        again.wait_for("held back", 30)
        with fed.client() as client:
            fresh = client.submit({"name": "fourth", "tasks": [{"name": "t", "app": "run"}]}, project="p")
        _collect_until(again, fresh, 20)
        ids = [e.id for e in again.seen]
        assert len(ids) == len(set(ids)), ids
        assert {hidden, shown} <= {e.workflow_id for e in again.seen}
    finally:
        _tear_down(fed, channel, site, held, later)


def _tear_down(fed, channel, site, *connections) -> None:
    for connection in connections:
        if connection is not None and not connection.closed:
            connection.close()
    if site is not None:
        site.stop()
    channel.close()
    fed.stop()


def test_a_late_transaction_of_more_events_than_a_read_takes_does_not_hold_the_feed(tmp_path):
    """A transaction that took its numbers first and commits after the gap was passed: its events
    are published late, and the events committed after them still come at once (they once waited
    behind the late ones, which filled every read, until the late numbers' minute was over)."""
    fed = Federation(tmp_path)
    fed.start_server()
    channel = grpc.insecure_channel(fed.address, options=OPTIONS)
    held = later = site = None
    try:
        url = _libpq_url(ServerSettings.load(fed.data))
        enrolment = fed.argo("site", "enrol", "sim", "--data", str(fed.data)).stdout.strip()
        site = SimulatedSite(fed.address, "sim", site_token(fed.address, enrolment, "sim"))  # offers the app "run"
        site.start()
        watching = Watcher(channel, fed.owner_token())
        held = psycopg2.connect(url)
        with held.cursor() as cursor:  # more events than one read of the feed takes (READ_BATCH)
            cursor.execute("INSERT INTO task_events (task_id, workflow_id, site, from_state, to_state, message)"
                           " SELECT '', 0, 'x', '', '', 'late ' || n FROM generate_series(1, 6000) n")  # fmt: skip
        later = psycopg2.connect(url)
        later.autocommit = True
        _site_event(later, "committed first")
        with fed.client() as client:  # a change through the server wakes the feed's reader
            client.submit({"name": "w", "tasks": [{"name": "t", "app": "run"}]})
        watching.wait_for("committed first", 20)  # the gap is passed after about a second
        held.commit()
        with fed.client() as client:
            client.submit({"name": "w2", "tasks": [{"name": "t", "app": "run"}]})
        watching.wait_for("late 6000", 20)
        _site_event(later, "after the late ones")
        with fed.client() as client:
            client.submit({"name": "w3", "tasks": [{"name": "t", "app": "run"}]})
        assert watching.wait_for("after the late ones", 30) < 10
        messages = [e.message for e in watching.seen]
        assert sum(m.startswith("late ") for m in messages) == 6000 and len(set(e.id for e in watching.seen)) == len(watching.seen)
    finally:
        _tear_down(fed, channel, site, held, later)


def _published(feed: EventFeed) -> list[str]:
    return [entry.message for block in feed._blocks for entry in block.entries]


def test_numbers_passed_over_are_looked_for_until_found_or_their_time_is_over(tmp_path):
    """The feed's reader alone, on a real coordinator database: a transaction holding numbers
    commits after the gap was passed (its events come late, once each), another rolls back (its
    numbers are given up once ``late_s`` is over). Neither is looked for after that: the look for
    numbers found long before once took half the reader's time in a loaded server."""
    settings = ServerSettings(data=tmp_path / "argo", address=f"127.0.0.1:{free_port()}")
    settings.save()
    engine = connect(settings)
    connections = []
    try:
        url = _libpq_url(settings)
        db = Database(engine)
        feed = EventFeed(db, WorkflowStore(db), gap_s=0.2, late_s=2.0)
        feed.read()  # starts from the newest number
        held, undone, later = (psycopg2.connect(url) for _ in range(3))
        connections += [held, undone, later]
        later.autocommit = True
        for connection, name in ((held, "late"), (undone, "undone")):
            with connection.cursor() as cursor:  # numbers taken, not committed
                cursor.execute("INSERT INTO task_events (task_id, workflow_id, site, from_state, to_state, message)"
                               " SELECT '', 0, 'x', '', '', %s || n FROM generate_series(1, 3) n", (f"{name} ",))  # fmt: skip
        _site_event(later, "committed first")
        feed.read()
        assert _published(feed) == [], "the reader did not wait at the gap"
        time.sleep(0.3)
        feed.read()
        assert _published(feed) == ["committed first"]
        assert len(feed._missing) == 6
        held.commit()
        undone.rollback()
        deadline = time.monotonic() + 10
        while len(_published(feed)) < 4 and time.monotonic() < deadline:
            time.sleep(LATE_EVERY_S)
            feed.read()
        assert _published(feed) == ["committed first", "late 1", "late 2", "late 3"]
        assert len(feed._missing) == 3, "numbers found are still looked for"
        time.sleep(2.0)
        _site_event(later, "after")
        feed.read()
        assert _published(feed)[-1] == "after" and len(_published(feed)) == 5
        assert feed._missing == {}, "numbers never used are still looked for after late_s"
    finally:
        for connection in connections:
            connection.close()
        engine.dispose()
        cluster(settings).stop()
