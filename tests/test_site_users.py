"""Several people on one site: their roles and rights, who created each job, and secrets at rest."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tomllib
import uuid
from types import SimpleNamespace

import psycopg2
import psycopg2.errors
import pytest
from balsam.site import agent
from balsam.site.access import credentials_file, scram_verifier
from balsam.site.api import Site
from balsam.site.batch import BatchQueue
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import CREDENTIALS_ENV, SiteSettings, load_credentials
from conftest import balsam_script
from launcher_helpers import launcher_env
from sqlalchemy import text as text_
from sqlalchemy.engine import make_url


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def users(site, balsam, monkeypatch):
    """Add users to the `site` fixture's database: users("viewer") -> (name, credentials file).

    Roles belong to the whole (shared) test server, so each name is unique to its test.
    """
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
    made = []

    def add(kind: str):
        name = f"{kind[:6]}_{uuid.uuid4().hex[:8]}"
        result = balsam(f"site user add {name} --role {kind}")
        assert result.code == 0, result
        made.append(name)
        return name, credentials_file(site.settings, name)

    yield add


def _as(monkeypatch, file) -> None:
    """From now on the CLI logs in with this credentials file (as a collaborator's shell would)."""
    monkeypatch.setenv(CREDENTIALS_ENV, str(file))


def _connect(site, file):
    """A direct psycopg2 connection with a user's login, on the site's address."""
    creds = load_credentials(file)
    url = make_url(site.settings.database.url)
    return psycopg2.connect(host=url.host, port=url.port, dbname=url.database, user=creds.user, password=creds.password)


def test_users_of_each_role_are_added_listed_and_removed(site, balsam, users, monkeypatch):
    viewer, viewer_file = users("viewer")
    collab, collab_file = users("collaborator")
    owner, owner_file = users("owner")
    listing = json.loads(balsam("site user ls --json").out)
    assert listing == sorted(
        [{"name": viewer, "role": "viewer", "login": True}, {"name": collab, "role": "collaborator", "login": True},
         {"name": owner, "role": "owner", "login": True}], key=lambda u: u["name"])  # fmt: skip
    table = balsam("site user ls").out
    assert viewer in table and "collaborator" in table
    assert _mode(site.settings.path / "users") == 0o700
    for file in (viewer_file, collab_file, owner_file):
        assert _mode(file) == 0o600
    creds = load_credentials(collab_file)
    assert creds.user == collab and creds.role == "collaborator" and len(creds.password) >= 24

    # The password reached the server only as a SCRAM verifier, and it is the one in the file.
    conn = _connect(site, collab_file)
    conn.close()
    with psycopg2.connect(site.settings.database.url) as admin, admin.cursor() as cur:
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (collab,))
        assert cur.fetchone()[0].startswith("SCRAM-SHA-256$4096:")
    admin.close()

    result = balsam(f"site user rm {collab}")
    assert result.code == 0 and "removed collaborator" in result.out, result
    assert {u["name"] for u in json.loads(balsam("site user ls --json").out)} == {viewer, owner}
    assert not collab_file.exists()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=make_url(site.settings.database.url).host, port=make_url(site.settings.database.url).port,
                         dbname=make_url(site.settings.database.url).database, user=creds.user, password=creds.password)  # fmt: skip
    again = balsam(f"site user rm {collab}")
    assert again.code == 1 and "is not a user of this site" in again.err
    assert balsam(f"site user add {viewer} --role viewer").code == 1  # the role exists already
    bad = balsam("site user add x --role admin")
    assert bad.code == 1 and "--role must be one of owner, collaborator, viewer" in bad.err
    # Only roles of this site can be removed through it.
    assert "is not a user of this site" in balsam("site user rm balsam").err


def test_a_collaborator_adds_jobs_that_record_its_name(site, balsam, users, monkeypatch, tmp_path):
    collab, collab_file = users("collaborator")
    assert balsam("app add sim --command 'sim {n}'").code == 0
    mine = int(balsam("job add --app sim -p n=0").out)

    _as(monkeypatch, collab_file)
    one = int(balsam("job add --app sim -p n=1").out)
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text("- {app: sim, name: a, params: {n: 2}}\n- {app: sim, name: b, params: {n: 3}, parents: [a]}\n")
    assert balsam(f"job add --from {jobs_file}").code == 0  # the bulk COPY path
    listing = json.loads(balsam("job ls --json").out)["jobs"]
    assert {j["id"]: j["created_by"] for j in listing} == {mine: "balsam", one: collab, one + 1: collab, one + 2: collab}
    assert json.loads(balsam(f"job show {one} --json").out)["created_by"] == collab
    assert "created_by" in balsam(f"job show {one}").out

    # A collaborator manages jobs (anyone's: rights are per table, not per row) and adds apps.
    assert balsam(f"job modify {one} -p n=5").code == 0
    assert balsam(f"job kill {one}").code == 0
    assert balsam(f"job reset {one}").code == 0
    assert balsam(f"job rm {one}").code == 0
    assert balsam("app add theirs --command 'echo {x}'").code == 0

    # It cannot write the column itself, in either direction.
    conn = _connect(site, collab_file)
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        with conn.cursor() as cur:
            cur.execute("UPDATE jobs SET created_by = 'someone' WHERE id = %s", (one + 1,))
    conn.rollback()
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        with conn.cursor() as cur:
            cur.execute("INSERT INTO jobs (name, app_id, created_by) SELECT 'forged', app_id, 'someone' FROM jobs LIMIT 1")
    conn.close()

    # Through --db-credentials, as through the environment.
    monkeypatch.setenv(CREDENTIALS_ENV, "unused")
    monkeypatch.delenv(CREDENTIALS_ENV)
    two = int(balsam(["--db-credentials", str(collab_file), "job", "add", "--app", "sim", "-p", "n=9"]).out)
    assert site.job(two).created_by == collab


def test_a_viewer_reads_but_its_adds_are_refused_and_store_nothing(site, balsam, users, monkeypatch):
    viewer, viewer_file = users("viewer")
    assert balsam("app add sim --command 'sim {n}'").code == 0
    assert balsam("app add spare --command 'spare'").code == 0
    existing = int(balsam("job add --app sim -p n=0").out)
    _as(monkeypatch, viewer_file)
    assert [j["id"] for j in json.loads(balsam("job ls --json").out)["jobs"]] == [existing]
    assert balsam(f"job show {existing}").code == 0 and balsam("app ls").code == 0

    result = balsam("job add --app sim -p n=1")
    assert result.code == 1
    assert result.err.startswith("error: permission denied:"), result.err
    assert f"database role '{viewer}' (a viewer of this site)" in result.err
    assert "may list and show" in result.err and "The database said: permission denied for" in result.err
    for command in (f"job kill {existing}", f"job rm {existing}", "app add other --command 'x'", "app rm spare"):
        refused = balsam(command)
        assert refused.code == 1 and "permission denied" in refused.err, (command, refused)
    assert site.count_jobs() == {"READY": 1}
    assert [a.name for a in site.apps()] == ["sim", "spare"]
    print(result.err)
    # Nor may it manage users.
    assert "permission denied" in balsam("site user add someone_else --role owner").err


def test_a_collaborator_cannot_remove_an_app_or_change_the_schema(site, balsam, users, monkeypatch):
    _, collab_file = users("collaborator")
    assert balsam("app add sim --command 'sim {n}'").code == 0
    _as(monkeypatch, collab_file)
    result = balsam("app rm sim")
    assert result.code == 1 and "permission denied" in result.err and "a collaborator of this site" in result.err
    assert "not change or remove apps" in result.err
    assert [a.name for a in site.apps()] == ["sim"]
    conn = _connect(site, collab_file)
    conn.autocommit = True
    for ddl in ("DROP TABLE jobs", "CREATE TABLE mine (x int)", "ALTER TABLE jobs ADD COLUMN x int",
                "UPDATE apps SET command_template = 'rm -rf {n}'", "TRUNCATE job_events", "DELETE FROM job_events"):  # fmt: skip
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            with conn.cursor() as cur:
                cur.execute(ddl)
    conn.close()


def test_an_owner_changes_all_data_but_not_the_schema(site, balsam, users, monkeypatch):
    owner, owner_file = users("owner")
    assert balsam("app add sim --command 'sim {n}'").code == 0
    _as(monkeypatch, owner_file)
    assert balsam("job add --app sim -p n=1").code == 0
    assert balsam("app rm other").code == 1  # unknown app: our own refusal, not the database's
    conn = _connect(site, owner_file)
    with conn.cursor() as cur:
        cur.execute("UPDATE apps SET description = 'changed'")
        cur.execute("SELECT created_by FROM jobs")
        assert cur.fetchall() == [(owner,)]
    conn.commit()
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        with conn.cursor() as cur:
            cur.execute("DROP TABLE job_events")
    conn.close()


def test_tables_made_later_are_readable_by_every_user(site, balsam, users, monkeypatch):
    """Default privileges: what a later migration creates (as the site's role) is covered."""
    _, viewer_file = users("viewer")
    with site.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE later_table (x int)")
        conn.exec_driver_sql("INSERT INTO later_table VALUES (1)")
    conn = _connect(site, viewer_file)
    with conn.cursor() as cur:
        cur.execute("SELECT x FROM later_table")
        assert cur.fetchall() == [(1,)]
    conn.close()


def test_removing_a_user_closes_its_open_connections(site, balsam, users):
    collab, collab_file = users("collaborator")
    conn = _connect(site, collab_file)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    assert balsam(f"site user rm {collab}").code == 0
    with pytest.raises(psycopg2.Error):
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    conn.close()


def test_a_credentials_file_others_can_read_is_refused(site, balsam, users, monkeypatch):
    _, collab_file = users("collaborator")
    os.chmod(collab_file, 0o644)
    _as(monkeypatch, collab_file)
    result = balsam("job ls")
    assert result.code == 1 and f"chmod 600 {collab_file}" in result.err
    monkeypatch.setenv(CREDENTIALS_ENV, str(collab_file.parent / "missing.toml"))
    assert "no credentials file" in balsam("job ls").err


def test_a_collaborators_batch_script_logs_in_as_them(site, users, monkeypatch):
    _, collab_file = users("collaborator")
    _as(monkeypatch, collab_file)
    with Site.open(site.settings.path) as theirs:
        row = SimpleNamespace(id=7, job_mode="mpi", wall_time_min=5, nodes=1, status_info={})
        script, _ = BatchQueue(theirs).write_script(row)
    assert f"export {CREDENTIALS_ENV}={collab_file}" in script.read_text()
    row = SimpleNamespace(id=8, job_mode="mpi", wall_time_min=5, nodes=1, status_info={})
    script, _ = BatchQueue(site).write_script(row)
    assert CREDENTIALS_ENV not in script.read_text()


def test_scram_verifier_has_postgres_shape():
    verifier = scram_verifier("secret")
    _, keys = verifier.split("$", 1)[1].split("$")
    assert verifier.startswith("SCRAM-SHA-256$4096:") and len(keys.split(":")) == 2
    assert scram_verifier("secret") != verifier  # a fresh salt each time


# -- a whole embedded site: the agent and its secrets --------------------------------------------


@pytest.fixture
def embedded_site(tmp_path, balsam, monkeypatch):
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
    path = tmp_path / "shared"
    assert balsam(["init", str(path)]).code == 0
    monkeypatch.setenv("BALSAM_SITE", str(path))
    yield path
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
    settings = SiteSettings.load(path)
    agent.stop_agent(settings)
    EmbeddedPostgres(settings).stop()


def test_the_agent_refuses_secret_files_others_can_read(embedded_site, balsam):
    password = embedded_site / "db" / "password"
    os.chmod(password, 0o644)
    result = balsam("site start")
    assert result.code == 1
    assert f"{password} holds a secret but is accessible to others (mode 644)" in result.err
    assert f"chmod 600 {password}" in result.err
    # The agent itself refuses too, when started some other way.
    assert agent.main(["--site", str(embedded_site)]) == 1
    assert agent.agent_pid(SiteSettings.load(embedded_site)) is None

    os.chmod(password, 0o600)
    tokens = embedded_site / "globus-tokens.json"
    tokens.write_text("{}")
    os.chmod(tokens, 0o640)
    assert f"chmod 600 {tokens}" in balsam("site start").err
    os.chmod(tokens, 0o600)

    started = balsam("site start")
    assert started.code == 0 and "agent started" in started.out, started
    assert balsam("site stop").code == 0


def test_a_collaborator_on_an_embedded_site_logs_in_with_its_own_role(embedded_site, balsam, monkeypatch):
    """Its file holds only the login: the address (port included) is the site's, read each time."""
    assert balsam("app add sim --command 'sim {n}'").code == 0
    added = balsam("site user add alice --role collaborator")
    assert added.code == 0 and "BALSAM_DB_CREDENTIALS" in added.out, added
    file = embedded_site / "users" / "alice.toml"
    assert set(tomllib.loads(file.read_text())["database"]) == {"user", "password", "role"}

    # The agent also refuses a collaborator's file that others can read.
    os.chmod(file, 0o604)
    assert f"chmod 600 {file}" in balsam("site start").err
    os.chmod(file, 0o600)

    monkeypatch.setenv(CREDENTIALS_ENV, str(file))
    job = int(balsam("job add --app sim -p n=1").out)
    assert json.loads(balsam(f"job show {job} --json").out)["created_by"] == "alice"
    # A collaborator never starts the owner's server: with it stopped, a clear error instead.
    monkeypatch.delenv(CREDENTIALS_ENV)
    assert balsam("site stop").code == 0
    monkeypatch.setenv(CREDENTIALS_ENV, str(file))
    down = balsam("job ls")
    assert down.code == 1 and "cannot reach the database" in down.err and "logging in as 'alice'" in down.err
    assert not EmbeddedPostgres(SiteSettings.load(embedded_site)).is_running()
    monkeypatch.delenv(CREDENTIALS_ENV)
    assert balsam("site start --db-only").code == 0
    kept = embedded_site / "alice-copy.toml"  # as alice's own copy would outlive the site's
    kept.write_text(file.read_text())
    os.chmod(kept, 0o600)
    assert balsam("site user rm alice").code == 0 and not file.exists()
    monkeypatch.setenv(CREDENTIALS_ENV, str(kept))
    gone = balsam("job ls")
    assert gone.code == 1 and 'password authentication failed for user "alice"' in gone.err, gone


def test_a_collaborators_launcher_runs_jobs_with_its_own_role(site, users, tmp_path):
    """The launcher's whole path (lease, acquisition, events, parents released) within a collaborator's rights."""
    _, collab_file = users("collaborator")
    _, viewer_file = users("viewer")
    out = tmp_path / "ran.txt"
    site.add_app("note", f"sh -c 'echo {{n}} >> {out}'")
    first = site.add_job("note", params={"n": 1}, name="first")
    site.add_job("note", params={"n": 2}, parents=[first.id])

    def launch(file):
        env = launcher_env(site, **{CREDENTIALS_ENV: str(file)})
        return subprocess.run([balsam_script(), "launcher", "--until-idle"], env=env, capture_output=True, text=True, timeout=120,
                              check=False)

    refused = launch(viewer_file)  # it does log in with the file: a viewer's launcher may not register
    assert refused.returncode != 0 and "permission denied" in refused.stderr, refused
    result = launch(collab_file)
    assert result.returncode == 0, result.stderr
    assert site.count_jobs() == {"JOB_FINISHED": 2}
    assert out.read_text().split() == ["1", "2"]
    with site.session() as session:
        assert session.execute(text_("SELECT count(*) FROM launchers")).scalar_one() == 1


# -- the site's folders on disk: private by default, or shared with a group -------------------------


def _as_other(*command, groups: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    """Run a command as another local user (nobody), a member of ``groups`` only."""
    ids = ["--reuid=65534", "--regid=65534", f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"]
    return subprocess.run(["setpriv", *ids, "--", *map(str, command)], capture_output=True, text=True, timeout=30)


@pytest.fixture
def open_parent():
    """A folder every local user may enter (pytest's own temporary folders are its user's alone)."""
    if os.geteuid() != 0:
        pytest.skip("acting as another local user (setpriv) needs root, as in CI")
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="balsam-privacy-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _ran_a_job(site):
    from balsam.site.workdir import workdir

    site.add_app("hello", "sh -c 'echo made by the job > note.txt; echo out'")
    job = site.add_job("hello")
    result = subprocess.run([balsam_script(), "launcher", "--until-idle"], env=launcher_env(site), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert site.job(job.id).state == "JOB_FINISHED"
    return workdir(site.settings.data_dir, "default", job.id)


def test_a_site_is_private_to_its_owner_by_default(db_url, open_parent):
    """Another local user lists nothing and reads nothing: not the job folders, outputs, logs or settings."""
    with Site.init(open_parent / "site", name="private", db_url=db_url) as site:
        folder = _ran_a_job(site)
        settings = site.settings
        assert {_mode(p) for p in (settings.path, settings.data_dir, settings.logs_dir, settings.batch_dir)} == {0o700}
        # What the launcher and the job itself made, under the site's umask.
        for made in (folder, folder / "job.out", folder / "note.txt", settings.logs_dir / "launcher.log"):
            assert _mode(made) & 0o077 == 0, made
        for command in (["ls", settings.path], ["ls", settings.data_dir], ["cat", folder / "job.out"], ["cat", folder / "note.txt"],
                        ["cat", settings.logs_dir / "launcher.log"], ["cat", settings.settings_file]):  # fmt: skip
            denied = _as_other(*command)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, (command, denied)


def test_a_shared_site_gives_its_group_the_job_folders_and_logs_and_nothing_else(db_url, open_parent):
    import grp

    from balsam.private_files import write_private

    users_gid = grp.getgrnam("users").gr_gid
    with Site.init(open_parent / "site", name="shared", db_url=db_url, group="users") as site:
        folder = _ran_a_job(site)
        settings = site.settings
        write_private(settings.argo_credential_file, "argo-s-secret")
        assert SiteSettings.load(settings.path).group == "users"
        assert _mode(settings.path) == 0o2750 and {_mode(p) for p in (settings.data_dir, settings.logs_dir, settings.batch_dir)} == {0o2770}
        assert {os.stat(p).st_gid for p in (settings.path, settings.data_dir, folder, folder / "job.out")} == {users_gid}

        def member(*command):
            return _as_other(*command, groups=(users_gid,))

        assert member("cat", folder / "job.out").stdout == "out\n"
        assert member("cat", folder / "note.txt").stdout == "made by the job\n"
        assert "job" in member("ls", folder).stdout and member("cat", settings.logs_dir / "launcher.log").returncode == 0
        assert member("touch", folder / "by-a-member").returncode == 0  # a member's own launcher writes there too
        # Secrets stay the owner's: this settings file holds the database password, the credential is 600.
        for secret in (settings.settings_file, settings.argo_credential_file):
            denied = member("cat", secret)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, secret
        outsider = _as_other("ls", settings.data_dir)
        assert outsider.returncode != 0 and "Permission denied" in outsider.stderr


def test_an_unknown_group_is_refused_before_anything_is_made(db_url, tmp_path):
    from balsam.errors import BalsamError

    with pytest.raises(BalsamError, match="no group named 'no-such-group-here'"):
        Site.init(tmp_path / "site", db_url=db_url, group="no-such-group-here")
    assert not (tmp_path / "site").exists()
