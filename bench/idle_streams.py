"""Benchmark: the owner's calls and a site's heartbeats while one viewer holds many idle watch streams.

    python bench/idle_streams.py [--streams 200] [--seconds 15] [--smoke]

A real coordinator on this machine; a simulated site (bench/simsite.py: the real sync protocol)
heartbeating every 0.1 s; the owner calling ListSites and Workflows.List one after another. The
streams are real Watch calls of one viewer, held open and idle by a process of their own (so that
their client does not share the measuring process's interpreter).

The raw baseline, in the same run: the same calls and heartbeats with no stream open. Printed:
median and p99 of each, with streams over without. Target (issue 17): p99 under 200 ms with 200
streams open (a threaded server gave every open stream a thread until the pool ran out; the calls
then waited about 25 s).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simsite import SimulatedSite, site_token  # noqa: E402
from sigterm import stop_on_sigterm  # noqa: E402

from balsam.argo.client import ArgoClient
from balsam.argo.config import ServerSettings
from balsam.argo.server import start_server, stop_server
from balsam.postgres import free_port
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.wire.channel import OPTIONS, bearer

HOLDER = """
import sys, grpc
from balsam.protos import argo_pb2 as pb, argo_pb2_grpc as rpc
from balsam.wire.channel import OPTIONS, bearer
address, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
channel = grpc.insecure_channel(address, options=OPTIONS)
streams = [rpc.MonitorStub(channel).Watch(pb.WatchRequest(), metadata=bearer(token)) for _ in range(count)]
for stream in streams:
    next(stream)
print("open", flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
"""


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def measure(channel: grpc.Channel, owner: str, site: SimulatedSite, seconds: float) -> tuple[list[float], list[float]]:
    """For ``seconds``: the owner's calls one after another, and the heartbeats answered meanwhile."""
    requests = [(rpc.MonitorStub(channel).ListSites, pb.ListSitesRequest()), (rpc.WorkflowsStub(channel).List, pb.ListWorkflowsRequest())]
    beats_before = len(site.heartbeat_latencies)
    latencies = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        method, request = requests[i % 2]
        started = time.perf_counter()
        method(request, metadata=bearer(owner), timeout=30)
        latencies.append(time.perf_counter() - started)
    return latencies, site.heartbeat_latencies[beats_before:]


def line(label: str, values: list[float]) -> str:
    return f"  {label:44s} median {statistics.median(values) * 1000:7.1f} ms   p99 {p99(values) * 1000:7.1f} ms   ({len(values)})"


def run(streams: int, seconds: float) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="balsam-streams-"))
    address = f"127.0.0.1:{free_port()}"
    server = ServerSettings(data=root / "argo", address=address)
    server.coordinator.max_streams_per_caller = streams + 10
    start_server(server)
    channel = grpc.insecure_channel(address, options=OPTIONS)
    site = holder = None
    try:
        owner = (server.data / "owner-token").read_text().strip()
        with ArgoClient(address, token=owner) as admin:
            site = SimulatedSite(address, "sim", site_token(address, admin.enrol_site("sim")["token"], "sim"), heartbeat_s=0.1)
            site.start()
            viewer = admin.add_user("viewer", "viewer", ["p"])["token"]
            admin.submit({"name": "w", "tasks": [{"name": "t", "app": "run"}]}, project="p")  # an event for every stream
        measure(channel, owner, site, 1.0)  # warm up
        base_calls, base_beats = measure(channel, owner, site, seconds)
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, address, viewer, str(streams)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)  # fmt: skip
        if holder.stdout.readline().strip() != "open":
            raise RuntimeError("the streams did not open")
        open_calls, open_beats = measure(channel, owner, site, seconds)
        if site.failure:
            raise RuntimeError(f"the site's stream failed: {site.failure}")
        print(f"the owner's calls and a site's heartbeats (every 0.1 s), with {streams} idle watch streams of one viewer open:")
        print(line("raw: owner calls, no stream open", base_calls))
        print(line(f"owner calls, {streams} streams open", open_calls))
        print(line("raw: heartbeats, no stream open", base_beats))
        print(line(f"heartbeats, {streams} streams open", open_beats))
        figures = {"calls_p99": p99(open_calls), "calls_p99_raw": p99(base_calls), "beats_p99": p99(open_beats), "beats_p99_raw": p99(base_beats)}
        print(f"  p99 with streams over without: calls {figures['calls_p99'] / figures['calls_p99_raw']:.2f}x,"
              f" heartbeats {figures['beats_p99'] / figures['beats_p99_raw']:.2f}x")  # fmt: skip
        return figures
    finally:
        if holder is not None:
            holder.stdin.close()
            holder.wait(timeout=30)
        if site is not None:
            site.stop()
        channel.close()
        stop_server(server.data)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each phase is measured")
    parser.add_argument("--smoke", action="store_true", help="a small size, for the tests")
    args = parser.parse_args()
    run(10, 2.0) if args.smoke else run(args.streams, args.seconds)


if __name__ == "__main__":
    main()
