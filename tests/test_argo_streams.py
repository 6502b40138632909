"""The coordinator's serving under many open streams: an idle stream holds no thread, and one caller
may hold only so many (docs/argo.md, "Streams and their limits").

A real server process; the viewer's streams are real Watch calls; the site is a simulated one
speaking the real sync protocol (bench/simsite.py), so each heartbeat's answer can be timed."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import grpc
import pytest
from argo_helpers import Federation, wait_for

from balsam.argo.config import ServerSettings
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.wire.channel import OPTIONS, bearer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from simsite import SimulatedSite, site_token  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def _federation(root: Path, max_streams: int | None = None) -> Federation:
    fed = Federation(root)
    if max_streams is not None:
        settings = ServerSettings(data=fed.data, address=fed.address)
        settings.coordinator.max_streams_per_caller = max_streams
        settings.save()
    fed.start_server()
    return fed


def _site(fed: Federation, heartbeat_s: float) -> SimulatedSite:
    enrolment = fed.argo("site", "enrol", "sim", "--data", str(fed.data)).stdout.strip()
    site = SimulatedSite(fed.address, "sim", site_token(fed.address, enrolment, "sim"), heartbeat_s=heartbeat_s)
    site.start()
    return site


def _viewer(fed: Federation) -> str:
    """A viewer of project p, which holds one workflow (so that every Watch has an event to send at once)."""
    with fed.client() as owner:
        token = owner.add_user("eve", "viewer", ["p"])["token"]
        owner.submit({"name": "w", "tasks": [{"name": "t", "app": "run"}]}, project="p")
    return token


def _open_watches(channel: grpc.Channel, token: str, count: int) -> list:
    # Each stream lives a while (a deadline, so that a server that cannot serve them fails the test, not hangs it).
    streams = [rpc.MonitorStub(channel).Watch(pb.WatchRequest(), metadata=bearer(token), timeout=90) for _ in range(count)]
    for stream in streams:
        next(stream)  # served: the stream is open at the server, and now waits for more
    return streams


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_200_idle_watch_streams_of_one_viewer_starve_neither_the_owners_calls_nor_the_sites_heartbeats(tmp_path):
    fed = _federation(tmp_path, max_streams=250)
    site = None
    channel = grpc.insecure_channel(fed.address, options=OPTIONS)
    try:
        site = _site(fed, heartbeat_s=0.1)
        token = _viewer(fed)
        wait_for(lambda: len(site.heartbeat_latencies) >= 5, 30, "the site's first heartbeats answered")
        threads_before = _threads(fed.server_pid())

        streams = _open_watches(channel, token, 200)
        beats_before = len(site.heartbeat_latencies)
        latencies = []
        owner = bearer(fed.owner_token())
        calls = [(rpc.MonitorStub(channel).ListSites, pb.ListSitesRequest()), (rpc.WorkflowsStub(channel).List, pb.ListWorkflowsRequest())]
        for i in range(300):
            method, request = calls[i % 2]
            started = time.perf_counter()
            # A deadline far below the ~25 s a starved call used to wait, far above a served one.
            method(request, metadata=owner, timeout=5)
            latencies.append(time.perf_counter() - started)
        assert len(latencies) == 300  # every call answered within its deadline
        # The site beats every 0.1 s: ten answered take about a second when nothing starves them
        # (the calls above may take less than that on a quiet machine, so the count is waited for).
        wait_for(lambda: len(site.heartbeat_latencies) - beats_before >= 10, 10,
                 "ten heartbeats answered while the streams were open")  # fmt: skip
        beats = site.heartbeat_latencies[beats_before:]
        threads_during = _threads(fed.server_pid())
        assert site.failure == ""
        # No thread per stream: 200 open streams added fewer threads than a tenth of their number.
        assert threads_during - threads_before < 20, (threads_before, threads_during)
        # And the streams still serve: a new event reaches each of them.
        with fed.client() as owner:
            owner.submit({"name": "w2", "tasks": [{"name": "t", "app": "run"}]}, project="p")
        assert all(next(stream).workflow_id for stream in streams)
        p99 = statistics.quantiles(latencies, n=100)[98]
        beat_p99 = statistics.quantiles(beats, n=100)[98] if len(beats) >= 2 else beats[0]
        print(f"\nowner calls with 200 idle streams open: median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms;"
              f" heartbeats: median {statistics.median(beats) * 1000:.1f} ms, p99 {beat_p99 * 1000:.1f} ms;"
              f" server threads {threads_before} -> {threads_during}")  # fmt: skip
        for stream in streams:
            stream.cancel()
    finally:
        if site is not None:
            site.stop()
        channel.close()
        fed.stop()


def test_a_caller_over_its_stream_limit_is_refused_clearly_and_others_keep_theirs(tmp_path):
    fed = _federation(tmp_path, max_streams=5)
    channel = grpc.insecure_channel(fed.address, options=OPTIONS)
    site = None
    try:
        site = _site(fed, heartbeat_s=1.0)
        token = _viewer(fed)
        streams = _open_watches(channel, token, 5)
        with pytest.raises(grpc.RpcError) as refused:
            next(rpc.MonitorStub(channel).Watch(pb.WatchRequest(), metadata=bearer(token), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "user 'eve' (viewer) already has 5 streams open" in refused.value.details()
        assert "coordinator.max_streams_per_caller" in refused.value.details()
        # The limit is per caller: the owner still watches, and eve's unary calls are served.
        owner_stream = _open_watches(channel, fed.owner_token(), 1)
        assert rpc.MonitorStub(channel).ListSites(pb.ListSitesRequest(), metadata=bearer(token), timeout=10) is not None
        # A stream that ends gives its place back.
        streams.pop().cancel()
        wait_for(lambda: _opens(channel, token), 10, "a stream to be accepted again")
        for stream in streams + owner_stream:
            stream.cancel()
    finally:
        if site is not None:
            site.stop()
        channel.close()
        fed.stop()


def _opens(channel: grpc.Channel, token: str) -> bool:
    stream = rpc.MonitorStub(channel).Watch(pb.WatchRequest(), metadata=bearer(token), timeout=10)
    try:
        next(stream)
        return True
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False
    finally:
        stream.cancel()
