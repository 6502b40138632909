"""A site's database going away while its launchers run: nothing lost, nothing run twice, launchers
alive, and the agent starting the database again (docs/architecture.md, "When the database goes away").

Real embedded PostgreSQL servers, SIGKILLed; real launchers as processes; every run of every job
counted in a log file the jobs write themselves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from argo_helpers import wait_for
from balsam.site.agent import agent_pid, start_agent, stop_agent
from balsam.site.api import Site
from balsam.site.postgres import EmbeddedPostgres

pytestmark = pytest.mark.timeout(300)

# Appends its job id to the log when it starts, then sleeps: a job that ran twice is there twice.
# A shell, not Python: 500 interpreters starting would take most of the test's time.
RECORD = "sh -c 'echo \"$BALSAM_JOB_ID\" >> \"$0\"; sleep \"$1\"' {log} {seconds}"


@pytest.fixture
def embedded(tmp_path):
    site = Site.init(tmp_path / "site", name="outage")
    site.add_app("record", RECORD)
    try:
        yield site
    finally:
        stop_agent(site.settings)
        for pid in _launchers(site):
            os.kill(pid, signal.SIGKILL)
        site.close()
        EmbeddedPostgres(site.settings).stop()


def _postmaster(site: Site) -> int:
    return int((site.settings.db_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


def _launchers(site: Site) -> list[int]:
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if " launcher " in cmd and str(site.settings.path) in cmd:
            found.append(pid)
    return found


def _launch(site: Site, *extra: str) -> subprocess.Popen:
    balsam = str(Path(sys.executable).with_name("balsam"))
    return subprocess.Popen([balsam, "launcher", "--site", str(site.settings.path), "--job-mode", "serial", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _journaled_ends(folder: Path) -> set[int]:
    ends = set()
    for path in folder.glob("*.journal") if folder.exists() else ():
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            if any(state == "JOB_FINISHED" for state, _, _ in doc["steps"]):
                ends.add(doc["job"])
    return ends


def _runs(log: Path) -> Counter:
    return Counter(int(line) for line in log.read_text().split()) if log.exists() else Counter()


def test_the_agent_starts_a_killed_database_again_and_says_why(embedded):
    site = embedded
    start_agent(site.settings, wait_s=60)
    os.kill(_postmaster(site), signal.SIGKILL)
    server = EmbeddedPostgres(site.settings)
    wait_for(lambda: server.is_running() and "started it again" in (site.settings.logs_dir / "agent.log").read_text(), 60,
             "the agent to start the database again")  # fmt: skip
    line = next(x for x in (site.settings.logs_dir / "agent.log").read_text().splitlines() if "started it again" in x)
    assert "was not running" in line and "postmaster.pid left behind" in line
    assert agent_pid(site.settings) is not None  # the agent itself went on
    assert site.add_job("record", {"log": "/dev/null", "seconds": 0}).state == "READY"  # and the database serves


def test_a_database_down_for_three_leases_while_500_jobs_run_loses_nothing_and_runs_nothing_twice(embedded, tmp_path):
    site = embedded
    log = tmp_path / "runs.log"
    site.add_jobs([{"app": "record", "params": {"log": str(log), "seconds": 0.1}, "node_packing_count": 8} for _ in range(500)])
    # A lease of 10 s: the outage below lasts three of them.
    launcher = _launch(site, "--until-idle", "--lease", "10")
    wait_for(lambda: sum(_runs(log).values()) >= 60, 120, "the first jobs to run")
    postmaster = _postmaster(site)
    os.kill(postmaster, signal.SIGKILL)
    down_at = time.monotonic()
    journal = site.settings.logs_dir / "launchers"
    wait_for(lambda: journal.exists() and any(journal.glob("*.journal")), 30, "the launcher to journal what it could not write")
    time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    assert launcher.poll() is None, f"the launcher died during the outage: {launcher.stderr.read()[-2000:]}"
    EmbeddedPostgres(site.settings).start()

    _, err = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, err[-3000:]
    runs = _runs(log)
    states = Counter(job.state for job in site.jobs())
    assert states == Counter({"JOB_FINISHED": 500}), states
    assert sorted(runs) == sorted(job.id for job in site.jobs()) and set(runs.values()) == {1}, "a job ran twice"
    # One line per reconnection step, not thousands a second; the journal is gone once written.
    outage_lines = [line for line in err.splitlines() if "database unreachable" in line]
    assert 1 <= len(outage_lines) <= 15, outage_lines
    assert "database back after" in err
    assert not any(journal.glob("*.journal"))


def test_a_launcher_that_dies_during_an_outage_has_its_journal_applied_and_nothing_runs_again(embedded, tmp_path):
    site = embedded
    log = tmp_path / "runs.log"
    ids = site.add_jobs([{"app": "record", "params": {"log": str(log), "seconds": 4}, "node_packing_count": 2} for _ in range(2)])
    launcher = _launch(site, "--lease", "10")
    wait_for(lambda: sum(_runs(log).values()) == 2, 60, "both jobs to start")
    os.kill(_postmaster(site), signal.SIGKILL)
    journal = site.settings.logs_dir / "launchers"
    # Every job ends while the database is away: their ends are only in the launcher's memory and journal.
    wait_for(lambda: _journaled_ends(journal) == set(ids), 30, "the jobs' ends in the journal")
    launcher.kill()  # and the launcher dies before it could write them
    launcher.wait()
    EmbeddedPostgres(site.settings).start()
    start_agent(site.settings, wait_s=60)  # whoever reaps the lost launcher applies its journal
    wait_for(lambda: all(job.state == "JOB_FINISHED" for job in site.jobs()), 60, "the journal to be applied")
    assert sorted(job.id for job in site.jobs()) == sorted(ids)
    assert _runs(log) == Counter({i: 1 for i in ids}), "a finished job was run again"
    assert not any(journal.glob("*.journal"))
