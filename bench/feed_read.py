"""Benchmark: the coordinator's event feed reading what was committed. Prints figures only.

    python bench/feed_read.py [--events 200000] [--repeat 5] [--smoke]

The feed's reader (``balsam.argo.feed.EventFeed.read``) handles every event committed, on the
server's interpreter: with 10 sites and 100,000 tasks it was the stage that fell behind (events
published a median of 21 s after the sites saw them acknowledged, then sent to watchers within
0.02 s). Here it reads ``--events`` events of a real coordinator database (its embedded PostgreSQL,
its schema; the events as 10 workflows of tasks of 8 site moves each write them), from the first to
the last, as it does after a burst of commits. Beside it, in the same run: the raw floor, the same
query in the same batches through a bare cursor, its rows dropped.
Printed: microseconds an event (wall, and this process's CPU), medians of ``--repeat`` passes.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sigterm import stop_on_sigterm  # noqa: E402

from balsam.argo.config import ServerSettings
from balsam.argo.database import Database
from balsam.argo.db.engine import cluster, connect
from balsam.argo.feed import EVENTS, READ_BATCH, EventFeed
from balsam.argo.workflows import WorkflowStore
from balsam.gcpause import settle_for_serving
from balsam.postgres import free_port

MOVES = ["CREATED", "READY", "STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE", "POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"]


def fill(engine, events: int) -> None:
    """``events`` events of tasks of 10 workflows (projects p1..p10), 8 moves a task, in one COPY."""
    lines = io.StringIO()
    for i in range(events):
        task, move = divmod(i, 8)
        workflow = task % 10 + 1
        lines.write(f"{workflow}/t{task:07d}\t{workflow}\tsite{task % 10}\t{MOVES[move]}\t{MOVES[move + 1]}"
                    f"\t2026-12-07T10:00:{i % 60:02d}.{i % 1_000_000:06d}+00:00\t\t1\treported\n")  # fmt: skip
    lines.seek(0)
    with engine.begin() as connection:
        cursor = connection.connection.cursor()
        cursor.execute("INSERT INTO workflows (id, name, status, project) SELECT g, 'w' || g, 'running', 'p' || g FROM generate_series(1, 10) g")
        cursor.copy_expert("COPY task_events (task_id, workflow_id, site, from_state, to_state, at, message, attempt, move) FROM STDIN", lines)
        cursor.execute("ANALYZE task_events")


def timed(read) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    count = read()
    return time.perf_counter() - wall, time.process_time() - cpu, count


def feed_pass(db: Database) -> int:
    feed = EventFeed(db, WorkflowStore(db), capacity=10**9)  # a ring that keeps all: nothing cut while timing
    feed.high = feed.floor = 0
    while feed.read():
        pass
    return feed._held


def raw_pass(engine) -> int:
    count, high = 0, 0
    while True:
        with engine.begin() as connection:
            cursor = connection.connection.cursor()
            cursor.execute(f"{EVENTS} WHERE e.id > %(high)s ORDER BY e.id LIMIT %(n)s", {"high": high, "n": READ_BATCH})
            rows = cursor.fetchall()
        count += len(rows)
        if len(rows) < READ_BATCH:
            return count
        high = rows[-1][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a size the test suite runs: 20,000 events, one pass")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.repeat = 20_000, 1
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be at least 1")
    stop_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="balsam-feed-read-"))
    settings = ServerSettings(data=root / "argo", address=f"127.0.0.1:{free_port()}")
    settings.save()
    engine = connect(settings)
    try:
        fill(engine, args.events)
        db = Database(engine)
        settle_for_serving()  # the collector as the server sets it
        figures: dict[str, list[tuple[float, float]]] = {"feed": [], "raw": []}
        for _ in range(args.repeat):  # alternated, so that both see the same machine
            for name, read in (("feed", lambda: feed_pass(db)), ("raw", lambda: raw_pass(engine))):
                wall, cpu, count = timed(read)
                assert count == args.events, f"{name} read {count} of {args.events} events"
                figures[name].append((wall / count * 1e6, cpu / count * 1e6))
        (feed_wall, feed_cpu), (raw_wall, raw_cpu) = ((statistics.median(w for w, _ in figures[k]), statistics.median(c for _, c in figures[k]))
                                                      for k in ("feed", "raw"))  # fmt: skip
        print(f"the feed's reader, {args.events:,} events (median of {args.repeat})  {feed_wall:.2f} us an event  its CPU {feed_cpu:.2f} us")
        print(f"raw cursor, the same query (floor)            {raw_wall:.2f} us an event  its CPU {raw_cpu:.2f} us")
        print(f"the reader takes {feed_wall / raw_wall:.2f}x the raw floor")
    finally:
        engine.dispose()
        cluster(settings).stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
