"""Benchmark: how fast one launcher runs tiny jobs, against a bare process pool. Prints figures only.

    python bench/launcher_throughput.py [--jobs 5000] [--repeat 3] [--latency-jobs 30] [--smoke]

Throughput: ``--jobs`` jobs of ``true`` through one launcher in serial mode on this host, timed
from the first job taken (its first event after READY) to the last one finished (from the event
log). In the same run, the raw baseline: the same number of ``/bin/true`` through a pool of
threads as wide as the launcher's (one per core), each starting a process and waiting for it.

Latency: an idle launcher is waiting; jobs are added one at a time, and the time from each one's
READY event to its RUNNING event is measured (medians quoted).

Targets (from the issue): at least half the raw rate; under 100 ms from READY to RUNNING.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import text

from balsam.site import Site
from balsam.site.postgres import EmbeddedPostgres


def balsam() -> str:
    return str(Path(sys.executable).with_name("balsam"))


def launcher_run(site: Site, n: int, width: int, run: int) -> float:
    """Jobs per second through one serial-mode launcher."""
    site.add_jobs([{"app": "true", "workflow": f"run{run}", "node_packing_count": width} for _ in range(n)])
    env = {**os.environ, "BALSAM_SITE": str(site.settings.path)}
    subprocess.run(
        [balsam(), "launcher", "--job-mode", "serial", "--until-idle", "--workflow", f"run{run}"],
        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    with site.session() as session:
        first, last, finished = session.execute(
            text(
                "SELECT min(e.timestamp) FILTER (WHERE e.from_state = 'READY'), "
                "max(e.timestamp) FILTER (WHERE e.to_state = 'JOB_FINISHED'), "
                "count(*) FILTER (WHERE e.to_state = 'JOB_FINISHED') "
                "FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.workflow = :w"
            ),
            {"w": f"run{run}"},
        ).one()
    if finished != n:
        raise SystemExit(f"only {finished} of {n} jobs finished")
    return n / (last - first).total_seconds()


def raw_run(n: int, width: int) -> float:
    """Processes per second through a bare pool of ``width`` threads."""
    true = shutil.which("true") or "/bin/true"
    start = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(lambda _: subprocess.run([true], check=True), range(n)))
    return n / (time.perf_counter() - start)


def _started(site: Site) -> int:
    with site.session() as session:
        return session.execute(text("SELECT count(DISTINCT e.job_id) FROM job_events e JOIN jobs j ON j.id = e.job_id"
                                    " WHERE j.workflow = 'latency' AND e.to_state = 'RUNNING'")).scalar_one()  # fmt: skip


def latency(site: Site, count: int) -> list[float]:
    """Seconds from READY to RUNNING for jobs added one by one while a launcher waits."""
    env = {**os.environ, "BALSAM_SITE": str(site.settings.path)}
    launcher = subprocess.Popen(
        [balsam(), "launcher", "--job-mode", "serial", "--workflow", "latency"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(2)  # started and idle
        for _ in range(count):
            site.add_job("true", workflow="latency")
            time.sleep(0.2)
        deadline = time.monotonic() + 30  # a launcher slow to start (a loaded machine) still runs them all
        while _started(site) < count and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        launcher.terminate()
        launcher.wait(timeout=30)
    with site.session() as session:
        rows = session.execute(
            text(
                "SELECT extract(epoch FROM max(e.timestamp) FILTER (WHERE e.to_state = 'RUNNING') "
                " - min(e.timestamp) FILTER (WHERE e.to_state = 'READY')) "
                "FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.workflow = 'latency' GROUP BY j.id"
            )
        ).scalars().all()
    return [float(r) for r in rows if r is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-jobs", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="100 jobs, 1 round, 3 latency jobs: checks the bench runs (what the test runs)")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.repeat, args.latency_jobs = 100, 1, 3
    width = len(os.sched_getaffinity(0))
    folder = Path(tempfile.mkdtemp(prefix="balsam-bench-"))
    site = Site.init(folder / "site", name="bench")
    try:
        site.add_app("true", "true")
        launcher_rates, raw_rates = [], []
        for run in range(args.repeat):
            # Side by side in each round, so a noisy neighbour slows both.
            launcher_rates.append(launcher_run(site, args.jobs, width, run))
            raw_rates.append(raw_run(args.jobs, width))
            print(
                f"round {run + 1}: launcher {launcher_rates[-1]:7.0f} jobs/s   raw pool {raw_rates[-1]:7.0f} /s   "
                f"ratio {launcher_rates[-1] / raw_rates[-1]:.2f}",
                flush=True,
            )
        lat = latency(site, args.latency_jobs)
        med_l, med_r = statistics.median(launcher_rates), statistics.median(raw_rates)
        ratios = [a / b for a, b in zip(launcher_rates, raw_rates, strict=True)]
        print()
        print(f"{args.jobs} jobs of `true`, serial mode, {width} at a time, {args.repeat} rounds (medians)")
        print(f"  launcher        {med_l:8.0f} jobs/s")
        print(f"  raw pool        {med_r:8.0f} processes/s")
        print(f"  ratio           {statistics.median(ratios):8.2f}   (target >= 0.5)")
        if not lat:
            print("  READY->RUNNING  none measured (no job of the launcher started within 30 s)")
        else:
            print(
                f"  READY->RUNNING  {statistics.median(lat) * 1000:8.1f} ms median of {len(lat)} "
                f"(min {min(lat) * 1000:.1f}, max {max(lat) * 1000:.1f}; target < 100 ms)"
            )
    finally:
        site.close()
        EmbeddedPostgres(site.settings).stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
