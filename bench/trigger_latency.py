"""Benchmark: from a file closed in a watched folder to its job created, and to RUNNING. Figures only.

    python bench/trigger_latency.py [--single 50] [--burst 1000] [--smoke]

A fresh site (its own embedded PostgreSQL) with an app ``true`` and one trigger rule on a new
folder, watched by the site's ``TriggerWatcher`` (the agent's thread, run in this process), while
an idle ``balsam launcher --job-mode serial`` waits for work. Files are written and closed one at
a time (``--single``, 0.2 s apart), then ``--burst`` files as fast as they can be written. For
each file: the time from its close (wall clock, taken right after ``close()``) to its job's
creation (``jobs.created_at``) and to its RUNNING event (``job_events``), on the same host clock.

The raw baseline, in the same run: a bare watchdog observer on another folder, and the time from
a file's close to its ``closed`` event reaching the observer's handler (what any watcher pays
before it can do anything).

Target (from the issue): median under 500 ms from closed to created.
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
from pathlib import Path

from sqlalchemy import text

from balsam.site import Site
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.triggers import TriggerWatcher, add_rule
from sigterm import stop_on_sigterm  # noqa: E402


def drop(folder: Path, name: str) -> float:
    with open(folder / name, "wb") as out:
        out.write(b"data\n")
    return time.time()


def figures(site: Site, closed: dict[str, float], timeout_s: float = 120) -> tuple[list[float], list[float]]:
    deadline = time.monotonic() + timeout_s
    query = text(
        "SELECT j.name, extract(epoch FROM j.created_at) AS created,"
        " extract(epoch FROM min(e.timestamp) FILTER (WHERE e.to_state = 'RUNNING')) AS running"
        " FROM jobs j LEFT JOIN job_events e ON e.job_id = j.id WHERE j.name = ANY(:names) GROUP BY j.id"
    )
    while True:
        with site.session() as session:
            rows = session.execute(query, {"names": list(closed)}).all()
        if (len(rows) == len(closed) and all(r.running is not None for r in rows)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    created = [float(r.created) - closed[r.name] for r in rows]
    running = [float(r.running) - closed[r.name] for r in rows if r.running is not None]
    if len(rows) < len(closed):
        print(f"  (only {len(rows)} of {len(closed)} jobs were created within {timeout_s:g} s)")
    return created, running


def raw_baseline(folder: Path, count: int) -> list[float]:
    """Close -> ``closed`` event at a bare watchdog handler, for files dropped one at a time."""
    import threading

    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    seen: dict[str, float] = {}
    arrived = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_closed(self, event) -> None:
            seen[Path(event.src_path).name] = time.time()
            arrived.set()

    observer = Observer()
    observer.schedule(Handler(), str(folder))
    observer.start()
    closed = {}
    try:
        for i in range(count):
            arrived.clear()
            name = f"raw{i:04d}.dat"
            closed[name] = drop(folder, name)
            arrived.wait(5)
            time.sleep(0.05)
    finally:
        observer.stop()
        observer.join()
    return [seen[n] - t for n, t in closed.items() if n in seen]


def report(label: str, values: list[float]) -> None:
    if not values:
        print(f"  {label:22s} (none)")
        return
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    print(f"  {label:22s} median {statistics.median(ordered) * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms   max {ordered[-1] * 1000:8.1f} ms")


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=50, help="files dropped one at a time")
    parser.add_argument("--burst", type=int, default=1000, help="files dropped at once")
    parser.add_argument("--smoke", action="store_true", help="3 single files, a burst of 20: checks the bench runs (what the test runs)")
    args = parser.parse_args()
    if args.smoke:
        args.single, args.burst = 3, 20
    root = Path(tempfile.mkdtemp(prefix="balsam-bench-"))
    site = Site.init(root / "site", name="bench")
    inbox = root / "inbox"
    inbox.mkdir()
    launcher = None
    try:
        site.add_app("true", "true {infile}")
        add_rule(site, "bench", inbox, "true", {"infile": "{path}"}, patterns=["*.dat"])
        watcher = TriggerWatcher(site)
        thread, stop = watcher.start()
        env = {**os.environ, "BALSAM_SITE": str(site.settings.path)}
        launcher = subprocess.Popen([str(Path(sys.executable).with_name("balsam")), "launcher", "--job-mode", "serial"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(3)  # the launcher idle, the rule watched
        single = {}
        for i in range(args.single):
            name = f"single{i:04d}.dat"
            single[name] = drop(inbox, name)
            time.sleep(0.2)
        created, running = figures(site, single)
        raw = root / "raw"
        raw.mkdir()
        baseline = raw_baseline(raw, args.single)
        print(f"{args.single} files one at a time (0.2 s apart), idle serial launcher:")
        report("closed -> created", created)
        report("closed -> RUNNING", running)
        report("raw: closed -> event", baseline)
        burst = {}
        for i in range(args.burst):
            name = f"burst{i:05d}.dat"
            burst[name] = drop(inbox, name)
        created, running = figures(site, burst)
        with site.session() as session:
            batches = session.execute(text("SELECT count(DISTINCT created_at) FROM jobs WHERE name LIKE 'burst%'")).scalar()
        print(f"burst of {args.burst} files ({batches} transactions):")
        report("closed -> created", created)
        report("closed -> RUNNING", running)
        stop.set()
        thread.join(10)
    finally:
        if launcher is not None:
            launcher.terminate()
            launcher.wait(timeout=30)
        site.close()
        EmbeddedPostgres(site.settings).stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
