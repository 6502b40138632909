"""How long a user waits for the CLI: `balsam --help`, `argo --help`, `balsam job ls`, beside `python -c pass`.

Each command runs as its own process, as a user types it, several times, interleaved (so a
burst of load on a shared machine hits them all alike); medians are printed with the baseline
measured in the same run, and what each costs above it. Beside the wall time, the CPU time of
the process (user + system): on a loaded machine the wall time grows with the load, the CPU time
much less. `job ls` reads a site of its own (an embedded PostgreSQL, started before and stopped
after) holding a few hundred jobs; the database server's own work is in its wall time only.

    python bench/cli_speed.py            # 15 rounds
    python bench/cli_speed.py --smoke    # 2 rounds, a small site (what the test runs)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from sigterm import stop_on_sigterm  # noqa: E402

BIN = Path(sys.executable).parent


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process: user + system). On a loaded machine the wall time
    grows with the load; the CPU time much less, so it tells a change in the command from the load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="2 rounds, 20 jobs: checks the bench runs")
    args = parser.parse_args()
    rounds, jobs = (2, 20) if args.smoke else (args.rounds, args.jobs)

    from balsam.site.api import Site

    with tempfile.TemporaryDirectory(prefix="cli-speed-") as tmp:
        site = Site.init(Path(tmp) / "site", name="speed")
        try:
            site.add_app("sim", "simulate --n {n}")
            site.add_jobs([{"app": "sim", "params": {"n": i}} for i in range(jobs)])
            env = {**os.environ, "BALSAM_SITE": str(site.settings.path), "ARGO_CLIENT_CONFIG": str(Path(tmp) / "client.toml")}
            # Bytecode caches as an installed package has them (the warm-up run writes any missing):
            # without them every run would compile the project's modules again.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "balsam --help": [str(BIN / "balsam"), "--help"],
                "argo --help": [str(BIN / "argo"), "--help"],
                "balsam job ls": [str(BIN / "balsam"), "job", "ls"],
            }
            for argv in commands.values():
                _time(argv, env)  # warm the page cache and the database's
            times: dict[str, list[float]] = {name: [] for name in commands}
            cpu: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(rounds):
                for name, argv in commands.items():
                    wall, used = _time(argv, env)
                    times[name].append(wall)
                    cpu[name].append(used)
        finally:
            site.close()
            from balsam.site.postgres import EmbeddedPostgres

            EmbeddedPostgres(site.settings).stop()
    base = statistics.median(times["python -c pass"])
    base_cpu = statistics.median(cpu["python -c pass"])
    print(f"CLI start-up, median of {rounds} runs each (interleaved), job ls over {jobs} jobs; load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':<16} {'median s':>9} {'min s':>7} {'above baseline s':>17} {'x baseline':>11} {'cpu s':>7} {'x baseline cpu':>15}")
    for name, values in times.items():
        median, used = statistics.median(values), statistics.median(cpu[name])
        print(f"{name:<16} {median:>9.3f} {min(values):>7.3f} {median - base:>17.3f} {median / base:>11.1f} "
              f"{used:>7.3f} {used / base_cpu if base_cpu else float('nan'):>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
