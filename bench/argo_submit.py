"""Benchmark: submitting one big workflow to a coordinator that does nothing else. Prints figures only.

    python bench/argo_submit.py [--tasks 100000] [--repeat 3] [--measure-s 5] [--smoke]

Real: the coordinator (its own process, gRPC server and PostgreSQL, as in production) and the client
(``ArgoClient.submit``, in this process). A site is registered, so that the app is known, and down
before the first submission: nothing is placed, so each pass times the submission alone (the
client's checks and conversion, the stream, the coordinator's checks, decoding, graph validation
and storage). bench/federation_scale.py times the same submission while sites run.

With no site up, placement tells each task submitted why it waits (one round's worth at a time);
a pass starts once the coordinator is quiet again, so that it times its own submission only.

Printed: the median of ``--repeat`` submissions of ``--tasks`` independent tasks (a new workflow
each), per task and in all, with the client's share (its CPU), beside the raw floor of the same run:
a bare COPY of as many task-like rows into a scratch table of the coordinator's database. Then how
long the coordinator took to tell a pass's tasks why they wait, and what the whole backlog (every
pass's tasks, none placeable) costs it afterwards, in CPU a second (its process and its database),
beside what it costs with no task at all. Last, every workflow is cancelled and the two listings a
dashboard polls are timed (``Workflows.List``, ``Monitor.ListSites``; medians of 20), beside a bare
unary call and beside the count that listing the ended workflows would make without the counts kept
in their rows (every task of theirs by site and state, in SQL alone).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cputime import cluster_cpu_s, process_cpu_s  # noqa: E402
from federation_scale import bare_copy_s  # noqa: E402
from input_checks import median_s  # noqa: E402
from sigterm import stop_on_sigterm  # noqa: E402
from simsite import SimulatedSite, site_token  # noqa: E402

from sqlalchemy import create_engine, text

from balsam.argo.client import ArgoClient
from balsam.argo.config import CoordinatorPolicy, ServerSettings
from balsam.argo.db.engine import database_url
from balsam.argo.graph import TASK_COUNTS
from balsam.argo.server import server_pid, start_server, stop_server
from balsam.postgres import free_port


def run(tasks: int, repeat: int, measure_s: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="balsam-submit-"))
    # A site silent for 2 s is down: nothing is placed while the submissions are timed.
    settings = ServerSettings(data=root / "argo", address=f"127.0.0.1:{free_port()}", coordinator=CoordinatorPolicy(site_timeout_s=2.0))
    start_server(settings)
    try:
        owner = (settings.data / "owner-token").read_text().strip()
        with ArgoClient(settings.address, token=owner, timeout_s=600) as client:
            site = SimulatedSite(settings.address, "s0", site_token(settings.address, client.enrol_site("s0")["token"], "s0"), nodes=0)
            site.start()
            deadline = time.monotonic() + 30
            while not client.sites() and time.monotonic() < deadline:
                time.sleep(0.05)
            site.stop()
            while any(s["status"] != "down" for s in client.sites()) and time.monotonic() < deadline + 30:
                time.sleep(0.1)
            if any(s["status"] != "down" for s in client.sites()):
                raise SystemExit("the site is not down after 30 s: its tasks would be placed while timed")
            raw_s = bare_copy_s(settings, tasks)
            busy = coordinator_cpu(settings)
            idle_ms = busy(measure_s) * 1000
            walls, cpus, settles, ids = [], [], [], []
            for k in range(repeat):
                doc = {"name": f"w{k}", "tasks": [{"name": f"t{i:07d}", "app": "run"} for i in range(tasks)]}
                cpu, started = time.process_time(), time.perf_counter()
                ids.append(client.submit(doc))
                walls.append(time.perf_counter() - started)
                cpus.append(time.process_time() - cpu)
                settles.append(settle_s(busy))
            backlog_ms = busy(measure_s) * 1000
            started = time.perf_counter()
            for workflow_id in ids:
                client.cancel(workflow_id)
            cancel_s = time.perf_counter() - started
            settle_s(busy)
            listed_ms, sites_ms, bare_ms = (median_s(call, LIST_CALLS) * 1000 for call in (client.list, client.sites, client.whoami))
            live_ms = live_count_ms(settings, ids)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(f"submit {tasks:,} tasks (median of {repeat})   {wall:.2f} s   {wall / tasks * 1e6:.1f} us a task"
              f"   the client's CPU {cpu:.2f} s", flush=True)  # fmt: skip
        print(f"raw COPY {tasks:,} rows (floor)   {raw_s:.3f} s   {raw_s / tasks * 1e6:.1f} us a row")
        print(f"submit takes {wall / raw_s:.0f}x the raw COPY floor; passes {', '.join(f'{w:.2f}' for w in walls)} s")
        told = statistics.median(settles)
        print(f"telling {tasks:,} tasks why they wait (no site is up)   {told:.1f} s (median; "
              f"{'gave up after ' if told >= SETTLE_LIMIT_S else ''}passes {', '.join(f'{w:.1f}' for w in settles)} s)")
        print(f"a backlog of {tasks * repeat:,} tasks no site can take costs the coordinator {backlog_ms:.0f} ms of CPU a second"
              f" ({idle_ms:.0f} with no task)")
        print(f"cancelling the {repeat} workflows   {cancel_s:.1f} s")
        print(f"listing {repeat} ended workflows of {tasks * repeat:,} tasks   {listed_ms:.1f} ms (median of {LIST_CALLS})"
              f"   counting their tasks instead (SQL alone) {live_ms:.1f} ms   a bare unary call (WhoAmI) {bare_ms:.1f} ms")
        print(f"listing sites beside {tasks * repeat:,} ended tasks   {sites_ms:.1f} ms (median of {LIST_CALLS})")
    finally:
        stop_server(settings.data)
        shutil.rmtree(root, ignore_errors=True)


LIST_CALLS = 20


def live_count_ms(settings: ServerSettings, workflow_ids: list[int]) -> float:
    """The count a listing of these workflows would make without the counts kept in their rows: every task of theirs by site and state."""
    engine = create_engine(database_url(ServerSettings.load(settings.data)))
    try:
        with engine.connect() as connection:
            query = text(TASK_COUNTS)
            return median_s(lambda: connection.execute(query, {"ids": workflow_ids}).all(), 5) * 1000
    finally:
        engine.dispose()


# Quiet: the coordinator and its database use less than this share of a core, measured over QUIET_S.
QUIET, QUIET_S, SETTLE_LIMIT_S = 0.05, 1.0, 120.0


def coordinator_cpu(settings: ServerSettings):
    """A function of a duration: the CPU (seconds a second) the coordinator and its database used over it."""
    pid, pgdata = server_pid(settings.data), settings.data / "db" / "pgdata"

    def over(seconds: float) -> float:
        before, started = process_cpu_s(pid) + cluster_cpu_s(pgdata), time.perf_counter()
        time.sleep(seconds)
        return (process_cpu_s(pid) + cluster_cpu_s(pgdata) - before) / (time.perf_counter() - started)

    return over


def settle_s(busy) -> float:
    """Seconds until the coordinator is quiet (at most SETTLE_LIMIT_S)."""
    started = time.perf_counter()
    while busy(QUIET_S) >= QUIET and time.perf_counter() - started < SETTLE_LIMIT_S:
        pass
    return time.perf_counter() - started


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure-s", type=float, default=5.0, help="how long the coordinator's CPU is measured, with no task and with the backlog")
    parser.add_argument("--smoke", action="store_true", help="a small size, for the tests")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.repeat, args.measure_s = 2000, 2, 1.0
    run(args.tasks, args.repeat, args.measure_s)


if __name__ == "__main__":
    main()
