"""Nothing left behind (issue 22): an embedded database nobody uses stops itself; one in use never.

Every command here runs as its own process, as a user would type it: the test process itself never
opens the sites (a process that has a site's database open keeps it up, by design).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg2
import pytest
from conftest import balsam_script
from launcher_helpers import wait_for

from balsam.site.idle_stop import watcher_pid
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings

IDLE_MIN = 0.05  # 3 s: the watcher looks every 0.3 s


def _balsam(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([balsam_script(), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def stopped_site(tmp_path: Path):
    """A site of its own embedded database with a short idle period, stopped; torn down whatever happens."""
    path = tmp_path / "s"
    made = _balsam("init", str(path))
    assert made.returncode == 0, made.stderr
    try:
        assert _balsam("site", "set", "--db-idle-stop", str(IDLE_MIN), "--site", str(path)).returncode == 0
        assert _balsam("site", "stop", "--site", str(path)).returncode == 0
        settings = SiteSettings.load(path)
        wait_for(lambda: watcher_pid(settings) is None, 30, "the watcher of the stopped server to end")
        yield settings
    finally:
        _balsam("site", "stop", "--force", "--site", str(path))
        server = EmbeddedPostgres(SiteSettings.load(path))
        server.stop()
        wait_for(lambda: watcher_pid(server.settings) is None, 30, "the idle watcher to end")


def _running(settings: SiteSettings) -> bool:
    return EmbeddedPostgres(settings).is_running()


def test_a_read_only_command_leaves_no_database_behind(stopped_site):
    listed = _balsam("job", "ls", "--site", str(stopped_site.path))
    assert listed.returncode == 0, listed.stderr
    assert "started the database of site 's'; it stops itself once unused for 0.05 min" in listed.stderr
    assert _running(stopped_site), "job ls on a stopped site starts its database"
    wait_for(lambda: not _running(stopped_site), 60, "the unused database to stop itself")
    wait_for(lambda: watcher_pid(stopped_site) is None, 10, "its watcher to end")
    log = (stopped_site.logs_dir / "idle-stop.log").read_text()
    assert "stopped the server: unused for 0.05 min" in log
    # The next command finds it stopped and starts it again, as the first one did.
    again = _balsam("job", "ls", "--site", str(stopped_site.path))
    assert again.returncode == 0 and "started the database" in again.stderr, again.stderr


def test_the_agent_keeps_its_database_and_its_end_lets_it_stop(stopped_site):
    started = _balsam("site", "start", "--site", str(stopped_site.path))
    assert started.returncode == 0, started.stderr
    time.sleep(6 * IDLE_MIN * 60)  # twice the idle period, with nothing but the agent using it
    assert _running(stopped_site), "the database of a running agent was stopped"
    from balsam.site.agent import stop_agent

    assert stop_agent(stopped_site)  # the agent alone, as if it ended: the database is left to its watcher
    wait_for(lambda: not _running(stopped_site), 60, "the database to stop once the agent is gone")


def test_a_launcher_or_a_client_from_elsewhere_keeps_it(stopped_site):
    path = str(stopped_site.path)
    submitted = _balsam("submit-launch", "-n", "1", "-t", "5", "--site", path)
    assert submitted.returncode == 0, submitted.stderr
    launcher_log = stopped_site.batch_dir / "1.out"
    wait_for(lambda: launcher_log.exists() and "launcher 1:" in launcher_log.read_text(), 60, "the launcher to start")
    time.sleep(6 * IDLE_MIN * 60)
    assert _running(stopped_site), "the database of a running launcher was stopped"
    assert "database unreachable" not in launcher_log.read_text()
    # A client connected straight to the server (as a launcher on a compute node is) keeps it too.
    db = SiteSettings.load(path).database
    conn = psycopg2.connect(host=db.host, port=db.port, user=db.user, dbname=db.name, password=EmbeddedPostgres(stopped_site).password)
    try:
        cancelled = _balsam("queue", "rm", "1", "--site", path)
        assert cancelled.returncode == 0, cancelled.stderr
        wait_for(lambda: "exits" in launcher_log.read_text(), 60, "the launcher to end")
        time.sleep(6 * IDLE_MIN * 60)
        assert _running(stopped_site), "the database was stopped under a connected client"
    finally:
        conn.close()
    wait_for(lambda: not _running(stopped_site), 60, "the database to stop once its last client left")


def test_site_stop_refuses_under_running_batch_jobs_and_force_ends_them(stopped_site):
    path = str(stopped_site.path)
    assert _balsam("site", "set", "--db-idle-stop", "0", "--site", path).returncode == 0
    submitted = _balsam("submit-launch", "-n", "1", "-t", "5", "--site", path)
    assert submitted.returncode == 0, submitted.stderr
    launcher_log = stopped_site.batch_dir / "1.out"
    wait_for(lambda: launcher_log.exists() and "launcher 1:" in launcher_log.read_text(), 60, "the launcher to start")
    refused = _balsam("site", "stop", "--site", path)
    assert refused.returncode == 1
    assert "site s has batch jobs whose launchers use its database: 1 (running)" in refused.stderr
    assert "balsam site stop --force" in refused.stderr and "Traceback" not in refused.stderr
    assert _running(stopped_site), "a refused stop stopped the database anyway"
    forced = _balsam("site", "stop", "--force", "--site", path)
    assert forced.returncode == 0, forced.stderr
    assert "batch job 1 (local 1, by user) cancelled" in forced.stdout and "database of site s stopped" in forced.stdout
    assert not _running(stopped_site)
    said = launcher_log.read_text()
    assert "exits: stopped by signal 15" in said and "database unreachable" not in said


def test_site_stop_takes_the_agents_own_launchers_with_it(stopped_site):
    """The elastic queue's batch jobs belong to the agent: `site stop` cancels them without asking."""
    path = str(stopped_site.path)
    assert _balsam("site", "set", "--db-idle-stop", "0", "--elastic-queue", "--site", path).returncode == 0
    assert _balsam("app", "add", "nap", "--command", "sleep 120", "--site", path).returncode == 0
    assert _balsam("job", "add", "--app", "nap", "--site", path).returncode == 0
    assert _balsam("site", "start", "--site", path).returncode == 0
    launcher_log = stopped_site.batch_dir / "1.out"
    wait_for(lambda: launcher_log.exists() and "1 running" in launcher_log.read_text(), 90, "the elastic launcher to run the job")
    stopped = _balsam("site", "stop", "--site", path)
    assert stopped.returncode == 0, stopped.stderr
    assert "batch job 1 (local 1, by elastic) cancelled" in stopped.stdout and "database of site s stopped" in stopped.stdout
    said = launcher_log.read_text()
    assert "exits: stopped by signal 15" in said and "database unreachable" not in said
