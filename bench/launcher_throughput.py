"""Benchmark: how fast one launcher runs tiny jobs, beside a bare Popen pool and Parsl. Prints figures only.

    python bench/launcher_throughput.py [--jobs 5000 20000] [--repeat 3] [--latency-jobs 30] [--no-parsl] [--smoke]

Throughput, for each ``--jobs`` size, in rounds that run the three side by side (so a noisy
neighbour slows all three):

- the launcher: that many jobs of ``true`` through one launcher in serial mode on this host, timed
  from the first job taken (its first event after READY) to the last one finished (from the event log);
- the raw baseline: as many ``true`` through a pool of threads as wide as the launcher (one per
  core), each starting a process with ``subprocess`` and waiting for it;
- the same pool where each task also gets a new folder of its own as working directory and its
  stdout and stderr in files there, as a launcher's jobs do: on a journaling filesystem that costs
  about as much as starting ``true``, a floor no launcher can go under (printed beside, as a ratio too).
  The site and every folder go under ``TMPDIR``: on ext4 without a journal (these machines' root
  filesystem) a folder made soon after many were removed costs 20 times more, which this line shows
  (and the first line says which filesystem it is); docs/architecture.md ("Tiny tasks") says how the
  figures there were taken;
- Parsl's HighThroughputExecutor with ``bash_app`` running ``true``, as many workers as the
  launcher has cores, timed from the first submission to the last result (after a warm-up batch,
  as the launcher's start is not timed either). Parsl is no dependency of the project: the bench
  installs it with pip into a scratch virtual environment of its own (kept under
  ``~/.cache/balsam-bench``, made again when it does not work). With ``--smoke`` Parsl is skipped
  when it cannot be installed within a minute; ``--no-parsl`` skips it always.

Both ratios are printed, launcher/raw and launcher/Parsl (medians over the rounds of the ratio in
each round). Beside them, what a load-independent reading needs: the CPU each part used per job (the
launcher process, its database server, the tasks; the raw pool's own process and tasks), and the
launcher's writes per job (row updates of ``jobs`` by the server's statistics, events in the log).

Latency: an idle launcher is waiting; jobs are added one at a time, and the time from each one's
READY event to its RUNNING event is measured (medians quoted).

Targets (issue 20): launcher at least 0.8x the raw pool, as good at 20,000 jobs as at 5,000;
under 100 ms from READY to RUNNING.
"""

from __future__ import annotations

import argparse
import resource
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from balsam.site import Site
from balsam.site.postgres import EmbeddedPostgres

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cputime import run_measured, server_cpu_s  # noqa: E402
from scratchfs import describe  # noqa: E402
from sigterm import stop_on_sigterm  # noqa: E402

PARSL_REQUIREMENT = "parsl>=2024.1"
PARSL_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "balsam-bench" / "parsl-venv"

# Run by the scratch environment's Python: N bash_app tasks of `true` through HTEX; prints tasks/s.
PARSL_SCRIPT = """
import json, sys, tempfile, time
import parsl
from parsl.app.app import bash_app
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

n, width = int(sys.argv[1]), int(sys.argv[2])
run_dir = tempfile.mkdtemp(prefix="parsl-bench-")
htex = HighThroughputExecutor(label="htex", max_workers_per_node=width, address="127.0.0.1", loopback_address="127.0.0.1",
                              provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))
parsl.load(Config(executors=[htex], run_dir=run_dir, strategy="none", usage_tracking=0))

@bash_app
def true_app():
    return "true"

try:
    for f in [true_app() for _ in range(4 * width)]:  # warm-up: workers up and connected
        f.result()
    start = time.perf_counter()
    futures = [true_app() for _ in range(n)]
    for f in futures:
        f.result()
    print(json.dumps({"rate": n / (time.perf_counter() - start), "version": parsl.__version__}), flush=True)
finally:
    parsl.dfk().cleanup()
"""


class Parsl:
    """Parsl in a scratch virtual environment: made (or found working) once, then run once per round."""

    def __init__(self, install_timeout: float | None) -> None:
        self.python = PARSL_VENV / "bin" / "python"
        self.reason = ""  # why Parsl is not run, when it is not
        self.version = ""
        try:
            if not self._works():
                shutil.rmtree(PARSL_VENV, ignore_errors=True)
                venv.create(PARSL_VENV, with_pip=True)
                subprocess.run([str(self.python), "-m", "pip", "install", "-q", PARSL_REQUIREMENT], check=True,
                               timeout=install_timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
                if not self._works():
                    self.reason = "installed, but `import parsl` fails"
        except subprocess.TimeoutExpired:
            self.reason = f"not installed within {install_timeout:g} s"
        except (subprocess.CalledProcessError, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            self.reason = f"cannot be installed: {detail.decode(errors='replace').strip().splitlines()[-1:] or exc}"

    def _works(self) -> bool:
        if not self.python.exists():
            return False
        run = subprocess.run([str(self.python), "-c", "import parsl; print(parsl.__version__)"], capture_output=True, text=True, check=False)
        self.version = run.stdout.strip()
        return run.returncode == 0

    @property
    def ok(self) -> bool:
        return not self.reason

    def run(self, n: int, width: int) -> float:
        """Tasks per second through HTEX with ``width`` workers."""
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
            script.write(PARSL_SCRIPT)
        try:
            # Parsl starts its interchange and worker pool by their script names: its bin/ goes first on PATH.
            env = {**os.environ, "PATH": f"{self.python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
            run = subprocess.run([str(self.python), script.name, str(n), str(width)], capture_output=True, text=True,
                                 check=False, timeout=max(600, n / 10), env=env)  # fmt: skip
        finally:
            os.unlink(script.name)
        lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
        if run.returncode != 0 or not lines:
            raise SystemExit(f"the Parsl run failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
        return float(json.loads(lines[-1])["rate"])


def balsam() -> str:
    return str(Path(sys.executable).with_name("balsam"))


@dataclass
class Run:
    """One run's rate, and the CPU it used per task (ms): the process(es) running the tasks, the
    tasks themselves, and (the launcher's) the database server; and its writes to the database per job."""

    rate: float
    own_ms: float
    tasks_ms: float
    server_ms: float = 0.0
    updates: float = 0.0  # row updates of the jobs table
    events: float = 0.0  # rows added to job_events (after the one that made it READY)


def launcher_run(site: Site, n: int, width: int, run: int) -> Run:
    """Jobs per second through one serial-mode launcher."""
    site.add_jobs([{"app": "true", "workflow": f"run{run}", "node_packing_count": width} for _ in range(n)])
    env = {**os.environ, "BALSAM_SITE": str(site.settings.path)}
    before = updates_of_jobs(site)
    server = server_cpu_s(site)
    code, own, tasks = run_measured([balsam(), "launcher", "--job-mode", "serial", "--until-idle", "--workflow", f"run{run}"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    server = server_cpu_s(site) - server
    if code != 0:
        raise SystemExit(f"the launcher exited {code}")
    updates = updates_of_jobs(site, at_least=before + 2 * n) - before
    with site.session() as session:
        first, last, finished, events = session.execute(
            text(
                "SELECT min(e.timestamp) FILTER (WHERE e.from_state = 'READY'), "
                "max(e.timestamp) FILTER (WHERE e.to_state = 'JOB_FINISHED'), "
                "count(*) FILTER (WHERE e.to_state = 'JOB_FINISHED'), "
                "count(*) FILTER (WHERE e.from_state <> 'CREATED') "
                "FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.workflow = :w"
            ),
            {"w": f"run{run}"},
        ).one()
    if finished != n:
        raise SystemExit(f"only {finished} of {n} jobs finished")
    ms = 1000 / n
    return Run(n / (last - first).total_seconds(), own * ms, tasks * ms, server * ms, updates / n, events / n)


def updates_of_jobs(site: Site, at_least: int = 0) -> int:
    """Row updates of the jobs table so far, by the server's statistics. A backend reports its counts
    when it ends or within a second: wait (up to 5 s) for ``at_least``."""
    deadline = time.monotonic() + 5
    while True:
        with site.session() as session:
            session.execute(text("SELECT pg_stat_clear_snapshot()"))
            count = session.execute(text("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'jobs'")).scalar_one()
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def raw_run(n: int, width: int) -> Run:
    """Processes per second through a bare pool of ``width`` threads."""
    true = shutil.which("true") or "/bin/true"
    own, tasks = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(lambda _: subprocess.run([true], check=True), range(n)))
    rate = n / (time.perf_counter() - start)
    own_after, tasks_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    ms = 1000 / n
    return Run(rate, (cpu(own_after) - cpu(own)) * ms, (cpu(tasks_after) - cpu(tasks)) * ms)


def cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def raw_files_run(n: int, width: int, folder: Path) -> float:
    """The same pool, each task also given what a launcher must give it: its own new folder as working
    directory and its stdout and stderr in files there. What that costs on this filesystem no launcher
    can save; this figure shows it beside the bare one."""
    true = shutil.which("true") or "/bin/true"
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC

    def one(i: int) -> None:
        cwd = folder / str(i)
        cwd.mkdir(parents=True)
        out, err = os.open(cwd / "job.out", flags, 0o666), os.open(cwd / "job.err", flags, 0o666)
        try:
            subprocess.run([true], check=True, cwd=cwd, stdout=out, stderr=err, start_new_session=True)
        finally:
            os.close(out)
            os.close(err)

    start = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(one, range(n)))
    rate = n / (time.perf_counter() - start)
    shutil.rmtree(folder, ignore_errors=True)
    return rate


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


def median_or_dash(values: list[float], fmt: str) -> str:
    return format(statistics.median(values), fmt) if values else "-"


def throughput(site: Site, parsl: Parsl | None, n: int, width: int, rounds: int, first_run: int, scratch: Path) -> None:
    launcher_rates, raw_rates, files_rates, parsl_rates = [], [], [], []
    launcher_runs, raw_runs = [], []
    for r in range(rounds):
        # Side by side in each round, so a noisy neighbour slows all three.
        launcher_runs.append(launcher_run(site, n, width, first_run + r))
        raw_runs.append(raw_run(n, width))
        launcher_rates.append(launcher_runs[-1].rate)
        raw_rates.append(raw_runs[-1].rate)
        files_rates.append(raw_files_run(n, width, scratch / f"raw{first_run + r}"))
        line = (f"{n} jobs, round {r + 1}: launcher {launcher_rates[-1]:7.0f} jobs/s   raw pool {raw_rates[-1]:7.0f} /s   "
                f"launcher/raw {launcher_rates[-1] / raw_rates[-1]:.2f}")  # fmt: skip
        if parsl is not None and parsl.ok:
            parsl_rates.append(parsl.run(n, width))
            line += f"   Parsl {parsl_rates[-1]:7.0f} /s   launcher/Parsl {launcher_rates[-1] / parsl_rates[-1]:.2f}"
        print(line, flush=True)
    raw_ratio = [a / b for a, b in zip(launcher_rates, raw_rates, strict=True)]
    parsl_ratio = [a / b for a, b in zip(launcher_rates, parsl_rates, strict=True)] if parsl_rates else []
    print()
    print(f"{n} jobs of `true`, serial mode, {width} at a time, {rounds} round(s) (medians); load average {os.getloadavg()[0]:.2f}")
    print(f"  launcher              {statistics.median(launcher_rates):8.0f} jobs/s")
    print(f"  raw Popen pool        {statistics.median(raw_rates):8.0f} tasks/s")
    print(f"  raw pool, own folder and output files  {statistics.median(files_rates):8.0f} tasks/s")
    if parsl is None:
        print("  Parsl HTEX bash_app   skipped (--no-parsl)")
    elif parsl.ok:
        print(f"  Parsl HTEX bash_app   {statistics.median(parsl_rates):8.0f} tasks/s   (parsl {parsl.version})")
    else:
        print(f"  Parsl HTEX bash_app   skipped: {parsl.reason}")
    print(f"  launcher/raw          {statistics.median(raw_ratio):8.2f}   (target >= 0.8)")
    print(f"  launcher/Parsl        {median_or_dash(parsl_ratio, '8.2f'):>8}")
    files_ratio = [a / b for a, b in zip(launcher_rates, files_rates, strict=True)]
    print(f"  launcher/(raw pool with folder and files)  {statistics.median(files_ratio):8.2f}")
    med = statistics.median
    print(f"  CPU per job, launcher: {med(x.own_ms for x in launcher_runs):.3f} ms itself, {med(x.server_ms for x in launcher_runs):.3f} ms"
          f" its database server, {med(x.tasks_ms for x in launcher_runs):.3f} ms the tasks")
    print(f"  CPU per task, raw pool: {med(x.own_ms for x in raw_runs):.3f} ms itself, {med(x.tasks_ms for x in raw_runs):.3f} ms the tasks")
    print(f"  database writes per job: {med(x.updates for x in launcher_runs):.2f} row updates of jobs,"
          f" {med(x.events for x in launcher_runs):.2f} events")
    print(flush=True)


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[5000, 20000], help="sizes to measure, each in its own rounds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-jobs", type=int, default=30)
    parser.add_argument("--no-parsl", action="store_true", help="leave Parsl out")
    parser.add_argument("--smoke", action="store_true",
                        help="100 jobs, 1 round, 3 latency jobs, Parsl only if installed within 60 s: checks the bench runs (what the test runs)")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.repeat, args.latency_jobs = [100], 1, 3
    width = len(os.sched_getaffinity(0))
    parsl = None if args.no_parsl else Parsl(install_timeout=60 if args.smoke else 900)
    if parsl is not None and not parsl.ok:
        print(f"Parsl skipped: {parsl.reason}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="balsam-bench-"))
    print(f"scratch: {folder} on {describe(folder)}", flush=True)
    site = Site.init(folder / "site", name="bench")
    try:
        site.add_app("true", "true")
        for index, n in enumerate(args.jobs):
            throughput(site, parsl, n, width, args.repeat, index * args.repeat, folder)
        lat = latency(site, args.latency_jobs)
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
