"""The original Balsam's (0.x) commands and Python API, typed as its users know them, run to the end."""

from __future__ import annotations

import json
import subprocess
import textwrap

from conftest import balsam_script
from launcher_helpers import launcher_env, run_launcher, wait_for

from balsam.site.batch import BatchQueue
from balsam.site.templates import CommandTemplate

# The original Balsam's README, verbatim (github.com/balsam-alcf/balsam, "Balsam: HPC Workflows").
OLD_README = """
balsam app --name SayHello --executable "echo hello,"
for i in {1..10}
do
 balsam job --name hi$i --workflow test --application SayHello --args "world $i"
done
balsam submit-launch -A Project -q Queue -t 5 -n 2 --job-mode=serial
"""


def _bash(site, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-c", script], env=launcher_env(site), capture_output=True, text=True, timeout=300,
                          cwd=site.settings.path)  # fmt: skip


def test_the_original_readme_runs_verbatim_to_finished_jobs(site):
    assert balsam_script()  # the installed `balsam` is what the README's commands call
    result = _bash(site, OLD_README)
    assert result.returncode == 0, result.stderr
    queue = BatchQueue(site)
    try:
        wait_for(lambda: site.count_jobs().get("JOB_FINISHED", 0) == 10, timeout=120, what="the 10 jobs to finish")
        for job in site.jobs():
            i = job.name.removeprefix("hi")
            # `--args "world $i"` reached echo as two literal arguments after the executable's own.
            out = (site.settings.data_dir / "test" / str(job.id) / "job.out").read_text()
            assert out == f"hello, world {i}\n"
            assert job.workflow == "test" and job.app.name == "SayHello"
    finally:
        for row in queue.list():
            queue.cancel(row.id)
        wait_for(lambda: (queue.sync(), not queue.list())[1], timeout=60, what="the batch job to end")
    # Every old command named the command of today, and the local scheduler said what it did with -n 2 -A -q.
    assert "today: balsam app add SayHello --command 'echo hello, {*args}'" in result.stderr
    assert "today: balsam job add --app SayHello --name hi3 --workflow test -p 'args=world 3'" in result.stderr
    assert "1 node instead of 2" in result.stderr and "-A Project and -q Queue" in result.stderr
    listed = subprocess.run(["bash", "-c", "balsam ls"], env=launcher_env(site), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.count("JOB_FINISHED") == 10 and "10 jobs" in listed.stdout
    assert "today: balsam job ls" in listed.stderr


def test_old_args_reach_the_program_as_literal_words_never_a_shell(site, balsam, tmp_path):
    assert balsam(["app", "--name", "show", "--executable", "printf [%s]"]).code == 0
    marker = tmp_path / "pwned"
    added = balsam(["job", "--name", "j", "--workflow", "w", "--application", "show", "--args", f"'one two' three; touch {marker} $HOME"])
    assert added.code == 0, added.err
    result = run_launcher(site, "--job-mode", "serial", "--until-idle")
    assert result.returncode == 0, result.stderr
    job = site.jobs()[0]
    assert job.state == "JOB_FINISHED"
    out = (site.settings.data_dir / "w" / str(job.id) / "job.out").read_text()
    assert out == f"[one two][three;][touch][{marker}][$HOME]"
    assert not marker.exists()
    # A quote left open is refused when the job is added, naming the option; nothing stored.
    bad = balsam(["job", "--name", "k", "--workflow", "w", "--application", "show", "--args", "'open"])
    assert bad.code == 1 and "cannot split --args" in bad.err and "Traceback" not in bad.err
    assert len(site.jobs()) == 1


def test_old_listing_removal_kill_modify_and_dag_commands(site, balsam):
    assert balsam(["app", "--name", "say", "--executable", "echo"]).code == 0
    ids = []
    for name in ("a", "b", "c"):
        out = balsam(["job", "--name", name, "--workflow", "wf1" if name != "c" else "wf2", "--application", "say", "--args", name,
                      "--num-nodes", "1", "--ranks-per-node", "2", "--threads-per-rank", "3", "--yes"])  # fmt: skip
        assert out.code == 0, out.err
        ids.append(int(out.out))
    child = site.add_job("say", params={"args": "d"}, name="d", workflow="wf1", parents=[ids[0]])
    job = site.job(ids[0])
    assert (job.ranks_per_node, job.threads_per_rank) == (2, 3)

    listed = balsam("ls --wf wf1")
    assert listed.code == 0 and "today: balsam job ls --workflow wf1" in listed.err
    assert [line.split()[1] for line in listed.out.splitlines()[1:-1]] == ["a", "b", "d"]
    by_state = balsam("ls --state AWAITING_PARENTS")
    assert [line.split()[1] for line in by_state.out.splitlines()[1:-1]] == ["d"]
    workflows = balsam("ls wf")
    assert "wf1" in workflows.out and "wf2" in workflows.out

    tree = balsam("dag --wf wf1")
    assert tree.code == 0
    lines = tree.out.splitlines()
    assert lines[0].startswith(f"{ids[0]} a [READY]") and lines[1].strip().startswith(f"└─ {child.id} d [AWAITING_PARENTS]")

    modified = balsam(f"modify {ids[1]} num_nodes 2")
    assert modified.code == 0 and f"today: balsam job modify {ids[1]} --nodes 2" in modified.err
    assert site.job(ids[1]).nodes == 2
    assert balsam(f"modify {ids[1]} args 'x y'").code == 0 and site.job(ids[1]).parameters == {"args": "x y"}
    wrong = balsam(f"modify {ids[1]} colour red")
    assert wrong.code == 1 and "cannot modify 'colour'" in wrong.err

    killed = balsam(f"kill --id {ids[0]} --recursive")
    assert killed.code == 0 and f"today: balsam job kill {ids[0]}" in killed.err
    assert site.job(ids[0]).state == "USER_KILLED" and site.job(child.id).state == "USER_KILLED"
    reopened = balsam(f"modify {ids[0]} state READY")
    assert reopened.code == 0 and f"today: balsam job reset {ids[0]}" in reopened.err and site.job(ids[0]).state == "READY"

    removed = balsam("rm jobs --name d")
    assert removed.code == 0 and f"today: balsam job rm {child.id}" in removed.err
    assert [j.name for j in site.jobs()] == ["a", "b", "c"]
    assert balsam("rm jobs --all").code == 0 and site.jobs() == []
    assert balsam("rm apps --name say").code == 0 and site.apps() == []
    # The modern group commands are untouched by the old options living on the same group.
    assert balsam("job ls --json").code == 0
    mixed = balsam("job --name x ls")
    assert mixed.code == 1 and "Balsam 0.x form" in mixed.err


def test_old_python_api_in_a_users_script_and_inside_a_running_job(site, tmp_path):
    script = tmp_path / "fan.py"
    script.write_text(textwrap.dedent("""
        from balsam.launcher.dag import BalsamJob, add_job, current_job, kill, spawn_child

        me = current_job
        if me.name == "root":
            for n in range(2):
                spawn_child(name=f"leaf{n}", application="py", args=f"{__file__} {n}")
            extra = spawn_child(clone=True, name="doomed")
            kill(extra)
        print(me.name, me.args)
    """))
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import json
        from balsam.launcher.dag import BalsamJob, add_job, current_job

        assert current_job is None
        job = BalsamJob(name="root", workflow="fan", application="py", args="{script} root", num_nodes=1, ranks_per_node=1)
        job.data["owner"] = "me"
        job.save()
        other = add_job(name="other", workflow="fan", application="py", args="{script} other")
        print(json.dumps([job.job_id, job.state, str(job.working_directory), other.job_id]))
    """))
    assert _bash(site, "balsam app --name py --executable python3").returncode == 0
    made = subprocess.run(["python3", str(driver)], env=launcher_env(site), capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    root_id, state, folder, other_id = json.loads(made.stdout)
    assert state == "READY" and folder == str(site.settings.data_dir / "fan" / str(root_id))
    assert site.job(root_id).data == {"owner": "me"}
    result = run_launcher(site, "--job-mode", "serial", "--until-idle")
    assert result.returncode == 0, result.stderr
    jobs = {j.name: j for j in site.jobs()}
    assert {n: j.state for n, j in jobs.items()} == {
        "root": "JOB_FINISHED", "other": "JOB_FINISHED", "leaf0": "JOB_FINISHED", "leaf1": "JOB_FINISHED", "doomed": "USER_KILLED",
    }  # fmt: skip
    assert site.parents(jobs["leaf0"].id) == [root_id] and site.parents(jobs["doomed"].id) == [root_id]
    out = (site.settings.data_dir / "fan" / str(jobs["leaf1"].id) / "job.out").read_text()
    assert out == "leaf1 " + f"{script} 1\n"
    bad = subprocess.run(["python3", "-c", "from balsam.launcher.dag import BalsamJob; BalsamJob(url_in='x')"],
                         env=launcher_env(site), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "BalsamJob has no field 'url_in'" in bad.stderr


def test_a_list_placeholder_splits_its_value_into_arguments():
    template = CommandTemplate.parse("prog --fixed {x} {*rest}")
    assert template.render({"x": "a b", "rest": "'c d' e"}) == ["prog", "--fixed", "a b", "c d", "e"]
    assert template.render({"x": 1, "rest": ""}) == ["prog", "--fixed", "1"]
