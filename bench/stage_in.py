"""Benchmark: stage-in of many small files through a site's transfer service, against a bare copy
loop. Prints figures only.

    python bench/stage_in.py [--jobs 2000] [--size 4096] [--repeat 3] [--smoke]

``--jobs`` jobs each declare one input file of ``--size`` bytes; the time is from the first
service round to every job being STAGED_IN (the whole path: discovery, batching, copies, state
changes and events in the database). In the same run, the raw baseline: the same files copied
with ``shutil.copyfile`` in one loop into folders made beforehand, nothing else. Both copy (the
service's hard links are turned off), so the ratio is the service's overhead per file. Medians
of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from balsam.site import Site
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.transfers import TransferService
from sigterm import stop_on_sigterm  # noqa: E402


def service_run(site: Site, sources: list[Path], run: int) -> float:
    site.add_jobs([{"app": "cat", "params": {"f": "x"}, "workflow": f"run{run}", "inputs": {"x": s.as_uri()}} for s in sources])
    service = TransferService(site)
    started = time.perf_counter()
    while True:
        service.round()
        with site.session() as session:
            left = session.scalar(text("SELECT count(*) FROM jobs WHERE workflow = :w AND state <> 'STAGED_IN'"), {"w": f"run{run}"})
        if not left:
            return time.perf_counter() - started
        with site.session() as session:
            failed = session.execute(text("SELECT error FROM transfer_items WHERE state = 'failed' LIMIT 1")).scalar()
        if failed:  # a bench that can never finish says why instead of looping
            raise SystemExit(f"stage-in failed: {failed}")
        time.sleep(0.01)


def raw_run(sources: list[Path], root: Path) -> float:
    folders = [root / str(i) for i in range(len(sources))]
    for folder in folders:
        folder.mkdir(parents=True)
    started = time.perf_counter()
    for source, folder in zip(sources, folders):
        shutil.copyfile(source, folder / "x")
    return time.perf_counter() - started


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="50 jobs, 1 run: checks the bench runs (what the test runs)")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.repeat = 50, 1
    root = Path(tempfile.mkdtemp(prefix="bench-stage-in-"))
    sources = []
    (root / "src").mkdir()
    for i in range(args.jobs):
        path = root / "src" / f"f{i}.dat"
        path.write_bytes(os.urandom(args.size))
        sources.append(path)
    site = Site.init(root / "site", name="bench")
    try:
        site.settings.transfer.link = False
        site.settings.transfer.interval_s = 0.01
        site.settings.transfer.read_roots = [str(root / "src")]  # stage-in sources are confined to the roots a site names
        site.add_app("cat", "cat {f}")
        service_times, raw_times = [], []
        for run in range(args.repeat):
            service_times.append(service_run(site, sources, run))
            raw_times.append(raw_run(sources, root / f"raw{run}"))
            print(f"run {run + 1}: service {service_times[-1]:.2f} s, raw copy loop {raw_times[-1]:.3f} s")
        service_s, raw_s = statistics.median(service_times), statistics.median(raw_times)
        print(f"\n{args.jobs} jobs x 1 file of {args.size} bytes, median of {args.repeat}:")
        print(f"  transfer service: {service_s:.2f} s ({args.jobs / service_s:,.0f} files/s, jobs STAGED_IN)")
        print(f"  raw copy loop:    {raw_s:.3f} s ({args.jobs / raw_s:,.0f} files/s)")
        print(f"  ratio service/raw: {service_s / raw_s:.1f}x")
    finally:
        site.close()
        EmbeddedPostgres(site.settings).stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
