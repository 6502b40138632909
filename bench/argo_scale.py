"""Benchmark: the Argo coordinator at scale: submit, placement, site sync. Prints figures only.

    python bench/argo_scale.py [--tasks 100000] [--repeat 3] [--events-tasks 2000]

Submit: a detached coordinator (its own process and PostgreSQL, as in production) with four
registered sites offering the app; ``ArgoClient.submit`` of a fan-out/fan-in DAG of ``--tasks``
tasks (one root, the middles each a child of it, one sink child of every middle), checked stored
in full afterwards. The client's own steps (spec parsing, protobuf building and serializing) are
timed apart, and the server's checks (decoding each task again, validating the graph) are replayed
here to split the RPC. Raw baseline in the same run: a COPY of as many task rows into a scratch
table of the coordinator's database (temporary, so no index and no WAL: the storage floor).

Placement: ``placement.place`` on ``--tasks`` ready tasks over four simulated sites of different
sizes, queue waits, caps and bandwidths, a quarter of the tasks reading inputs kept at some site.
Raw baseline: a round-robin loop giving each task a site (the floor of a Python loop over them).

Sync: a real site (its own PostgreSQL) linked to the coordinator, ``ArgoSync.run`` in a thread.
``--events-tasks`` independent tasks are submitted and assigned to it over the channel; then all
its jobs are moved in bulk through READY -> STAGED_IN -> ... -> JOB_FINISHED (7 events each),
and the clock runs from the first step's commit until the coordinator shows every task
JOB_FINISHED and the workflow finished. Raw baseline: the local transitions alone (the time the
site takes to produce those events).

Targets (from the issue): submit under 10 s; placement at least 50,000 tasks/s; sync at least
5,000 events/s.
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from balsam.argo import placement
from balsam.argo import spec as specs
from balsam.argo.client import SUBMIT_CHUNK, ArgoClient
from balsam.argo.config import CoordinatorPolicy, ServerSettings
from balsam.argo.db.engine import database_url
from balsam.argo.server import start_server, stop_server
from balsam.argo.wire import task_spec_from_wire, task_spec_to_wire
from balsam.postgres import free_port
from balsam.protos import argo_pb2 as pb
from balsam.site.api import Site
from balsam.site.argo_sync import ArgoSync
from balsam.site.db import jobstore
from balsam.site.postgres import EmbeddedPostgres
from balsam.states import JobState

S = JobState
APP = "sim"  # offered by the four simulated sites
EVENTS_APP = "ev"  # offered by the real site only, so every task of the sync runs lands there
SIMULATED = {"sim-a": 4096, "sim-b": 1024, "sim-c": 256, "sim-d": 64}  # name -> nodes
CHAIN = (S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED)
POLL_S = 0.05


def show_runs(label: str, values: list[float], unit: str = "s", fmt: str = "7.3f") -> None:
    print(f"  {label:<44} " + "  ".join(format(v, fmt) for v in values) + f" {unit}", flush=True)


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


# -- submit ----------------------------------------------------------------------------------------


def fan_dag(n: int, name: str) -> dict:
    """One root, n - 2 middles each a child of the root, one sink child of every middle."""
    middles = [f"m{i}" for i in range(n - 2)]
    tasks = [{"name": "root", "app": APP, "params": {"seed": 0}}]
    tasks += [{"name": m, "app": APP, "params": {"i": i}, "parents": ["root"]} for i, m in enumerate(middles)]
    tasks.append({"name": "sink", "app": APP, "params": {"n": n - 2}, "parents": middles})
    return {"name": name, "tasks": tasks}


def client_side(doc: dict) -> tuple[float, float, list[bytes]]:
    """What ``ArgoClient.submit`` does before its bytes leave: (parse s, to-wire s, the chunks' bytes)."""
    start = time.perf_counter()
    workflow = specs.parse_spec(doc)
    parsed = time.perf_counter()
    wire = [task_spec_to_wire(task) for task in workflow.tasks]
    chunks = [
        pb.SubmitChunk(name=workflow.name if at == 0 else "", tasks=wire[at : at + SUBMIT_CHUNK]).SerializeToString()
        for at in range(0, len(wire), SUBMIT_CHUNK)
    ]
    done = time.perf_counter()
    return parsed - start, done - parsed, chunks


def server_checks(chunks: list[bytes]) -> tuple[float, float]:
    """The server's checks of a Submit, replayed here: (decode and re-parse every task s, validate s)."""
    apps = {name: [APP] for name in SIMULATED}
    start = time.perf_counter()
    tasks = []
    for body in chunks:
        for message in pb.SubmitChunk.FromString(body).tasks:
            tasks.append(task_spec_from_wire(message, f"tasks[{len(tasks)}]"))
    decoded = time.perf_counter()
    specs.validate(tasks, apps)
    return decoded - start, time.perf_counter() - decoded


def submit_runs(client: ArgoClient, n: int, repeat: int) -> tuple[list[float], list[dict]]:
    totals, splits = [], []
    for run in range(repeat):
        doc = fan_dag(n, f"fan-r{run}")  # the user's dicts: built before the clock
        start = time.perf_counter()
        workflow_id = client.submit(doc)
        total = time.perf_counter() - start
        status = client.status(workflow_id)
        if status["tasks"] != n:
            raise SystemExit(f"submit run {run + 1}: the workflow holds {status['tasks']} tasks, not {n}: {status}")
        parse_s, wire_s, chunks = client_side(doc)
        decode_s, validate_s = server_checks(chunks)
        rpc_s = total - parse_s - wire_s
        split = {"parse": parse_s, "wire": wire_s, "rpc": rpc_s, "decode": decode_s, "validate": validate_s,
                 "store": rpc_s - decode_s - validate_s, "bytes": sum(map(len, chunks))}  # fmt: skip
        totals.append(total)
        splits.append(split)
        print(
            f"  run {run + 1}: {total:6.3f} s = client parse {parse_s:.3f} + to wire {wire_s:.3f}"
            f" + RPC {rpc_s:.3f} (server, replayed here: decode {decode_s:.3f}, validate {validate_s:.3f};"
            f" store + transport ~{split['store']:.3f})  [{split['bytes'] / 1e6:.1f} MB on the wire]",
            flush=True,
        )
        del doc, chunks
    return totals, splits


_TASK_COLUMNS = (
    "id", "workflow_id", "name", "app", "params", "resources", "inputs", "outputs", "tags", "pin", "state",
    "pending_parents", "blocked", "attempt", "sites_tried", "message",
)  # fmt: skip


def raw_copy_runs(engine: Engine, n: int, repeat: int) -> list[float]:
    """Seconds per COPY of ``n`` task rows (as a submit writes them) into a temporary copy of ``tasks``."""
    lines = []
    for i in range(n):
        state, pending = ("READY", 0) if i == 0 else ("AWAITING_PARENTS", 1 if i < n - 1 else n - 2)
        lines.append(f'999999/m{i}\t999999\tm{i}\t{APP}\t{{"i":{i}}}\t{{}}\t{{}}\t[]\t{{}}\t\\N\t{state}\t{pending}\tf\t0\t[]\t\n')
    body = "".join(lines)
    del lines
    times = []
    conn = engine.raw_connection()
    try:
        for _ in range(repeat):
            cursor = conn.cursor()
            cursor.execute("CREATE TEMP TABLE bench_tasks (LIKE tasks INCLUDING DEFAULTS) ON COMMIT DROP")
            start = time.perf_counter()
            cursor.copy_expert(f"COPY bench_tasks ({', '.join(_TASK_COLUMNS)}) FROM STDIN", io.StringIO(body))
            conn.commit()  # also drops the table, ready for the next run
            times.append(time.perf_counter() - start)
            cursor.close()
    finally:
        conn.close()
    return times


# -- placement -------------------------------------------------------------------------------------


def placement_inputs(n: int) -> tuple[list[placement.ReadyTask], list[placement.SiteView]]:
    """Four sites unlike each other, and ``n`` ready tasks of three workflows and two apps."""
    View = placement.SiteView
    sites = [
        View("alpha", True, frozenset({"sim", "ana"}), nodes=4096, queue_wait_s=1800.0, backlog_node_s=4096 * 3600.0,
             runtime_s={"sim": 300.0}),
        View("beta", True, frozenset({"sim", "ana"}), nodes=1024, queue_wait_s=300.0, backlog_node_s=1024 * 600.0,
             bandwidth_Bps=1e9),
        View("gamma", True, frozenset({"sim"}), nodes=256, queue_wait_s=0.0, in_flight=200, max_tasks=20_000),
        View("delta", True, frozenset({"sim", "ana"}), nodes=64, queue_wait_s=60.0, transfer_latency_s=2.0),
    ]  # fmt: skip
    names = [s.name for s in sites]
    tasks = []
    for i in range(n):
        inputs: tuple[placement.InputFile, ...] = ()
        if i % 4 == 0:  # a quarter read a parent's output kept at some site; some read two
            inputs = (placement.InputFile(site=names[(i // 4) % 4], size_bytes=(i % 10) * 100_000_000),)
            if i % 12 == 0:
                inputs += (placement.InputFile(site=names[(i // 12 + 1) % 4]),)
        tasks.append(placement.ReadyTask(
            id=f"{1 + i * 3 // n}/t{i}", app="ana" if i % 5 == 4 else "sim", workflow_id=1 + i * 3 // n,
            pin="beta" if i % 100 == 99 else None, nodes=8 if i % 10 == 3 else 1,
            wall_time_min=30.0 if i % 7 == 0 else None, inputs=inputs,
        ))  # fmt: skip
    return tasks, sites


def round_robin(tasks: list[placement.ReadyTask], sites: list[placement.SiteView]) -> list[tuple[str, str]]:
    names = [s.name for s in sites]
    count = len(names)
    assigned = []
    for i, task in enumerate(tasks):
        assigned.append((task.id, names[i % count]))
    return assigned


def placement_runs(n: int, repeat: int) -> tuple[list[float], list[float], placement.Placement]:
    tasks, sites = placement_inputs(n)
    place_times, rr_times, result = [], [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = placement.place(tasks, sites)
        place_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        rr = round_robin(tasks, sites)
        rr_times.append(time.perf_counter() - start)
        if len(result.assigned) + len(result.waiting) != n or len(rr) != n:
            raise SystemExit(f"placement decided {len(result.assigned)} + {len(result.waiting)} of {n} tasks")
    return place_times, rr_times, result


# -- sync ------------------------------------------------------------------------------------------


def link_site(site: Site, address: str) -> None:
    site.add_app(EVENTS_APP, "true {i}")
    site.settings.argo.address = address
    site.settings.argo.heartbeat_s = 1.0
    site.settings.save()


def local_jobs(site: Site, workflow_id: int) -> list[int]:
    with site.session() as session:
        return list(session.execute(
            text("SELECT id FROM jobs WHERE argo_task_id LIKE :prefix ORDER BY id"), {"prefix": f"{workflow_id}/%"}
        ).scalars())  # fmt: skip


def channel_idle(site: Site) -> bool:
    """No job event waits to become a message, and every message sent is acknowledged."""
    with site.session() as session:
        raw, unacked = session.execute(text("SELECT (SELECT count(*) FROM argo_raw_events), (SELECT count(*) FROM argo_outbox)")).one()
    return raw == 0 and unacked == 0


def events_run(client: ArgoClient, site: Site, engine: Engine, m: int, run: int) -> dict:
    doc = {"name": f"events-r{run}", "tasks": [{"name": f"e{i}", "app": EVENTS_APP, "params": {"i": i}} for i in range(m)]}
    workflow_id = client.submit(doc)
    timeout = max(120.0, m / 50)

    def all_assigned() -> list[int] | None:
        failed = client.status(workflow_id)["counts"].get("FAILED", 0)
        if failed:
            raise SystemExit(f"events run {run + 1}: {failed} tasks failed at the coordinator (refused by the site?)")
        found = local_jobs(site, workflow_id)
        return found if len(found) == m else None

    ids = wait_for(all_assigned, timeout, f"the site to hold all {m} jobs of workflow {workflow_id}")
    # The jobs' creation events go up too: let them drain, so the clock sees only the chain.
    wait_for(lambda: channel_idle(site), timeout, "the creation events to be acknowledged")

    commits = []
    start = time.perf_counter()
    for state in CHAIN:
        with site.session() as session:
            jobstore.transition(session, ids, state, "bench")
        commits.append(time.perf_counter())
    first_commit, last_commit = commits[0], commits[-1]

    def done() -> bool:
        status = client.status(workflow_id)
        return status["counts"].get("JOB_FINISHED", 0) == m and status["status"] == "finished"

    wait_for(done, max(120.0, 7 * m / 100), f"the coordinator to show workflow {workflow_id} finished", POLL_S)
    finished = time.perf_counter()

    with engine.connect() as conn:
        carried = conn.execute(
            text("SELECT count(*) FROM task_events WHERE workflow_id = :wf AND site = :site AND to_state = ANY(:states)"),
            {"wf": workflow_id, "site": site.settings.name, "states": [s.value for s in CHAIN]},
        ).scalar_one()
    if carried != len(CHAIN) * m:
        raise SystemExit(f"events run {run + 1}: the coordinator recorded {carried} chain events, not {len(CHAIN) * m}")
    result = {
        "events": carried, "elapsed": finished - first_commit, "local": last_commit - start,
        "first_step": first_commit - start, "drain": finished - last_commit,
    }  # fmt: skip
    print(
        f"  run {run + 1}: {carried:,} events in {result['elapsed']:.3f} s from the first commit"
        f" ({carried / result['elapsed']:,.0f} events/s); local transitions {result['local']:.3f} s"
        f" ({carried / result['local']:,.0f} events/s); coordinator done {result['drain']:.3f} s after the last commit",
        flush=True,
    )
    return result


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks of the submitted DAG and of placement (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (default 3)")
    parser.add_argument("--events-tasks", type=int, default=2000, help="tasks moved through the chain at the site (default 2000)")
    parser.add_argument("--events-repeat", type=int, default=None, help="runs of the sync measurement (default: --repeat)")
    args = parser.parse_args()
    n, repeat, m = args.tasks, max(1, args.repeat), args.events_tasks
    events_repeat = max(1, args.events_repeat if args.events_repeat is not None else repeat)
    if n < 3 or m < 1:
        parser.error("--tasks must be at least 3 and --events-tasks at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="argo-bench-"))
    settings = ServerSettings(
        data=tmp / "argo", address=f"127.0.0.1:{free_port()}",
        # The simulated sites never heartbeat: they must not be marked down during the run.
        coordinator=CoordinatorPolicy(site_timeout_s=3600.0),
    )  # fmt: skip
    client = engine = site = sync_thread = None
    stop = threading.Event()
    med = statistics.median
    try:
        print(f"coordinator at {settings.address}, data in {settings.data}", flush=True)
        start_server(settings, wait_s=120)
        client = ArgoClient(settings.address, timeout_s=600)
        engine = create_engine(database_url(ServerSettings.load(settings.data)))
        for name, nodes in SIMULATED.items():
            client.sites_stub.Register(pb.RegisterRequest(name=name, apps=[APP], nodes=nodes), timeout=30)

        print(f"\nsubmit: fan-out/fan-in DAG of {n:,} tasks ({2 * n - 4:,} edges), {repeat} runs", flush=True)
        submit_times, splits = submit_runs(client, n, repeat)
        copy_times = raw_copy_runs(engine, n, repeat)
        show_runs("submit (client.submit, end to end)", submit_times)
        show_runs(f"raw COPY of {n:,} task rows (temp table)", copy_times)

        print(f"\nplacement: {n:,} ready tasks over 4 simulated sites, {repeat} runs", flush=True)
        place_times, rr_times, result = placement_runs(n, repeat)
        show_runs("placement.place", place_times, fmt="7.4f")
        show_runs("round-robin loop (raw)", rr_times, fmt="7.4f")
        by_site: dict[str, int] = {}
        for _, where in result.assigned:
            by_site[where] = by_site.get(where, 0) + 1
        print(f"  placed {len(result.assigned):,} ({', '.join(f'{k} {v:,}' for k, v in sorted(by_site.items()))}),"
              f" waiting {len(result.waiting):,}", flush=True)  # fmt: skip

        print(f"\nsync: {m:,} tasks x {len(CHAIN)} events through one site's channel, {events_repeat} runs", flush=True)
        site = Site.init(tmp / "site", name="bench-site")
        link_site(site, settings.address)
        sync = ArgoSync(site)
        sync_thread = threading.Thread(target=sync.run, args=(stop,), name="argo-sync", daemon=True)
        sync_thread.start()
        if not sync.first_sync.wait(60):
            raise SystemExit(f"the site did not sync with the coordinator within 60 s: {sync.status}")
        events = [events_run(client, site, engine, m, run) for run in range(events_repeat)]
        rates = [e["events"] / e["elapsed"] for e in events]
        local_rates = [e["events"] / e["local"] for e in events]
        show_runs("channel (first commit -> coordinator done)", rates, "events/s", "9,.0f")
        show_runs("local transitions alone (raw)", local_rates, "events/s", "9,.0f")

        submit_s, copy_s = med(submit_times), med(copy_times)
        place_rate = n / med(place_times)
        rr_rate = n / med(rr_times)
        sync_rate, local_rate = med(rates), med(local_rates)
        table = [
            (f"submit {n:,}-task fan DAG", f"{submit_s:.3f} s ({n / submit_s:,.0f} tasks/s)", "< 10 s", submit_s < 10,
             f"COPY {n:,} rows: {copy_s:.3f} s (submit takes {submit_s / copy_s:.0f}x that)"),
            (f"placement {n:,} ready / 4 sites", f"{place_rate:,.0f} tasks/s ({med(place_times):.3f} s)", ">= 50,000 tasks/s",
             place_rate >= 50_000, f"round-robin loop: {rr_rate:,.0f} tasks/s (place takes {rr_rate / place_rate:.1f}x that)"),
            (f"sync {len(CHAIN) * m:,} events, one site", f"{sync_rate:,.0f} events/s", ">= 5,000 events/s", sync_rate >= 5_000,
             f"local transitions: {local_rate:,.0f} events/s ({local_rate / sync_rate:.1f}x the channel)"),
        ]  # fmt: skip
        print(f"\n{'measure':<34} {'figure (median)':<30} {'target':<19} {'':<6} raw baseline (median)")
        for what, figure, target, met, baseline in table:
            print(f"{what:<34} {figure:<30} {target:<19} {'met' if met else 'MISSED':<6} {baseline}")
        s = {k: med([sp[k] for sp in splits]) for k in ("parse", "wire", "rpc", "decode", "validate", "store")}
        print(
            f"\nsubmit split (medians): client parse {s['parse']:.3f} s, to wire {s['wire']:.3f} s, RPC {s['rpc']:.3f} s"
            f" (server decode ~{s['decode']:.3f} s, validate ~{s['validate']:.3f} s, store + transport ~{s['store']:.3f} s)"
        )
        e = {k: med([ev[k] for ev in events]) for k in ("elapsed", "local", "drain")}
        print(f"sync (medians): {e['elapsed']:.3f} s from the first commit, local transitions {e['local']:.3f} s,"
              f" coordinator done {e['drain']:.3f} s after the last commit (status polled every {POLL_S * 1000:.0f} ms)")  # fmt: skip
    finally:
        stop.set()
        logging.getLogger("balsam.site.argo").setLevel(logging.ERROR)  # the stream cut below is expected
        if client is not None:
            client.close()
        if engine is not None:
            engine.dispose()
        if settings.file.exists():
            try:
                stop_server(settings.data)  # also ends the site's sync stream
            except Exception as exc:  # noqa: BLE001 (clean up the rest regardless)
                print(f"stopping the coordinator failed: {exc}")
        if sync_thread is not None:
            sync_thread.join(timeout=30)
        if site is not None:
            site.close()
            try:
                EmbeddedPostgres(site.settings).stop()
            except Exception as exc:  # noqa: BLE001
                print(f"stopping the site's PostgreSQL failed: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted (servers stopped, temporary folders removed)")
