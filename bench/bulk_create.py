"""Benchmark: creating, listing and counting many jobs on a fresh site. Prints figures, never fails on them.

    python bench/bulk_create.py [--jobs 100000] [--repeat 3] [--smoke]

The target: 100,000 jobs created in under 3 s, and `balsam job ls --state READY` counting them in
under 1 s. A raw COPY into a bare temporary table is measured in the same run as the floor the
bulk path can at best reach. `balsam job add --from FILE` (a JSON-lines file of the same jobs, all
parentless) is timed as a whole command. ``--smoke`` runs 2,000 jobs twice, to show the script works.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from balsam.site import Site
from balsam.site.postgres import EmbeddedPostgres

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cputime import server_cpu_s  # noqa: E402
from sigterm import stop_on_sigterm  # noqa: E402

APP = "noop"


def job_requests(n: int, run: int) -> tuple[list[dict], int]:
    """The parentless 90% of a run's jobs as dicts, and how many children (10%) follow them."""
    children = n // 10
    first = [
        {"app": APP, "name": f"r{run}-{i}", "workflow": "bench", "params": {"i": i}, "tags": {"run": str(run)}}
        for i in range(n - children)
    ]
    return first, children


def create_run(site: Site, n: int, run: int) -> tuple[float, float, float]:
    """Seconds to add ``n`` jobs through ``Site.add_jobs``, 10% of them with one parent, and the
    CPU seconds this process and the database server spent on it.

    Two requests, as a workflow script usually does it: first the independent jobs, then the
    dependent ones naming their parents by the ids the first request returned. This also takes
    the path that locks existing parents, which a single request with in-batch names would skip.
    The dicts are built before the clock starts: making them is the caller's cost, not Balsam's.
    """
    first, n_children = job_requests(n, run)
    server = server_cpu_s(site)
    client = time.process_time()
    start = time.perf_counter()
    parent_ids = site.add_jobs(first)
    # Spread the children over the parents instead of piling them onto the first few.
    stride = max(1, len(parent_ids) // max(1, n_children))
    second = [
        {"app": APP, "name": f"r{run}-c{k}", "workflow": "bench", "params": {"i": k},
         "tags": {"run": str(run)}, "parents": [parent_ids[(k * stride) % len(parent_ids)]]}
        for k in range(n_children)
    ]  # fmt: skip
    site.add_jobs(second)
    return time.perf_counter() - start, time.process_time() - client, server_cpu_s(site) - server


def timed(fn, repeat: int) -> tuple[list[float], object]:
    """Each run's seconds, and the last run's result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def cli_add_from(site_path: Path, job_file: Path, expected: int) -> None:
    balsam = Path(sys.executable).parent / "balsam"
    env = {**os.environ, "BALSAM_SITE": str(site_path)}
    proc = subprocess.run([str(balsam), "job", "add", "--from", str(job_file)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"balsam job add --from failed (exit {proc.returncode}): {proc.stderr.strip()}")
    if len(proc.stdout.split()) != expected:
        raise RuntimeError(f"balsam job add --from printed {len(proc.stdout.split())} ids, expected {expected}")


def cli_ls(site_path: Path, expected: int) -> None:
    balsam = Path(sys.executable).parent / "balsam"
    env = {**os.environ, "BALSAM_SITE": str(site_path)}
    proc = subprocess.run([str(balsam), "job", "ls", "--state", "READY"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"balsam job ls failed (exit {proc.returncode}): {proc.stderr.strip()}")
    if f"{expected} jobs" not in proc.stdout:
        raise RuntimeError(f"balsam job ls did not report {expected} jobs:\n{proc.stdout[-500:]}")


_RAW_TABLE = """CREATE TEMP TABLE bench_raw (
    id bigint, name varchar(200), workflow varchar(200), app_id integer, parameters jsonb, state varchar(20),
    nodes integer, ranks_per_node integer, threads_per_rank integer, gpus_per_rank integer,
    node_packing_count integer, wall_time_min double precision, tags jsonb, data jsonb, input_files jsonb,
    output_files jsonb, stage_in jsonb, stage_out jsonb, error_tail text, retry_count integer, pending_parents integer
) ON COMMIT DROP"""


def raw_copy_runs(site: Site, n: int, repeat: int) -> list[float]:
    """Seconds per COPY of ``n`` job-like rows into a temp table with no index, constraint or WAL.

    The text is built before the clock starts, so this is the server-side floor (plus the wire).
    """
    lines = []
    for i in range(n):
        state = "AWAITING_PARENTS" if i >= n - n // 10 else "READY"
        lines.append(
            f'{i + 1}\tr-{i}\tbench\t1\t{{"i":{i}}}\t{state}\t1\t1\t1\t0\t1\t\\N\t{{"run":"0"}}\t{{}}\t{{}}'
            f"\t[]\t[]\t[]\t\t0\t{1 if state != 'READY' else 0}\n"
        )
    text = "".join(lines)
    conn = site.engine.raw_connection()
    times = []
    try:
        for _ in range(repeat):
            cursor = conn.cursor()
            cursor.execute(_RAW_TABLE)
            start = time.perf_counter()
            cursor.copy_expert("COPY bench_raw FROM STDIN", io.StringIO(text))
            conn.commit()  # also drops the table (ON COMMIT DROP), ready for the next run
            times.append(time.perf_counter() - start)
            cursor.close()
    finally:
        conn.close()
    return times


def show_runs(label: str, times: list[float]) -> None:
    print(f"  {label:<36} " + "  ".join(f"{t:7.3f}" for t in times) + " s", flush=True)


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per creation run (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (default 3)")
    parser.add_argument("--smoke", action="store_true", help="2,000 jobs, 2 runs: checks the bench runs (what the test runs)")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.repeat = 2000, 2
    n, repeat = args.jobs, max(1, args.repeat)
    ready = n - n // 10

    tmp = Path(tempfile.mkdtemp(prefix="balsam-bench-"))
    site = None
    try:
        site = Site.init(tmp / "site")
        site.add_app(APP, "true {i}")
        print(f"site {site.settings.path}: {n:,} jobs per run ({n // 10:,} with a parent), {repeat} runs each", flush=True)

        # The reads are measured right after the first creation run, while the site holds exactly
        # the --jobs jobs the target speaks of; the later creation runs append to that.
        create_runs = [create_run(site, n, 0)]
        show_runs("create (run 1, empty table)", [create_runs[0][0]])

        list_times, rows = timed(lambda: site.jobs(state="READY"), repeat)
        assert len(rows) == ready, f"listed {len(rows)} READY jobs, expected {ready}"
        del rows
        show_runs("list READY (site.jobs)", list_times)

        count_times, counts = timed(lambda: site.count_jobs(state="READY"), repeat)
        assert counts == {"READY": ready}, f"counted {counts}, expected {ready} READY"
        show_runs("count READY (site.count_jobs)", count_times)

        cli_times, _ = timed(lambda: cli_ls(site.settings.path, ready), repeat)
        show_runs("balsam job ls --state READY", cli_times)

        for run in range(1, repeat):
            create_runs.append(create_run(site, n, run))
            show_runs(f"create (run {run + 1}, {run * n:,} jobs before)", [create_runs[-1][0]])
        create_times = [wall for wall, _, _ in create_runs]

        raw_times = raw_copy_runs(site, n, repeat)
        show_runs("raw COPY into a temp table", raw_times)

        job_file = tmp / "jobs.jsonl"
        job_file.write_text("".join(
            json.dumps({"app": APP, "name": f"f-{i}", "workflow": "bench-file", "params": {"i": i}}) + "\n" for i in range(n)
        ))  # fmt: skip
        file_times, _ = timed(lambda: cli_add_from(site.settings.path, job_file, n), repeat)
        show_runs("balsam job add --from FILE", file_times)

        med = statistics.median
        table = [
            (f"create {n:,} jobs (add_jobs)", med(create_times), f"{n / med(create_times):,.0f} jobs/s", "< 3 s"),
            (f"balsam job add --from ({n:,} jobs)", med(file_times), "(whole command)", "-"),
            (f"raw COPY {n:,} rows (floor)", med(raw_times), f"{n / med(raw_times):,.0f} rows/s", "-"),
            (f"list {ready:,} READY (site.jobs)", med(list_times), f"{ready / med(list_times):,.0f} rows/s", "-"),
            (f"count {ready:,} READY (count_jobs)", med(count_times), f"{ready / med(count_times):,.0f} rows/s", "-"),
            ("balsam job ls --state READY", med(cli_times), "(whole command)", "< 1 s"),
        ]
        print(f"\n{'what':<36} {'median s':>9}  {'rate':<18} target")
        for what, seconds, rate, target in table:
            print(f"{what:<36} {seconds:9.3f}  {rate:<18} {target}")
        print(f"\nadd_jobs takes {med(create_times) / med(raw_times):.1f}x the raw COPY floor")
        client_cpu, server_cpu = med(c for _, c, _ in create_runs), med(s for _, _, s in create_runs)
        print(f"add_jobs CPU (medians): this process {client_cpu:.3f} s, the database server {server_cpu:.3f} s"
              f" (they overlap: COPY stores while Python checks and formats the next jobs)")
    finally:
        if site is not None:
            site.close()
            EmbeddedPostgres(site.settings).stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
