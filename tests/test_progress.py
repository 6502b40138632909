"""Progress in the terminal: ``argo watch``'s live display on a real pseudo-terminal and its plain
lines when piped, ``balsam job add --from`` showing progress on a terminal only, and the launcher's
progress lines in its log."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import balsam_script
from launcher_helpers import run_launcher
from terminal_helpers import on_terminal, plain
from web_helpers import chain, web_federation

from balsam.progress import Throughput

pytestmark = pytest.mark.timeout(300)
ARGO = [sys.executable, "-m", "balsam.argo.cli"]
PLAIN_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  (\S+( @\S+)?  \S+ -> \S+ |workflow \d+ \w+: ).*$")


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    with web_federation(tmp_path_factory.mktemp("progress"), run_s=1.5) as federation:
        yield federation


def many(name: str, count: int) -> dict:
    return {"name": name, "tasks": [{"name": f"t{i}", "app": "run"} for i in range(count)]}


def test_watch_on_a_terminal_draws_counts_rate_and_time_left_until_the_workflow_ends(fed):
    workflow = fed.submit(many("live", 30))
    status, out = on_terminal([*ARGO, "watch", str(workflow), "--address", fed.fed.address], timeout_s=120)
    seen = plain(out)
    assert status == 0, seen[-3000:]
    assert "\x1b[" in out  # drawn with terminal codes (redrawn in place), not printed as a log
    assert f"workflow {workflow} 'live'" in seen
    # while it ran the display showed tasks running, and at the end all 30 finished
    assert re.search(r"RUNNING\s+\d+", seen), seen[-3000:]
    final = seen[seen.rindex(f"workflow {workflow} 'live'"):]
    assert "finished · 30 tasks · 30 ended (100.0%)" in final, final
    assert re.search(r"JOB_FINISHED\s+30\b", final), final
    rate = re.search(r"rate ([0-9.,]+) tasks/s \(last 60 s\) · time left none", final)
    assert rate and float(rate.group(1).replace(",", "")) > 0, final
    assert "JOB_FINISHED" in final.split("last events", 1)[1]  # the last events are listed under the counts


def test_watch_mid_run_says_how_much_time_is_left(fed):
    workflow = fed.submit(chain("paced", 6))  # one after another: for seconds, some have ended and some not
    status, out = on_terminal([*ARGO, "watch", str(workflow), "--address", fed.fed.address], timeout_s=120)
    seen = plain(out)
    assert status == 0, seen[-3000:]
    # at some frame some tasks had ended and others had not: a rate and an estimate were shown
    assert re.search(r"time left about \d+ s", seen), seen[-4000:]


def test_watch_piped_or_with_events_prints_plain_lines(fed):
    workflow = fed.submit(many("piped", 5))
    piped = subprocess.run([*ARGO, "watch", str(workflow), "--address", fed.fed.address], capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert "\x1b" not in piped.stdout and "time left" not in piped.stdout
    assert lines and all(PLAIN_LINE.match(line) for line in lines), piped.stdout
    assert sum(" -> JOB_FINISHED" in line for line in lines) == 5 and f"workflow {workflow} finished" in lines[-1]
    status, out = on_terminal([*ARGO, "watch", str(workflow), "--events", "--address", fed.fed.address], timeout_s=60)
    shown = [line for line in plain(out).splitlines() if line.strip()]
    assert status == 0 and "time left" not in out
    assert shown == lines  # the same history, line for line, on a terminal with --events


def test_the_rate_counts_from_the_oldest_ending_in_its_window():
    meter = Throughput(window_s=60)
    for second in range(10):  # began 10 s ago: 2 endings a second
        meter.add(2, at=1000.0 + second)
    assert meter.rate(now=1010.0) == pytest.approx(2.0)
    assert meter.time_left_s(100, now=1010.0) == pytest.approx(50.0)
    assert meter.rate(now=1100.0) == 0.0 and meter.time_left_s(5, now=1100.0) is None  # nothing in the last minute


def _job_file(folder, count: int):
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps({"app": "hello", "name": f"j{i}", "params": {"n": str(i)}}) + "\n" for i in range(count)))
    return path


def test_job_add_from_a_large_file_shows_progress_on_a_terminal_and_keeps_stdout_one_id_a_line(site, tmp_path):
    site.add_app("hello", "echo {n}")
    path = _job_file(tmp_path, 30_000)
    ids = tmp_path / "ids.txt"
    status, out = on_terminal([balsam_script(), "job", "add", "--from", str(path)], stdout_file=ids, timeout_s=240)
    seen = plain(out)
    assert status == 0, seen[-2000:]
    assert re.search(r"storing jobs .*\d+/30000", seen), seen[-2000:]  # counted as it went, on the terminal (stderr)
    assert re.search(r"added 30000 jobs in [0-9.]+ s", seen), seen[-2000:]
    lines = ids.read_text().splitlines()
    assert len(lines) == 30_000 and all(line.isdigit() for line in lines)  # stdout: ids only, no bar
    assert site.count_jobs() == {"READY": 30_000}


def test_job_add_from_a_file_piped_shows_no_progress(site, tmp_path):
    site.add_app("hello", "echo {n}")
    path = _job_file(tmp_path, 3000)
    run = subprocess.run([balsam_script(), "job", "add", "--from", str(path)], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(r"added 3000 jobs in [0-9.]+ s\n", run.stderr), run.stderr  # no bar, no terminal codes
    assert len(run.stdout.splitlines()) == 3000


def test_the_launcher_logs_a_progress_line_at_its_interval(site):
    site.add_app("nap", f"{sys.executable} -c 'import time; time.sleep(0.4)'")
    site.add_jobs([{"app": "nap", "name": f"n{i}"} for i in range(12)])
    run = run_launcher(site, "--job-mode", "serial", "--until-idle", "--progress", "0.5", timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (site.settings.logs_dir / "launcher.log").read_text()
    lines = [line for line in log.splitlines() if " progress: " in line]
    figures = [re.search(r"progress: (\d+) done, (\d+) failed, (\d+) running, (\d+) queued.*; ([0-9.]+) jobs/s over the last 60 s", line)
               for line in lines]  # fmt: skip
    assert len(lines) >= 3 and all(figures), log[-3000:]  # the run lasted seconds: a line every half second, not one at the end only
    done = [int(f.group(1)) for f in figures]
    assert done == sorted(done) and done[-1] == 12 and int(figures[-1].group(2)) == 0, lines
    assert any(0 < d < 12 for d in done), lines  # one came mid-run, with some done and some not
    assert float(figures[-1].group(5)) > 0, lines  # and a rate once jobs had ended


def test_a_bad_progress_interval_is_one_clear_error(site):
    run = run_launcher(site, "--progress", "0", timeout=60)
    assert run.returncode == 1 and "the progress interval must be more than 0" in run.stderr and "Traceback" not in run.stderr
