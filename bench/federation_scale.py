"""Benchmark: one coordinator serving many sites, many tasks and many watchers. Prints figures only.

    python bench/federation_scale.py [--sites 10] [--tasks 100000] [--workflows 10] [--watchers 100]
                                     [--run-s 0.2] [--nodes 64] [--smoke]

Real: the coordinator (its own process, gRPC server and PostgreSQL, as in production), its tokens,
its placement, its sync endpoint, its Watch streams and unary calls.
Simulated: the sites (bench/simsite.py). Each is a real gRPC client speaking the real sync protocol
(enrolment, Register, Hello, heartbeats, acknowledgements, confirmations, job events numbered and
resent), with ``--nodes`` slots and an executor that reports each confirmed task RUNNING, then after a
runtime drawn from 0.5-1.5 x ``--run-s`` finished: no site database, no launchers, no files. The
watchers are real Watch streams held by a process of their own (one viewer of each workflow's
project, each stream seeing its project's finished tasks, as a dashboard does).

Printed, a line each, then one line of all figures:
  submit_s          ``--tasks`` independent tasks in ``--workflows`` workflows, submitted one after another
                    by a client in a process of its own, as a user's would be
  place_per_s       tasks assigned to sites per second, first submit to last assignment
  refill_p99_ms     a site's room (tasks reported finished) to its next assignment, while tasks remained
  events_per_s      job events applied by the coordinator per second (sent by all sites; acknowledged)
  watch_lag_p99_ms  an event's time (at its site) to its arrival at a watcher
  unary_p99_ms      the owner's ListSites and Workflows.List, called throughout (also printed by call,
                    beside WhoAmI, which does no work: what a call waits for before its work)
  coordinator_rss_mb  the resident memory of the server process and its workers, highest seen (and at each quarter done)
  db_mb             the coordinator database's size at the end
  idle_cpu_ms_per_s  the coordinator's CPU (its process and its database) per second while the sites,
                    all connected, only beat (every 1 s), before any task: what a site costs by being there
Raw baselines, in the same run: a bare COPY of as many task rows into a scratch table of the
coordinator's database, and the message rate of a bare gRPC server stream on this machine.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simsite import SimulatedSite, site_token  # noqa: E402
from cputime import children, cluster_cpu_s, process_cpu_s  # noqa: E402
from sigterm import stop_on_sigterm  # noqa: E402

from balsam.argo.client import ArgoClient
from balsam.argo.config import ServerSettings
from balsam.argo.db.engine import database_url
from balsam.argo.server import start_server, stop_server
from balsam.postgres import free_port
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.protos import auth_pb2 as apb
from balsam.protos import auth_pb2_grpc as apb_grpc
from balsam.wire.channel import OPTIONS, bearer

# The watchers: COUNT streams over the given viewer tokens, round robin, of WatchBatches (FORM
# "batches") or of Watch ("events"); each notes when each finished task's event came. Stdin then
# brings one JSON line, when the sites saw each task's JOB_FINISHED acknowledged (applied at the
# coordinator); the script waits (a minute at most) for EXPECTED finished tasks in all, then prints
# one JSON line: the lag from the event's own time (end to end: the sites' sync, then the feed and
# the stream) and from its acknowledgement (the feed and the stream alone).
WATCHERS = """
import array, asyncio, json, sys, time
import grpc
from balsam.protos import argo_pb2 as pb, argo_pb2_grpc as rpc, states_pb2
from balsam.wire.channel import OPTIONS, bearer
address, form, count, expected, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
came, at, received = {}, {}, [0]  # task -> when its event came to each watcher; task -> the event's time

async def watch(stub, token):
    request = pb.WatchRequest(states=[states_pb2.JOB_FINISHED])
    if form == "events":  # one message per event (the older form of Watch)
        async for event in stub.Watch(request, metadata=bearer(token)):
            seen(event, time.time())
        return
    async for batch in stub.WatchBatches(request, metadata=bearer(token)):
        now = time.time()
        for event in batch.events:
            seen(event, now)

def seen(event, now):
    received[0] += 1
    if event.task_id:
        times = came.get(event.task_id)
        if times is None:
            times = came[event.task_id] = array.array("d")
            at[event.task_id] = event.at.ToMicroseconds() / 1e6
        times.append(now)

def quantiles(lags):
    lags.sort()
    p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] if lags else 0.0
    return p(0.5), p(0.99), lags[-1] if lags else 0.0

async def main():
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        stub = rpc.MonitorStub(channel)
        tasks = [asyncio.create_task(watch(stub, tokens[i % len(tokens)])) for i in range(count)]
        await asyncio.sleep(1.0 + count / 500)  # the streams are open once their calls are sent (a Watch says nothing until an event)
        print("open", flush=True)
        applied = json.loads(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
        end = time.monotonic() + 60
        while sum(map(len, came.values())) < expected and time.monotonic() < end:  # the last events may still be on their way
            await asyncio.sleep(0.1)
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        for t in tasks:
            t.cancel()
        lag = quantiles([t - at[task] for task, times in came.items() for t in times])
        fed = quantiles([t - applied[task] for task, times in came.items() if task in applied for t in times])
        print(json.dumps({"received": received[0], "lag_p50": lag[0], "lag_p99": lag[1], "lag_max": lag[2], "fed_p50": fed[0], "fed_p99": fed[1],
                          "fed_max": fed[2], "failed": [repr(t.exception()) for t in failed[:3]], "streams_failed": len(failed)}), flush=True)

asyncio.run(main())
"""

# The submitter: a user's client in a process of its own (in the bench's process it would share one
# interpreter lock with every simulated site). After its imports it says "ready"; on a line of stdin it
# submits WORKFLOWS workflows of PER independent tasks, one after another (workflow k to project pk),
# and prints their ids as one JSON line.
SUBMITTER = """
import json, sys
from balsam.argo.client import ArgoClient
address, token, per, workflows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()
with ArgoClient(address, token=token, timeout_s=600) as client:
    ids = [client.submit({"name": f"w{k}", "tasks": [{"name": f"t{i:07d}", "app": "run"} for i in range(per)]}, project=f"p{k}")
           for k in range(workflows)]
print(json.dumps(ids), flush=True)
"""

# A bare gRPC server stream: one message after another, for SECONDS, then the count.
BARE_STREAM = """
import sys, time
from concurrent import futures
import grpc
from balsam.protos import argo_pb2 as pb

def serve_events(request, context):
    event = pb.Event(id=1, task_id="w/t000001", workflow_id=1, site="s1", from_state=1, to_state=2, message="")
    event.at.GetCurrentTime()
    end = time.monotonic() + float(request.decode())
    while time.monotonic() < end:
        yield event

handler = grpc.method_handlers_generic_handler("bare.Bare", {"Stream": grpc.unary_stream_rpc_method_handler(
    serve_events, request_deserializer=bytes, response_serializer=pb.Event.SerializeToString)})
server = grpc.server(futures.ThreadPoolExecutor(2))
server.add_generic_rpc_handlers([handler])
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(0)
"""


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def rss_mb(pid: int) -> float:
    """The resident memory of the server process and of its children (its sync workers and placement process), together."""
    total = 0.0
    try:
        running = children(pid)
    except FileNotFoundError:
        return 0.0
    for one in (pid, *running):
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:  # it has just ended
            pass
    return total


def bare_stream_rate(seconds: float = 2.0) -> float:
    """Messages per second of a bare gRPC server stream (a server process, this process reading)."""
    server = subprocess.Popen([sys.executable, "-c", BARE_STREAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
            stream = channel.unary_stream("/bare.Bare/Stream", request_serializer=bytes, response_deserializer=pb.Event.FromString)
            started = time.perf_counter()
            count = sum(1 for _ in stream(str(seconds).encode(), timeout=seconds + 30))
            return count / (time.perf_counter() - started)
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def bare_copy_s(settings: ServerSettings, tasks: int) -> float:
    """A COPY of ``tasks`` task-like rows into a scratch table of the coordinator's database: the storage floor."""
    rows = io.StringIO("".join(f"w/t{i:07d}\t1\tt{i:07d}\trun\t{{}}\n" for i in range(tasks)))
    engine = create_engine(database_url(ServerSettings.load(settings.data)))
    try:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("CREATE TEMPORARY TABLE scratch (id text, workflow_id bigint, name text, app text, params jsonb)")
            started = time.perf_counter()
            cursor.copy_expert("COPY scratch FROM STDIN", rows)
            raw.commit()
            return time.perf_counter() - started
        finally:
            raw.close()
    finally:
        engine.dispose()


def db_mb(settings: ServerSettings) -> float:
    engine = create_engine(database_url(ServerSettings.load(settings.data)))
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one() / 2**20
    finally:
        engine.dispose()


class UnaryProbe(threading.Thread):
    """The owner's calls, one every 0.1 s, for as long as the run lasts: their latencies, all of them
    and by call. WhoAmI, which reads nothing but the caller's token, is called as often beside them: what
    a call waits for in the server before its work, apart from that work."""

    def __init__(self, address: str, owner: str) -> None:
        super().__init__(daemon=True, name="unary-probe")
        self.channel = grpc.insecure_channel(address, options=OPTIONS)
        self.metadata = bearer(owner)
        self.latencies: list[float] = []  # ListSites and Workflows.List
        self.by_call: dict[str, list[float]] = {"ListSites": [], "Workflows.List": [], "WhoAmI": []}
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        who = ("WhoAmI", apb_grpc.AuthStub(self.channel).WhoAmI, apb.WhoAmIRequest())
        calls = [("ListSites", rpc.MonitorStub(self.channel).ListSites, pb.ListSitesRequest()), who,
                 ("Workflows.List", rpc.WorkflowsStub(self.channel).List, pb.ListWorkflowsRequest()), who]  # fmt: skip
        i = 0
        while not self.stop.wait(0.1):
            name, method, request = calls[i % len(calls)]
            i += 1
            started = time.perf_counter()
            try:
                method(request, metadata=self.metadata, timeout=30)
            except grpc.RpcError as exc:
                self.errors.append(f"{name} {exc.code().name}: {exc.details()}")
                continue
            took = time.perf_counter() - started
            self.by_call[name].append(took)
            if name != "WhoAmI":
                self.latencies.append(took)


def run(sites: int, tasks: int, workflows: int, watchers: int, run_s: float, nodes: int, timeout_s: float, form: str = "batches") -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="balsam-federation-"))
    address = f"127.0.0.1:{free_port()}"
    settings = ServerSettings(data=root / "argo", address=address)
    settings.coordinator.max_streams_per_caller = watchers + 10
    pid = start_server(settings)
    fleet: list[SimulatedSite] = []
    holder = submitter = None
    probe = None
    figures: dict[str, float] = {}
    try:
        owner = (settings.data / "owner-token").read_text().strip()
        raw_stream = bare_stream_rate()
        raw_copy = bare_copy_s(settings, tasks)
        with ArgoClient(address, token=owner) as admin:
            for i in range(sites):
                name = f"s{i:03d}"
                site = SimulatedSite(address, name, site_token(address, admin.enrol_site(name)["token"], name), nodes=nodes, run_s=run_s)
                site.start()
                fleet.append(site)
            viewers = [admin.add_user(f"viewer{k}", "viewer", [f"p{k}"])["token"] for k in range(workflows)]
        idle_cpu = idle_cost(settings, pid, fleet)
        probe = UnaryProbe(address, owner)
        probe.start()
        if watchers:
            holder = subprocess.Popen([sys.executable, "-c", WATCHERS, address, form, str(watchers), str(watchers * (tasks // workflows)), *viewers], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)  # fmt: skip
            if holder.stdout.readline().strip() != "open":
                raise RuntimeError("the watch streams did not open")
        per = tasks // workflows
        submitter = subprocess.Popen([sys.executable, "-c", SUBMITTER, address, owner, str(per), str(workflows)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        if submitter.stdout.readline().strip() != "ready":
            raise RuntimeError("the submitter did not start")
        started = time.perf_counter()
        submitter.stdin.write("go\n")
        submitter.stdin.close()
        ids = json.loads(submitter.stdout.readline() or "null")
        submit_s = time.perf_counter() - started
        if submitter.wait(timeout=60) != 0 or not ids:
            raise RuntimeError(f"the submitter failed (exit code {submitter.returncode})")
        print(f"  submitted {per * workflows} tasks in {workflows} workflows: {submit_s:.1f} s"
              f" ({per * workflows / submit_s:,.0f} tasks/s; raw COPY of as many rows {raw_copy:.2f} s)", flush=True)  # fmt: skip
        total = per * workflows
        rss_seen: list[float] = []
        quarters: list[tuple[int, float]] = []
        deadline = time.monotonic() + timeout_s
        done = 0
        last_print = time.monotonic()
        while done < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {total} tasks finished in {timeout_s:.0f} s")
            failed = [f"{s.name}: {s.failure}" for s in fleet if s.failure]
            if failed:
                raise RuntimeError(f"site streams failed: {failed[:3]}")
            time.sleep(0.5)
            rss_seen.append(rss_mb(pid))
            done = sum(len(s.finished) for s in fleet)
            while len(quarters) < 4 and done >= total * (len(quarters) + 1) / 4:
                quarters.append((done, rss_seen[-1]))
            if time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                print(f"    {done} of {total} finished, coordinator RSS {rss_seen[-1]:.0f} MB", flush=True)
        with ArgoClient(address, token=owner) as client:
            while (ended := {client.status(i)["status"] for i in ids}) != {"finished"} and time.monotonic() < deadline:
                time.sleep(0.2)  # the last events may still be on their way to the coordinator
        last_assigned = max(s.last_assign_at for s in fleet)
        place_per_s = total / (last_assigned - started)
        events = sum(s.events_sent for s in fleet)
        first = min(s.first_event_at for s in fleet if s.first_event_at)
        events_per_s = events / (max(s.last_ack_at for s in fleet) - first)
        refills = [g for s in fleet for g in s.refill_gaps]
        beats = [b for s in fleet for b in s.heartbeat_latencies]
        probe.stop.set()
        probe.join(timeout=10)
        watched = {}
        if holder is not None:
            holder.stdin.write(json.dumps({task: when for site in fleet for task, when in site.applied_at.items()}) + "\n")
            holder.stdin.close()
            watched = json.loads(holder.stdout.readline())
            holder.wait(timeout=30)
            holder = None
        figures = {
            "sites": sites, "tasks": total, "submit_s": submit_s, "place_per_s": place_per_s, "refill_p99_ms": p99(refills) * 1000,
            "events_per_s": events_per_s, "watch_lag_p99_ms": watched.get("lag_p99", 0.0) * 1000, "unary_p99_ms": p99(probe.latencies) * 1000,
            "whoami_p99_ms": p99(probe.by_call["WhoAmI"]) * 1000,
            "coordinator_rss_mb": max(rss_seen), "db_mb": db_mb(settings), "raw_copy_s": raw_copy, "raw_stream_per_s": raw_stream,
            "watch_fed_p99_ms": watched.get("fed_p99", 0.0) * 1000, "idle_cpu_ms_per_s": idle_cpu,
        }  # fmt: skip
        print(f"  workflows ended: {', '.join(sorted(ended))}")
        print(f"  placement: {place_per_s:,.0f} tasks/s; a site's room to its next assignment: median"
              f" {statistics.median(refills) * 1000 if refills else 0:.0f} ms, p99 {p99(refills) * 1000:.0f} ms ({len(refills)} refills)")  # fmt: skip
        print(f"  sync: {events:,} job events applied at {events_per_s:,.0f}/s; heartbeats answered p99 {p99(beats) * 1000:.0f} ms")
        if watchers:
            print(f"  watch: {watchers} streams received {watched['received']:,} events; lag median {watched['lag_p50'] * 1000:.0f} ms,"
                  f" p99 {watched['lag_p99'] * 1000:.0f} ms, max {watched['lag_max'] * 1000:.0f} ms; from the event's acknowledgement to the site"
                  f" (the feed and the stream alone): median {watched['fed_p50'] * 1000:.0f} ms, p99 {watched['fed_p99'] * 1000:.0f} ms,"
                  f" max {watched['fed_max'] * 1000:.0f} ms; {watched['streams_failed']} streams failed"
                  f" {watched['failed']}; raw: a bare gRPC stream carries {raw_stream:,.0f} events/s")  # fmt: skip
        print(f"  unary calls: median {statistics.median(probe.latencies) * 1000:.1f} ms, p99 {p99(probe.latencies) * 1000:.1f} ms"
              f" ({len(probe.latencies)} calls, {len(probe.errors)} failed); by call: "
              + "; ".join(f"{name} median {statistics.median(took) * 1000:.1f} p99 {p99(took) * 1000:.1f} ms"
                          for name, took in probe.by_call.items() if took))  # fmt: skip
        print(f"  coordinator RSS: highest {max(rss_seen):.0f} MB; at each quarter done: "
              + ", ".join(f"{d} done {m:.0f} MB" for d, m in quarters) + f"; database {figures['db_mb']:.0f} MB")
        print(" ".join(f"{k}={plain(v)}" for k, v in figures.items()), flush=True)
        return figures
    finally:
        if probe is not None:
            probe.stop.set()
        for child in (holder, submitter):
            if child is not None and child.poll() is None:
                child.kill()
        for site in fleet:
            site.stop()
        stop_server(settings.data)
        shutil.rmtree(root, ignore_errors=True)


IDLE_S = 5.0


def idle_cost(settings: ServerSettings, pid: int, fleet: list[SimulatedSite]) -> float:
    """The coordinator's CPU (its process and its database's) per second while the sites only keep their
    leases, no task anywhere: what each site costs before it runs anything. Milliseconds a second."""
    time.sleep(1.0)  # every stream up and beating
    pgdata = settings.data / "db" / "pgdata"
    beats = sum(len(s.heartbeat_latencies) for s in fleet)
    server, database, start = process_cpu_s(pid), cluster_cpu_s(pgdata), time.perf_counter()
    time.sleep(IDLE_S)
    seconds = time.perf_counter() - start
    server, database = (process_cpu_s(pid) - server) / seconds * 1000, (cluster_cpu_s(pgdata) - database) / seconds * 1000
    beats = (sum(len(s.heartbeat_latencies) for s in fleet) - beats) / seconds
    print(f"  idle: {len(fleet)} sites keeping their leases ({beats:.0f} heartbeats/s answered): the coordinator used"
          f" {server + database:.0f} ms of CPU a second (its process {server:.0f}, its database {database:.0f})", flush=True)
    return server + database


def plain(value: object) -> str:
    """A figure with about four significant digits and never an exponent (1.061e+04 is no number a reader or a pattern expects)."""
    if not isinstance(value, float):
        return str(value)
    digits = max(0, 3 - int(math.floor(math.log10(abs(value))))) if value else 0
    return f"{value:.{digits}f}"


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workflows", type=int, default=10)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--run-s", type=float, default=0.2, help="the mean simulated runtime of a task")
    parser.add_argument("--nodes", type=int, default=64, help="slots of each simulated site")
    parser.add_argument("--timeout", type=float, default=3600, help="give up if the tasks have not all finished by then")
    parser.add_argument("--watch-form", choices=("batches", "events"), default="batches",
                        help="what the watchers call: WatchBatches (many events a message) or Watch (one event a message)")
    parser.add_argument("--smoke", action="store_true", help="a small size, for the tests")
    args = parser.parse_args()
    if args.smoke:
        args.sites, args.tasks, args.workflows, args.watchers, args.run_s, args.timeout = 3, 300, 2, 4, 0.05, 300
    print(f"federation: {args.sites} simulated sites x {args.nodes} slots, {args.tasks} tasks in {args.workflows} workflows,"
          f" {args.watchers} watchers ({args.watch_form}), runtime ~{args.run_s} s; load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    run(args.sites, args.tasks, args.workflows, args.watchers, args.run_s, args.nodes, args.timeout, args.watch_form)


if __name__ == "__main__":
    main()
