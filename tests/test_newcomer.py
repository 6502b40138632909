"""A new user's first hour, measured (issue 22): every dead end says what is wrong and what to type."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from argo_helpers import ARGO, Federation
from launcher_helpers import run_launcher

from balsam.argo.certs import init_ca
from balsam.argo.db.engine import cluster
from balsam.argo.config import ServerSettings
from balsam.postgres import free_port
from balsam.site.agent import stop_agent
from balsam.site.api import Site
from balsam.site.settings import SiteSettings


def _argo_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A client with no token, no ARGO_DATA and a client config of its own, as on a fresh login."""
    env = {k: v for k, v in os.environ.items() if k not in ("ARGO_TOKEN", "ARGO_DATA", "ARGO_ADDRESS", "ARGO_CA")}
    return {**env, "ARGO_CLIENT_CONFIG": str(tmp_path / "client" / "client.toml"), **extra}


def _argo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ARGO, *args], capture_output=True, text=True, timeout=120, env=env)


def test_a_site_that_is_not_enrolled_is_not_called_ready(tmp_path, balsam):
    fed = Federation(tmp_path)
    fed.start_server()
    site = Site.init(tmp_path / "east", name="east")
    try:
        started = balsam(["site", "start", "--site", str(site.settings.path), "--argo", fed.address])
        assert started.code == 0, started.err
        assert "is ready" not in started.out and "site east is up, with the problem(s) above" in started.out
        assert "problem: not enrolled with Argo at" in started.err and "argo site enrol east" in started.err
        assert "--enrol-token TOKEN" in started.err and "argo login" not in started.err
        status = balsam(["site", "status", "--site", str(site.settings.path), "--json"])
        problems = json.loads(status.out)["problems"]
        assert any(p.startswith("not enrolled with Argo") for p in problems)
        assert any(p.startswith("not connected to Argo") and "UNAUTHENTICATED" in p for p in problems), problems
        table = balsam(["site", "status", "--site", str(site.settings.path)])
        assert "problem" in table.out and "not enrolled" in table.out
    finally:
        stop_agent(site.settings)
        balsam(["site", "stop", "--site", str(site.settings.path)])
        site.close()
        fed.argo("server", "stop", "--data", str(fed.data), check=False)


def test_argo_commands_find_the_owner_token_of_a_server_started_with_another_folder(tmp_path):
    env = _argo_env(tmp_path)
    data, address = tmp_path / "elsewhere", f"127.0.0.1:{free_port()}"
    started = _argo(env, "server", "start", "--data", str(data), "--address", address)
    assert started.returncode == 0, started.stderr
    try:
        assert f"--data {data} or ARGO_DATA={data}" in started.stdout
        listed = _argo(env, "sites", "--address", address)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith("SITE")
        # Another machine's view: no note, no token, and the refusal names what to set.
        elsewhere = _argo({**env, "ARGO_CLIENT_CONFIG": str(tmp_path / "other" / "client.toml")}, "sites", "--address", address)
        assert elsewhere.returncode == 1 and "ARGO_DATA=DIR of `argo server start --data DIR`" in elsewhere.stderr
    finally:
        _argo(env, "server", "stop", "--data", str(data))


def test_a_failed_server_start_names_its_cause_and_leaves_nothing_running(tmp_path):
    env = _argo_env(tmp_path)
    data = tmp_path / "argo"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A first, good run leaves lines (alembic's among them) in the server's logs.
        first = _argo(env, "server", "start", "--data", str(data), "--address", f"127.0.0.1:{free_port()}")
        assert first.returncode == 0, first.stderr
        assert _argo(env, "server", "stop", "--data", str(data)).returncode == 0
        failed = _argo(env, "server", "start", "--data", str(data), "--address", f"127.0.0.1:{port}")
    assert failed.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in failed.stderr and "alembic" not in failed.stderr.lower()
    assert not cluster(ServerSettings.load(data)).is_running()  # its PostgreSQL went with it
    stopped = _argo(env, "server", "stop", "--data", str(data))
    assert stopped.returncode == 0 and stopped.stdout.strip() == "no Argo server was running"


def test_a_plain_text_client_at_a_tls_coordinator_is_told_to_give_the_ca(tmp_path):
    env = _argo_env(tmp_path)
    certs = init_ca(tmp_path / "tls")
    data, address = tmp_path / "argo", f"127.0.0.1:{free_port()}"
    assert _argo(env, "server", "start", "--data", str(data), "--address", address, "--tls-dir", str(certs)).returncode == 0
    try:
        plain = _argo(env, "sites", "--address", address)
        assert plain.returncode == 1
        assert f"cannot reach the Argo server at {address}" in plain.stderr
        assert "this client speaks plain text" in plain.stderr and "--ca DIR/ca.pem" in plain.stderr
        good = _argo(env, "sites", "--address", address, "--ca", str(certs / "ca.pem"))
        assert good.returncode == 0, good.stderr
    finally:
        _argo(env, "server", "stop", "--data", str(data))


def test_job_show_gives_the_working_folder_and_job_log_the_output(site, balsam):
    site.add_app("talk", f"{sys.executable} -c 'import sys; print(\"out\", sys.argv[1]); print(\"err\", file=sys.stderr); print(\"\\x1b[31mred\")' {{w}}")
    job = site.add_job("talk", params={"w": "one"}, workflow="w f")
    waiting = balsam(f"job log {job.id}")
    assert waiting.code == 1 and f"job {job.id} (READY) has no job.out yet" in waiting.err
    assert run_launcher(site, "--until-idle").returncode == 0
    shown = json.loads(balsam(f"job show {job.id} --json").out)
    folder = Path(shown["workdir"])
    assert folder == site.settings.data_dir / "w_f" / str(job.id) and (folder / "job.out").exists()
    assert balsam(f"job log {job.id}").out == "out one\n\x1b[31mred\n"  # to a pipe: as the program wrote it
    assert balsam(f"job log {job.id} --err").out == "err\n"
    assert balsam(f"job log {job.id} --tail 1").out == "\x1b[31mred\n"


def test_jobs_that_can_never_run_say_so(site, balsam):
    site.add_app("ok", "true")
    site.add_app("bad", "false")
    big = site.add_job("ok", nodes=4)
    parent = site.add_job("bad")
    child = site.add_job("ok", parents=[parent.id])
    result = run_launcher(site, "--until-idle")
    assert result.returncode == 0, result.stderr
    # The launcher does not call a 4-node job on a 1-node host "nothing left": it names it.
    assert f"left 1 job(s) too big for this launcher: {big.id}" in result.stderr
    assert site.job(parent.id).state == "FAILED" and site.job(child.id).state == "AWAITING_PARENTS"
    notes = [e.message for e in site.history(child.id)]
    assert any(f"blocked: parent {parent.id} is FAILED" in n and f"balsam job reset {parent.id}" in n for n in notes), notes
    problems = json.loads(balsam("site status --json").out)["problems"]
    assert any("too big for any batch job here (the local scheduler has this host alone: 1 node)" in p and f"job {big.id} (4 nodes)" in p
               for p in problems), problems  # fmt: skip
    assert any(f"e.g. job {child.id} waits for job {parent.id} (FAILED)" in p for p in problems), problems
    assert any("wait to run, but nothing will run them: the elastic queue is off" in p for p in problems), problems


def test_status_of_a_healthy_site_finds_no_problem(site, balsam):
    site.add_app("ok", "true")
    site.add_job("ok")
    assert run_launcher(site, "--until-idle").returncode == 0
    status = balsam("site status")
    assert status.code == 0 and "no problems found" in status.out
    assert json.loads(balsam("site status --json").out)["problems"] == []


def test_common_choices_are_options_not_toml_edits(tmp_path, db_url, balsam):
    made = balsam(["init", str(tmp_path / "s"), "--db-url", db_url, "--scheduler", "slurm", "--project", "phys", "--queue", "debug",
                   "--elastic-queue", "--max-nodes", "4"])  # fmt: skip
    assert made.code == 0, made.err
    settings = SiteSettings.load(tmp_path / "s")
    assert (settings.scheduler.name, settings.scheduler.project, settings.scheduler.queue) == ("slurm", "phys", "debug")
    assert settings.elastic_queue.enabled and settings.elastic_queue.max_nodes == 4
    site = ["--site", str(tmp_path / "s")]
    changed = balsam(["site", "set", *site, "--scheduler", "local", "--no-elastic-queue"])
    assert changed.code == 0 and "set elastic_queue.enabled = False" in changed.out
    settings = SiteSettings.load(tmp_path / "s")
    assert settings.scheduler.name == "local" and not settings.elastic_queue.enabled
    shown = balsam(["site", "set", *site])
    assert "scheduler local (project phys, queue debug); elastic queue off" in shown.out
    for args, message in ((["--scheduler", "sge"], "scheduler.name must be one of"), (["--max-nodes", "0"], "max_nodes must be a whole number"),
                          (["--db-idle-stop", "3"], "external server, which Balsam neither starts nor stops")):  # fmt: skip
        refused = balsam(["site", "set", *site, *args])
        assert refused.code == 1 and message in refused.err and "Traceback" not in refused.err
    assert SiteSettings.load(tmp_path / "s").scheduler.name == "local"  # nothing half-written
    # A qsub job on a site whose elastic queue is off says it will wait.
    queued = balsam(["qsub", *site, "-t", "5", "--", "true"])
    assert queued.code == 0 and queued.out.strip().isdigit()
    assert "the site's elastic queue is off" in queued.err and "balsam site set --elastic-queue" in queued.err
    refused = balsam(["init", str(tmp_path / "bad"), "--db-url", db_url, "--max-nodes", "0"])
    assert refused.code == 1 and "max_nodes" in refused.err and not (tmp_path / "bad").exists()


def test_app_model_predicts_at_the_one_node_count_every_run_used(site, balsam):
    """As on every single-host site: the node scaling is unknown, but --value still gives a time."""
    site.add_app("nap", f"{sys.executable} -c 'import sys, time; time.sleep(0.1 * float(sys.argv[1]))' {{size}}")
    for size in (1, 2, 4, 6):
        site.add_job("nap", params={"size": size}, workflow="naps")
    assert run_launcher(site, "--until-idle").returncode == 0
    small = balsam("app model nap --feature size --value 1")
    assert small.code == 0, small.err
    large = balsam("app model nap --value 20")
    assert "predicted at size = 1 on 1 node(s): " in small.out and "predicted at size = 20 on 1 node(s): " in large.out
    assert "how the time changes with the node count is unknown" in large.out
    seconds = {}
    for value in (1, 20):
        report = json.loads(balsam(f"app model nap --value {value} --json").out)
        (prediction,) = report["prediction"]
        assert prediction["nodes"] == 1 and report["at"] == {"size": value}
        seconds[value] = prediction["seconds"]
    # The runs took about 0.1 s per unit of size: 20 units take well over a second, 1 unit far less.
    assert seconds[20] > 1.0 and seconds[1] < 0.6 < seconds[20] - seconds[1], seconds
    bad = balsam("app model nap --value -3")
    assert bad.code == 1 and "must be a number >= 0" in bad.err and "Traceback" not in bad.err
