"""Hostile values carried all the way to real runs: parameters filled into shell scripts run by a
real launcher (through the CLI, and through Argo to a site), and stage-in sources naming a site's
secrets in tasks that came through Argo."""

from __future__ import annotations

import shutil

import pytest

from argo_helpers import Federation, wait_for
from balsam.site.workdir import workdir
from launcher_helpers import run_launcher

pytestmark = pytest.mark.timeout(240)

# Each value tries to run a command of its own; each must reach the script as one word, unchanged.
HOSTILE = ["x; touch F", "$(touch G)", "`touch H`", "a'b\"c", "; rm -rf ./*", "&& touch I ||", "*", "-e touch J", "line\ntouch K"]
MADE = ("F", "G", "H", "I", "J", "K")

# The ways a template can run a shell with -c (the shell it needs, the template); each writes its
# value, as the shell saw it, to out.txt. Those whose shell is not installed here are left out.
SHELL_TEMPLATES = {
    "sh": ("sh", "sh -c 'printf %s {k} > out.txt'"),
    "bash": ("bash", "bash -c 'printf %s {k} > out.txt'"),
    "dash-absolute": ("/bin/dash", "/bin/dash -c 'printf %s {k} > out.txt'"),
    "env-bash-with-options": ("bash", "/usr/bin/env bash -eu -o pipefail -c 'printf %s {k} > out.txt'"),
    "nice-sh": ("sh", "nice -n 1 sh -c 'printf %s {k} > out.txt' ignored-zero"),
    "zsh": ("zsh", "zsh -c 'printf %s {k} > out.txt'"),
    "ksh": ("ksh", "ksh -c 'printf %s {k} > out.txt'"),
}
INSTALLED = {name: template for name, (shell, template) in SHELL_TEMPLATES.items() if shutil.which(shell)}


@pytest.mark.parametrize("template", INSTALLED.values(), ids=INSTALLED.keys())
def test_a_value_filled_into_a_shell_script_runs_no_command_of_its_own(site, balsam, template):
    """Through the CLI and a real launcher: `k='x; touch F'` and its kin create nothing."""
    assert balsam(["app", "add", "shell", "--command", template]).code == 0
    ids = [int(balsam(["job", "add", "-a", "shell", "-p", f"k={value}"]).out) for value in HOSTILE]
    result = run_launcher(site, "--until-idle", "--job-mode", "serial")
    assert result.returncode == 0, result.stderr
    for job_id, value in zip(ids, HOSTILE):
        folder = workdir(site.settings.data_dir, "default", job_id)
        assert site.job(job_id).state == "JOB_FINISHED", site.job(job_id).error_tail
        assert (folder / "out.txt").read_text() == value
        assert not [name for name in MADE if (folder / name).exists()]
        assert sorted(p.name for p in folder.iterdir()) == ["job.err", "job.out", "out.txt"]


def test_shell_quoting_is_the_templates_own_in_a_pre_and_post_process_step(site, balsam):
    assert balsam(["app", "add", "steps", "--command", "true {k}", "--preprocess", "sh -c 'printf %s {k} > pre.txt'",
                   "--postprocess", "bash -c 'printf %s {k} > post.txt'"]).code == 0  # fmt: skip
    job_id = int(balsam(["job", "add", "-a", "steps", "-p", "k=x; touch F"]).out)
    assert run_launcher(site, "--until-idle", "--job-mode", "serial").returncode == 0
    folder = workdir(site.settings.data_dir, "default", job_id)
    assert (folder / "pre.txt").read_text() == (folder / "post.txt").read_text() == "x; touch F"
    assert not (folder / "F").exists()


# -- through Argo ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    fed = Federation(tmp_path_factory.mktemp("hostile-runs"), site_timeout_s=60)
    fed.start_server()
    site = fed.add_site("s1", start=False)
    site.add_app("shell", "sh -c 'printf %s {k} > out.txt'")
    site.add_app("cat", "cat {f}")
    fed.start_agent("s1")
    with fed.client() as client:
        wait_for(lambda: [(s["name"], s["status"]) for s in client.sites()] == [("s1", "up")], 60, "site s1 to register")
    try:
        yield fed
    finally:
        fed.stop()


def _finished(fed, client, task_id: str) -> dict:
    return wait_for(lambda: (task := client.task(task_id))["state"] in ("JOB_FINISHED", "FAILED") and task, 120, f"{task_id} to end")


def test_a_value_sent_through_argo_into_a_shell_script_runs_no_command_of_its_own(federation):
    tasks = [{"name": f"t{i}", "app": "shell", "site": "s1", "params": {"k": value}} for i, value in enumerate(HOSTILE)]
    with federation.client() as client:
        workflow_id = client.submit({"name": "quoted", "tasks": tasks})
        ended = {t["name"]: _finished(federation, client, f"{workflow_id}/{t['name']}") for t in tasks}
    assert {name: task["state"] for name, task in ended.items()} == {t["name"]: "JOB_FINISHED" for t in tasks}
    site = federation.sites["s1"]
    jobs = {job.name: job for job in federation.local_jobs("s1") if job.argo_task_id.startswith(f"{workflow_id}/")}
    for i, value in enumerate(HOSTILE):
        folder = workdir(site.settings.data_dir, jobs[f"t{i}"].workflow, jobs[f"t{i}"].id)
        assert (folder / "out.txt").read_text() == value
        assert not [name for name in MADE if (folder / name).exists()]


def test_a_task_through_argo_cannot_stage_in_a_sites_secrets(federation):
    """Inputs naming the site's database password, its settings or its Argo credential (directly or
    through a link), or a file outside its allowed folders: the task fails with the reason, nothing copied."""
    site = federation.sites["s1"]
    settings = site.settings
    link = federation.root / "innocent.txt"
    link.symlink_to(settings.db_dir / "password")
    sources = {
        "password": (settings.db_dir / "password", "is a private file of the Balsam site in"),
        "settings": (settings.settings_file, "is a private file of the Balsam site in"),
        "credential": (settings.argo_credential_file, "is a private file of the Balsam site in"),
        "link": (link, f"(which resolves to {settings.db_dir / 'password'}) is a private file"),
        "owner-token": (federation.data / "owner-token", "is a private file of the Argo coordinator in"),
        "outside": ("/etc/hostname", "is outside the folders this site may read from"),
    }
    tasks = [{"name": name, "app": "cat", "site": "s1", "params": {"f": "in.txt"}, "inputs": {"in.txt": f"file://{source}"}}
             for name, (source, _) in sources.items()]  # fmt: skip
    with federation.client() as client:
        workflow_id = client.submit({"name": "secrets", "tasks": tasks})
        ended = {name: _finished(federation, client, f"{workflow_id}/{name}") for name in sources}
    jobs = {job.name: job for job in federation.local_jobs("s1") if job.argo_task_id.startswith(f"{workflow_id}/")}
    for name, (_source, reason) in sources.items():
        assert ended[name]["state"] == "FAILED", (name, ended[name])
        assert "stage-in failed for 1 of 1 file(s): in.txt: stage-in source" in ended[name]["message"] and reason in ended[name]["message"], ended[name]
        history = [event.message for event in site.history(jobs[name].id)]
        assert any(reason in message for message in history), history
        folder = workdir(settings.data_dir, jobs[name].workflow, jobs[name].id)
        assert not (folder / "in.txt").exists()
