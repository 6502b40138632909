"""Batched Watch (WatchBatches, argo/feed.py's blocks): many watchers, each its own filter's events.

A real server process and its PostgreSQL; a simulated site (bench/simsite.py) speaking the real sync
protocol runs the tasks; the watchers are real gRPC streams, read in threads. What each watcher
should have got is read from the coordinator's ``task_events`` table itself once the work is over."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import grpc
import psycopg2
import pytest

from balsam.argo.client import ArgoClient
from balsam.argo.config import ServerSettings
from balsam.argo.db.engine import database_url
from balsam.argo.server import start_server, stop_server
from balsam.postgres import free_port
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.protos import states_pb2
from balsam.wire.channel import OPTIONS, bearer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from simsite import SimulatedSite, site_token  # noqa: E402

pytestmark = pytest.mark.timeout(300)
TASKS = 300  # per workflow: about 2,400 events each, while the ring keeps 400 at most


class Stream:
    """One Watch call read in a thread: the events in the order they came, and how many messages carried them."""

    def __init__(self, channel: grpc.Channel, token: str, batched: bool = True, **request) -> None:
        monitor = rpc.MonitorStub(channel)
        method = monitor.WatchBatches if batched else monitor.Watch
        self.call = method(pb.WatchRequest(**request), metadata=bearer(token), timeout=240)
        self.batched = batched
        self.events: list[pb.Event] = []
        self.messages = 0
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.messages += 1
                self.events.extend(message.events if self.batched else [message])
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc

    def ids(self) -> list[int]:
        return [e.id for e in self.events]


def _expected(url: str, project: str | None = None, finished_only: bool = False) -> list[int]:
    """The events a watcher of ``project`` (None: every project) sees, from the table itself."""
    where = ["TRUE"]
    if project is not None:  # a site's own events (workflow 0) pass every project's filter
        where.append(f"(e.workflow_id = 0 OR w.project = '{project}')")
    if finished_only:
        where.append("(e.to_state = 'JOB_FINISHED' OR e.task_id = '')")
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT e.id FROM task_events e LEFT JOIN workflows w ON w.id = e.workflow_id WHERE {' AND '.join(where)} ORDER BY e.id")
        return [row[0] for row in cursor.fetchall()]


def _each_task_in_order(stream: Stream) -> None:
    """A task's events commit one after another, so each watcher must get them in number order."""
    by_task: dict[str, list[int]] = defaultdict(list)
    for event in stream.events:
        if event.task_id:
            by_task[event.task_id].append(event.id)
    disordered = {task: ids for task, ids in by_task.items() if ids != sorted(ids)}
    assert not disordered, f"events of a task out of order: {list(disordered.items())[:3]}"


def test_batched_watchers_each_get_their_events_once_in_order_and_a_late_one_catches_up_from_the_database():
    root = Path(tempfile.mkdtemp(prefix="balsam-watch-batches-"))
    settings = ServerSettings(data=root / "argo", address=f"127.0.0.1:{free_port()}")
    settings.coordinator.feed_events = 200  # the ring is cut past 400 events: a watcher behind it reads the database
    start_server(settings)
    site = channel = None
    streams: list[Stream] = []
    try:
        url = database_url(ServerSettings.load(settings.data)).render_as_string(hide_password=False).replace("postgresql+psycopg2://", "postgresql://")
        owner = (settings.data / "owner-token").read_text().strip()
        with ArgoClient(settings.address, token=owner) as admin:
            site = SimulatedSite(settings.address, "sim", site_token(settings.address, admin.enrol_site("sim")["token"], "sim"), nodes=32,
                                 run_s=0.05)  # fmt: skip
            site.start()
            viewers = {p: admin.add_user(f"viewer-{p}", "viewer", [p])["token"] for p in ("p", "q")}
        channel = grpc.insecure_channel(settings.address, options=OPTIONS)
        # Several watchers per filter (their batches are made once and shared), and the older Watch.
        everything = [Stream(channel, owner) for _ in range(4)]
        mine = {p: [Stream(channel, token) for _ in range(4)] for p, token in viewers.items()}
        finished = Stream(channel, viewers["p"], states=[states_pb2.JOB_FINISHED])
        one_by_one = Stream(channel, owner, batched=False)
        streams = [*everything, *mine["p"], *mine["q"], finished, one_by_one]
        time.sleep(1.0)  # the calls are open (a Watch says nothing until there is an event)
        with ArgoClient(settings.address, token=owner, timeout_s=120) as client:
            workflows = [client.submit({"name": f"w{p}", "tasks": [{"name": f"t{i:04d}", "app": "run"} for i in range(TASKS)]}, project=p)
                   for p in ("p", "q")]  # fmt: skip
            while len(site.finished) < TASKS:  # half the work done: the ring has long moved past the first events
                time.sleep(0.1)
            late = Stream(channel, owner, after_id=0)  # from the start: the database first, then the ring
            streams.append(late)
            deadline = time.monotonic() + 180
            while {client.status(i)["status"] for i in workflows} != {"finished"}:
                assert time.monotonic() < deadline, "the workflows did not finish"
                time.sleep(0.2)
        expected = {"all": _expected(url), "p": _expected(url, "p"), "q": _expected(url, "q"), "finished": _expected(url, "p", True)}
        assert len(expected["all"]) > 4 * 2 * settings.coordinator.feed_events
        wanted = [(s, expected["all"]) for s in (*everything, one_by_one, late)] + [(s, expected[p]) for p in ("p", "q") for s in mine[p]]
        wanted.append((finished, expected["finished"]))
        deadline = time.monotonic() + 60
        while any(len(s.events) < len(ids) for s, ids in wanted) and time.monotonic() < deadline:
            time.sleep(0.2)
        for stream, ids in wanted:
            assert stream.error is None, stream.error
            got = stream.ids()
            assert len(got) == len(set(got)), f"an event came twice to one watcher ({len(got) - len(set(got))} repeats)"
            assert sorted(got) == ids, f"{len(ids)} events expected, {len(got)} came; missing {sorted(set(ids) - set(got))[:10]}"
            _each_task_in_order(stream)
        # The batches carried many events each (coalesced), the older form one each.
        for stream in everything:
            assert stream.messages * 5 < len(stream.events), f"{len(stream.events)} events in {stream.messages} messages"
        assert one_by_one.messages == len(one_by_one.events)
        assert {e.workflow_id for s in mine["q"] for e in s.events} <= {workflows[1], 0}
    finally:
        for stream in streams:
            stream.call.cancel()
        if site is not None:
            site.stop()
        if channel is not None:
            channel.close()
        stop_server(settings.data)
        shutil.rmtree(root, ignore_errors=True)
