"""A site folder and its own PostgreSQL: creation, restart, discovery, and running as root."""

import fcntl
import json
import os
import socket
import stat
import subprocess
import time

import psycopg2
import pytest

from balsam.errors import BalsamError
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SETTINGS_FILE, SiteSettings, find_site
from conftest import balsam_script


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def embedded_site(tmp_path, balsam):
    """A whole site made by `balsam init`, with its own server; stopped afterwards."""
    path = tmp_path / "outer" / "mysite"
    path.parent.mkdir(mode=0o700)
    parent_modes = {p: _mode(p) for p in path.parents}
    result = balsam(["init", str(path)])
    assert result.code == 0, result
    assert {p: _mode(p) for p in path.parents} == parent_modes, "init changed a folder outside the site"
    yield path
    EmbeddedPostgres(SiteSettings.load(path)).stop()


def test_init_makes_the_folder_and_keeps_jobs_across_a_restart(embedded_site, balsam, monkeypatch):
    path = embedded_site
    monkeypatch.setenv("BALSAM_SITE", str(path))
    assert {p.name for p in path.iterdir()} == {SETTINGS_FILE, "logs", "data", "batch", "db"}
    assert {_mode(p) for p in (path, path / "logs", path / "data", path / "batch")} == {0o700}  # private by default
    settings = SiteSettings.load(path)
    assert settings.name == "mysite" and settings.database.mode == "embedded"
    assert _mode(path / "db") == 0o700 and _mode(path / "db" / "password") == 0o600
    assert _mode(path / SETTINGS_FILE) & 0o077 == 0

    assert balsam("app add sim --command 'sim {n}'").code == 0
    ids = [int(balsam(f"job add --app sim -p n={i}").out) for i in range(5)]
    assert balsam("site stop").code == 0
    assert not EmbeddedPostgres(settings).is_running()
    status = json.loads(balsam("site status --json").out)
    assert status["running"] is False and status["jobs"] is None

    assert balsam("site start --db-only").code == 0
    listing = json.loads(balsam("job ls --json").out)
    assert [j["id"] for j in listing["jobs"]] == ids
    assert [j["params"] for j in listing["jobs"]] == [{"n": str(i)} for i in range(5)]
    status = json.loads(balsam("site status --json").out)
    assert status["running"] is True and status["jobs"] == {"READY": 5}


def test_a_stopped_server_is_started_on_demand(embedded_site, balsam, monkeypatch):
    monkeypatch.setenv("BALSAM_SITE", str(embedded_site))
    balsam("site stop")
    result = balsam("app ls --json")
    assert result.code == 0 and json.loads(result.out) == []
    assert "started the database" in result.err


def test_several_processes_opening_a_stopped_site_all_succeed(embedded_site, balsam):
    """They all find the server down and queue for the start lock; one starts it, all then connect."""
    balsam(["site", "stop", "--site", str(embedded_site)])
    env = {**os.environ, "BALSAM_SITE": str(embedded_site)}
    with open(embedded_site / "db" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # hold the start lock until every process is waiting on it
        procs = [subprocess.Popen([balsam_script(), "job", "ls", "--json"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
        time.sleep(4)
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    assert all(json.loads(out)["total"] == 0 for _, out, _ in results)
    assert sum("started the database" in err for _, _, err in results) == 1


def test_a_restart_keeps_the_port_though_the_server_closed_connections(embedded_site, balsam, monkeypatch):
    """Connections the server itself closed linger in TIME_WAIT on its port: that is not "taken"."""
    monkeypatch.setenv("BALSAM_SITE", str(embedded_site))
    settings = SiteSettings.load(embedded_site)
    port = settings.database.port
    for _ in range(2):
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=settings.database.user,
                                password=EmbeddedPostgres(settings).password, dbname=settings.database.name)  # fmt: skip
        assert balsam("site stop").code == 0  # closes `conn` from the server's side only
        assert balsam("site start --db-only").code == 0
        conn.close()
        assert SiteSettings.load(embedded_site).database.port == port


def test_a_taken_port_moves_the_server_to_a_free_one(embedded_site, balsam, monkeypatch):
    monkeypatch.setenv("BALSAM_SITE", str(embedded_site))
    balsam("site stop")
    old_port = SiteSettings.load(embedded_site).database.port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        assert balsam("site start --db-only").code == 0
    new_port = SiteSettings.load(embedded_site).database.port
    assert new_port != old_port
    assert balsam("job ls").code == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="checks what happens when run as root")
def test_as_root_no_folder_outside_the_site_is_opened_up(embedded_site):
    """The server runs as an ordinary uid, while the 700 folder above the site stays 700."""
    assert _mode(embedded_site.parent) == 0o700
    pgdata = embedded_site / "db" / "pgdata"
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    # the server is an ordinary uid inside its own user namespace, and root's outside it
    with open(f"/proc/{pid}/uid_map") as handle:
        inside, outside, _count = map(int, handle.read().split())
    assert inside != 0 and outside == 0
    assert os.stat(pgdata).st_uid == 0


def test_init_refuses_to_overwrite(tmp_path, balsam, db_url):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    result = balsam(["init", str(tmp_path / "busy"), "--db-url", db_url])
    assert result.code == 1 and "not an empty folder" in result.err
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"
    assert balsam(["init", str(tmp_path / "s"), "--db-url", db_url]).code == 0
    result = balsam(["init", str(tmp_path / "s"), "--db-url", db_url])
    assert result.code == 1 and "already a Balsam site" in result.err


def test_init_on_an_unreachable_server_leaves_nothing_behind(tmp_path, balsam):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = balsam(["init", str(tmp_path / "s"), "--db-url", f"postgresql://u:p@127.0.0.1:{port}/x"])
    assert result.code == 1 and "cannot reach the database" in result.err
    assert not (tmp_path / "s").exists()


def test_an_external_server_site_and_its_name(tmp_path, balsam, db_url):
    assert balsam(["init", str(tmp_path / "ext"), "--db-url", db_url, "--name", "theta"]).code == 0
    settings = SiteSettings.load(tmp_path / "ext")
    assert settings.name == "theta" and settings.database.mode == "external"
    assert not (tmp_path / "ext" / "db").exists()
    status = json.loads(balsam(["site", "status", "--json", "--site", str(tmp_path / "ext")]).out)
    assert status["database"] == "external" and status["jobs"] == {}


def test_the_active_site_is_found_from_env_or_enclosing_folder(site, tmp_path, monkeypatch):
    inner = site.settings.data_dir / "wf" / "42"
    inner.mkdir(parents=True)
    monkeypatch.delenv("BALSAM_SITE")
    assert find_site(inner) == site.settings.path
    with pytest.raises(BalsamError, match="balsam init PATH"):
        find_site(tmp_path / "elsewhere")
    monkeypatch.setenv("BALSAM_SITE", str(tmp_path / "elsewhere"))
    with pytest.raises(BalsamError, match="is not a Balsam site"):
        find_site(inner)


def test_commands_work_from_inside_a_site_folder(site, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_SITE"}
    where = site.settings.data_dir
    subprocess.run([balsam_script(), "app", "add", "hi", "--command", "echo hi"], cwd=where, env=env, check=True)
    out = subprocess.run([balsam_script(), "app", "ls", "--json"], cwd=where, env=env, check=True, capture_output=True)
    assert [a["name"] for a in json.loads(out.stdout)] == ["hi"]
    away = subprocess.run([balsam_script(), "job", "ls"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert away.returncode == 1 and "no Balsam site here" in away.stderr
