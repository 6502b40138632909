"""The connection budget of a site's own database: max_connections from the settings, and a launcher
that finds every connection taken waits, saying so, then runs its jobs once one is free."""

from __future__ import annotations

import subprocess
import time

import psycopg2
from conftest import balsam_script
from launcher_helpers import launcher_env

from balsam.site import idle_stop
from balsam.site.api import Site
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings


def test_full_database_makes_a_launcher_wait_then_run(tmp_path):
    path = tmp_path / "small"
    with Site.init(path) as site:
        site.add_app("hello", "echo hello")
        site.add_job("hello", name="one")
    settings = SiteSettings.load(path)
    settings.database.max_launchers, settings.database.reserved_connections = 1, 8
    settings.save()
    server = EmbeddedPostgres(settings)
    server.stop()
    server.start()  # the settings file is read at every start
    held = []
    try:
        db = settings.database
        conn = psycopg2.connect(host=db.host, port=db.port, user=db.user, password=server.password, dbname=db.name)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SHOW max_connections")
            assert cur.fetchone()[0] == "11"  # 2 x 1 launcher + 8 reserved + the idle-stop watcher's
            deadline = time.monotonic() + 30  # the watcher (started with the server) takes its own slot
            while time.monotonic() < deadline:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (idle_stop.APPLICATION_NAME,))
                if cur.fetchone()[0] == 1:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("the idle-stop watcher never connected")
        conn.close()
        while True:  # take every connection there is
            try:
                held.append(psycopg2.connect(host=db.host, port=db.port, user=db.user, password=server.password, dbname=db.name))
            except psycopg2.OperationalError as exc:
                assert "too many clients" in str(exc) or "reserved" in str(exc)
                break
        assert len(held) == 10
        launcher = subprocess.Popen([balsam_script(), "launcher", "--until-idle"], env=launcher_env(_SiteRef(path)),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        first = launcher.stdout.readline()  # the launcher's first word, as it cannot connect
        assert "has no free connection" in first and "database.max_launchers (1)" in first, first
        time.sleep(1.5)
        assert launcher.poll() is None  # waiting, not failed
        for conn in held:
            conn.close()
        held = []
        out, _ = launcher.communicate(timeout=120)
        assert launcher.returncode == 0, first + out
        assert "got a connection to the database" in out
        with Site.open(path) as site:
            assert site.count_jobs() == {"JOB_FINISHED": 1}
    finally:
        for conn in held:
            conn.close()
        EmbeddedPostgres(SiteSettings.load(path)).stop()


class _SiteRef:
    """What launcher_env needs of a site (its path), without holding a connection of the test's own."""

    def __init__(self, path) -> None:
        self.settings = SiteSettings.load(path)
