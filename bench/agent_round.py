"""Benchmark: what the agent's elastic-queue round costs as a site's history grows. Prints figures only.

    python bench/agent_round.py [--runs 50 500 2000] [--rounds 20] [--smoke]

For each ``--runs`` size, a real site holds that many finished runs of one app (``true``, run by a
real launcher) and a few jobs waiting without a wall time, so the elastic queue counts them by the
app's performance model. Timed, ``--rounds`` times each (medians), the agent's ``backlog()``, the
part of each round that reads the waiting work and estimates it:

- with each model kept a minute (``perf_data.FitCache``, as the agent runs);
- refitted at every round (``FitCache.every_s = 0``: what the agent did before the cache);
- raw baseline, in the same run: the same round with no model at all (``perf.elastic_queue``
  off: the waiting work read, each job counted at ``default_job_min``).
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

from balsam.site import Site
from balsam.site.agent import Agent
from balsam.site.postgres import EmbeddedPostgres

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sigterm import stop_on_sigterm  # noqa: E402


def finish_runs(site: Site, count: int) -> None:
    """``count`` more finished runs of ``true``, by a real launcher."""
    site.add_jobs([{"app": "true", "workflow": "history", "node_packing_count": 2} for _ in range(count)])
    env = {**os.environ, "BALSAM_SITE": str(site.settings.path)}
    balsam = str(Path(sys.executable).with_name("balsam"))
    subprocess.run([balsam, "launcher", "--job-mode", "serial", "--until-idle", "--workflow", "history"], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)  # fmt: skip


def median_ms(agent: Agent, rounds: int) -> float:
    agent.backlog()  # the first fit, and the first look at the tables
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        agent.backlog()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[50, 500, 2000], help="finished runs of the app, in increasing order")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="20 runs, 3 rounds: checks the bench runs (what the test runs)")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.rounds = [20], 3
    folder = Path(tempfile.mkdtemp(prefix="balsam-bench-agent-"))
    site = Site.init(folder / "site", name="bench")
    try:
        site.add_app("true", "true")
        site.add_jobs([{"app": "true", "workflow": "waiting"} for _ in range(5)])  # taken by no launcher: "history" only
        done = 0
        print(f"the agent's backlog() (each round of the elastic queue), median of {args.rounds} rounds:")
        for runs in sorted(args.runs):
            finish_runs(site, runs - done)
            done = runs
            kept = Agent(site)
            refit = Agent(site)
            refit.fits.every_s = 0.0
            site.settings.perf.elastic_queue = False
            bare = median_ms(Agent(site), args.rounds)
            site.settings.perf.elastic_queue = True
            kept_ms, refit_ms = median_ms(kept, args.rounds), median_ms(refit, args.rounds)
            print(f"  {runs:6d} finished runs: model kept {kept_ms:7.1f} ms   refitted each round {refit_ms:7.1f} ms   "
                  f"raw (no model) {bare:7.1f} ms", flush=True)  # fmt: skip
    finally:
        site.close()
        EmbeddedPostgres(site.settings).stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
