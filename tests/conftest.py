"""Shared fixtures: real PostgreSQL servers, real sites, and the real `balsam` CLI.

One embedded PostgreSQL server is started per test session (the same code path a site uses,
root handling included). Each test gets its own database, cloned from a template that Alembic
migrated once, and a site folder attached to it with ``--db-url``. Tests about the embedded
server's own life (init, start, stop, root) make whole sites of their own.
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from balsam.argo.db.engine import MIGRATIONS, SCHEMA_REVISION
from balsam.migrate import migrate as migrate_to
from balsam.site.agent import stop_agent
from balsam.site.api import Site
from balsam.site.cli.main import main as balsam_main
from balsam.site.db.engine import migrate
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings

TEMPLATE_DB = "balsam_template"


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def admin(self):
        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres")
        conn.autocommit = True
        return conn


@pytest.fixture(scope="session", autouse=True)
def _own_argo_client_config(tmp_path_factory) -> Iterator[None]:
    """The `argo` client's files (client.toml, the local-servers note `argo server start` writes)
    in a folder of the test session, never the user's ~/.config/argo."""
    old = os.environ.get("ARGO_CLIENT_CONFIG")
    os.environ["ARGO_CLIENT_CONFIG"] = str(tmp_path_factory.mktemp("argo-client") / "client.toml")
    yield
    if old is None:
        os.environ.pop("ARGO_CLIENT_CONFIG", None)
    else:
        os.environ["ARGO_CLIENT_CONFIG"] = old


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> Iterator[PgServer]:
    folder = tmp_path_factory.mktemp("pgserver")
    settings = SiteSettings(path=folder, name="test-server")
    server = EmbeddedPostgres(settings)
    server.create()
    db = settings.database
    pg = PgServer(db.host, db.port, db.user, server.password)
    engine = create_engine(pg.url(db.name).replace("postgresql://", "postgresql+psycopg2://"))
    migrate(engine)
    engine.dispose()
    with pg.admin() as conn, conn.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{db.name}" RENAME TO {TEMPLATE_DB}')
    try:
        yield pg
    finally:
        server.stop()


@contextmanager
def fresh_database(pg_server: PgServer) -> Iterator[str]:
    """The URL of a new, migrated database on the session's server, dropped at the end."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = pg_server.admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
        yield pg_server.url(name)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        conn.close()


@pytest.fixture
def db_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated database of its own for one test."""
    with fresh_database(pg_server) as url:
        yield url


@pytest.fixture
def argo_session(pg_server):
    """A session of a new coordinator database (migrated with Argo's own migrations) with workflow 1
    and two sites, s1 and s2, registered: no server process."""
    name = f"argo_{uuid.uuid4().hex[:12]}"
    admin = pg_server.admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    engine = create_engine(pg_server.url(name).replace("postgresql://", "postgresql+psycopg2://"))
    migrate_to(engine, MIGRATIONS, SCHEMA_REVISION, 0xA760)
    with Session(engine) as s:
        s.execute(text("INSERT INTO workflows (id, name, status) VALUES (1, 'wf', 'running')"))
        s.execute(text("INSERT INTO sites (name, apps, nodes, scheduler, status, heartbeat)"
                       " VALUES ('s1', '[\"a\"]', 1, 'local', 'up', '{}'), ('s2', '[\"a\"]', 1, 'local', 'up', '{}')"))
        s.execute(text("INSERT INTO site_counters (site) VALUES ('s1'), ('s2')"))  # as registering a site makes it
        s.commit()
        yield s
    engine.dispose()
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


@contextmanager
def active_site(path: Path, db_url: str) -> Iterator[Site]:
    """A new site folder on ``db_url``, with BALSAM_SITE pointing at it while it is in use."""
    s = Site.init(path, name="testsite", db_url=db_url)
    old = os.environ.get("BALSAM_SITE")
    os.environ["BALSAM_SITE"] = str(s.settings.path)
    try:
        yield s
    finally:
        stop_agent(s.settings)  # if the test started one and failed before stopping it
        s.close()
        if old is None:
            os.environ.pop("BALSAM_SITE", None)
        else:
            os.environ["BALSAM_SITE"] = old


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    """A site folder on its own database, with BALSAM_SITE pointing at it."""
    with active_site(tmp_path / "site", db_url) as s:
        yield s


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def _in_process(prog: str, main, capsys, monkeypatch):
    def run(command: str | list[str]) -> CliResult:
        args = shlex.split(command) if isinstance(command, str) else command
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", [prog, *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def balsam(capsys, monkeypatch):
    """Run the `balsam` CLI in this process, as a user would type it: balsam("job ls --json")."""
    return _in_process("balsam", balsam_main, capsys, monkeypatch)


@pytest.fixture
def argo_cli(capsys, monkeypatch):
    """Run the `argo` CLI in this process, as a user would type it: argo_cli("tasks 3 --address ...")."""
    from balsam.argo.cli import main as argo_main

    return _in_process("argo", argo_main, capsys, monkeypatch)


def balsam_script() -> str:
    """The installed console script, for tests that need a separate process."""
    return str(Path(sys.executable).with_name("balsam"))


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """One real single-node Slurm cluster for the session, with SLURM_CONF exported to find it.

    Skipped where Slurm is not installed, unless BALSAM_REQUIRE_SLURM=1 (as CI sets it): then the
    missing cluster is a failure, so the Slurm tests never pass by not running.
    """
    from slurm_cluster import SlurmCluster, slurm_available

    reason = slurm_available()
    if reason:
        if os.environ.get("BALSAM_REQUIRE_SLURM") == "1":
            pytest.fail(f"BALSAM_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf_path)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()


@pytest.fixture
def federation(request, tmp_path):
    """A running Argo coordinator as a process (``argo_helpers.Federation``: add sites to it);
    ``@pytest.mark.site_timeout(S)`` sets when a silent site is down (default 20 s)."""
    from argo_helpers import Federation

    marker = request.node.get_closest_marker("site_timeout")
    fed = Federation(tmp_path, site_timeout_s=marker.args[0] if marker else 20.0)
    fed.start_server()
    try:
        yield fed
    finally:
        fed.stop()
