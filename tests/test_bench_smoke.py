"""Every benchmark under bench/ at its ``--smoke`` size, as a real subprocess, so that none can stop
working again without a test noticing (bench/argo_scale.py once stopped at its first call for
months). Each must exit 0 and print its figure lines; what the figures are is never asserted (speed
is the benchmarks' business, not the tests').

The scripts are found by listing bench/, so a new bench is covered as soon as it is added: it needs
a ``--smoke`` size and an entry in FIGURES saying which lines it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

# Files of bench/ that are not run here, and why.
NOT_RUN = {
    "simsite.py": "a module the benches import (the simulated site), not a script",
    "cputime.py": "a module the benches import (CPU seconds of the database server and of a child process), not a script",
    "sigterm.py": "a module the benches import (a SIGTERM stops what they started, as Ctrl-C does), not a script",
    "scratchfs.py": "a module the benches import (which filesystem their scratch folder is on), not a script",
    "web_speed.py": "run by tests/test_bench_web.py, which also checks its figures are measured and skips without chromium",
    "rsync_batch.py": "run by tests/test_rsync_bed.py, beside the bed of network namespaces and sshd it needs (and skips without)",
    "wfctask.py": "the task program bench/wfcommons_makespan.py runs (for Argo and Parsl alike), not a bench",
    "wfcommons_side.py": "the half of bench/wfcommons_makespan.py that runs in its scratch environment (wfcommons, Parsl)",
}

# The lines each bench prints, a pattern each (a number where the figure goes).
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"
FIGURES = {
    "agent_round.py": [rf"{NUMBER} finished runs: model kept\s+{NUMBER} ms\s+refitted each round\s+{NUMBER} ms\s+raw \(no model\)\s+{NUMBER} ms"],
    "argo_submit.py": [rf"submit {NUMBER} tasks \(median of \d+\)\s+{NUMBER} s\s+{NUMBER} us a task\s+the client's CPU {NUMBER} s",
                       rf"raw COPY {NUMBER} rows \(floor\)\s+{NUMBER} s", rf"submit takes {NUMBER}x the raw COPY floor",
                       rf"telling {NUMBER} tasks why they wait \(no site is up\)\s+{NUMBER} s",
                       rf"a backlog of {NUMBER} tasks no site can take costs the coordinator {NUMBER} ms of CPU a second \({NUMBER} with no task\)",
                       rf"listing \d+ ended workflows of {NUMBER} tasks\s+{NUMBER} ms \(median of 20\)\s+counting their tasks instead \(SQL alone\) {NUMBER} ms"
                       rf"\s+a bare unary call \(WhoAmI\) {NUMBER} ms",
                       rf"listing sites beside {NUMBER} ended tasks\s+{NUMBER} ms"],
    "bulk_create.py": [rf"create {NUMBER} jobs \(add_jobs\)\s+{NUMBER}", rf"raw COPY {NUMBER} rows \(floor\)\s+{NUMBER}",
                       rf"add_jobs takes {NUMBER}x the raw COPY floor"],
    "cli_speed.py": [rf"{name}\s+{NUMBER}\s+{NUMBER}\s+-?{NUMBER}\s+{NUMBER}" for name in ("python -c pass", "balsam --help", "argo --help",
                                                                                        "balsam job ls")],
    "dag_latency.py": [rf"within one site \(alpha\)\s+median\s+{NUMBER} ms", rf"within one site, a file each\s+median\s+{NUMBER} ms", rf"across sites \(alpha, beta, \.\.\.\)\s+median\s+{NUMBER} ms",
                       rf"raw: process after process \(no Argo\)\s+median\s+{NUMBER} ms", rf"its steps, median ms:\s+end->released {NUMBER}, released->placed {NUMBER}"],
    "federation_scale.py": [rf"submitted {NUMBER} tasks in {NUMBER} workflows: {NUMBER} s", rf"placement: {NUMBER} tasks/s",
                            rf"sync: {NUMBER} job events applied at {NUMBER}/s", rf"watch: {NUMBER} streams received {NUMBER} events; lag median",
                            rf"\(the feed and the stream alone\): median -?{NUMBER} ms, p99 -?{NUMBER} ms",
                            rf"unary calls: median {NUMBER} ms, p99 {NUMBER} ms .*WhoAmI median {NUMBER} p99 {NUMBER} ms",
                            rf"sites=\d+ tasks=\d+ submit_s={NUMBER} place_per_s={NUMBER} .*watch_lag_p99_ms={NUMBER} unary_p99_ms={NUMBER}"
                            rf" whoami_p99_ms={NUMBER} coordinator_rss_mb={NUMBER} db_mb={NUMBER} raw_copy_s={NUMBER} raw_stream_per_s={NUMBER}"
                            rf" watch_fed_p99_ms=-?{NUMBER}"],
    "feed_read.py": [rf"the feed's reader, {NUMBER} events \(median of \d+\)\s+{NUMBER} us an event\s+its CPU {NUMBER} us",
                     rf"raw cursor, the same query \(floor\)\s+{NUMBER} us an event\s+its CPU {NUMBER} us",
                     rf"the reader takes {NUMBER}x the raw floor"],
    "idle_streams.py": [rf"{what}\s+median\s+{NUMBER} ms\s+p99\s+{NUMBER} ms" for what in ("raw: owner calls, no stream open",
                        r"owner calls, \d+ streams open", "raw: heartbeats, no stream open", r"heartbeats, \d+ streams open")],
    "input_checks.py": [rf"Submit chunk, {NUMBER} tasks .*\s{NUMBER}\s+{NUMBER}\s+{NUMBER}", rf"JSON, {NUMBER} jobs .*\s{NUMBER}\s+{NUMBER}",
                        rf"YAML, {NUMBER} jobs .*\s{NUMBER}\s+{NUMBER}"],
    # Parsl is installed by the bench into a scratch environment; at the smoke size it may be skipped (a clear reason, no figure).
    "launcher_throughput.py": [rf"launcher\s+{NUMBER} jobs/s", rf"raw Popen pool\s+{NUMBER} tasks/s", rf"launcher/raw\s+{NUMBER}",
                               rf"Parsl HTEX bash_app\s+(?:{NUMBER} tasks/s|skipped: \S)", rf"launcher/Parsl\s+(?:{NUMBER}|-)",
                               rf"READY->RUNNING\s+{NUMBER} ms median", rf"CPU per job, launcher: {NUMBER} ms itself, {NUMBER} ms its database server",
                               rf"database writes per job: {NUMBER} row updates of jobs, {NUMBER} events",
                               r"scratch: \S+ on \w"],
    "stage_in.py": [rf"transfer service: {NUMBER} s \({NUMBER} files/s", rf"raw copy loop:\s+{NUMBER} s", rf"ratio service/raw: {NUMBER}x"],
    # Its Parsl half runs only where its scratch environment already is (the smoke installs nothing).
    "wfcommons_makespan.py": [rf"argo\s+makespan\s+{NUMBER} s\s+slots busy\s+{NUMBER}%", r"every task ran exactly once; every output intact",
                              r"Parsl half skipped|parsl\s+makespan", rf"warm-up: a task of no work at each site, {NUMBER} s"],
    "trigger_latency.py": [rf"closed -> created\s.*{NUMBER}", rf"closed -> RUNNING\s.*{NUMBER}", rf"raw: closed -> event\s.*{NUMBER}"],
}

SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in NOT_RUN)


def test_every_bench_script_says_what_it_prints():
    """A bench added without its lines here (or removed while still listed) is named, not skipped."""
    assert set(SCRIPTS) == set(FIGURES), f"bench scripts without FIGURES: {sorted(set(SCRIPTS) - set(FIGURES))};" \
                                         f" FIGURES without a script: {sorted(set(FIGURES) - set(SCRIPTS))}"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_bench_runs_at_its_smoke_size_and_prints_its_figures(script):
    run = subprocess.run([sys.executable, str(BENCH / script), "--smoke"], capture_output=True, text=True, timeout=220)
    out = run.stdout
    assert run.returncode == 0, f"{script} --smoke exited {run.returncode}:\n{out[-3000:]}\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    for pattern in FIGURES.get(script, []):
        assert re.search(pattern, out), f"{script} --smoke did not print a line matching {pattern!r}:\n{out[-3000:]}"
    assert not re.search(r"\bnan\b", out), f"{script} --smoke printed a figure that was not measured (nan):\n{out[-3000:]}"
