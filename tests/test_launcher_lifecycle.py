"""The launcher's pure decisions: handlers, finishing steps, working folders and command lines."""

from pathlib import Path

import pytest

from balsam.launcher import commands, lifecycle
from balsam.launcher.lifecycle import HeldJob
from balsam.launcher.resources import Assignment
from balsam.site.workdir import workdir
from balsam.states import JobState as S


def job(**kw) -> HeldJob:
    base = dict(
        id=7, name="sim", workflow="wf", state=S.RUNNING, app_name="app", command=["prog", "x"], environment={},
        preprocess=None, postprocess=None, on_error="fail", max_retries=2, on_timeout="fail", image=None, retry_count=0,
    )  # fmt: skip
    return HeldJob(**{**base, **kw})


def states(outcome):
    return [step.state for step in outcome.steps]


def test_success_without_steps_goes_all_the_way_to_finished():
    out = lifecycle.after_run(job(), 0, 1.5, "", timed_out=False)
    assert states(out) == [S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED]
    assert out.fields["return_code"] == 0 and out.next == "release"


def test_success_with_a_post_step_waits_for_it_and_a_stage_out_stops_at_postprocessed():
    assert lifecycle.after_run(job(postprocess=["check"]), 0, 1, "", False).next == "post"
    staged = job(stage_out=[{"src": "out.dat", "dest": "globus://x/out.dat"}])
    assert states(lifecycle.after_run(staged, 0, 1, "", False)) == [S.RUN_DONE, S.POSTPROCESSED]


@pytest.mark.parametrize(
    "retries_used, expected, count",
    [(0, S.RESTART_READY, 1), (1, S.RESTART_READY, 2), (2, S.FAILED, None)],
)
def test_retry_handler_counts_retries_and_then_fails(retries_used, expected, count):
    out = lifecycle.after_run(job(on_error="retry", retry_count=retries_used), 3, 1, "boom", False)
    assert states(out) == [S.RUN_ERROR, expected]
    assert out.fields.get("retry_count") == count
    assert out.fields["error_tail"] == "boom"


def test_rescue_handler_asks_for_a_rescue_job_until_the_depth_limit():
    first = lifecycle.after_run(job(on_error="rescue", params={"n": 1}), 1, 1, "", False)
    assert states(first) == [S.RUN_ERROR, S.FAILED] and first.next == "rescue"
    spec = lifecycle.rescue_spec(job(on_error="rescue", params={"n": 1}))
    assert spec["params"] == {"n": 1} and spec["data"]["rescue_depth"] == 1 and spec["data"]["rescue_of"] == 7
    deep = lifecycle.after_run(job(on_error="rescue", data={"rescue_depth": 2}), 1, 1, "", False)
    assert deep.next == "release" and states(deep) == [S.RUN_ERROR, S.FAILED]


@pytest.mark.parametrize("handler, final", [("retry", S.RESTART_READY), ("fail", S.FAILED)])
def test_timeout_handler(handler, final):
    out = lifecycle.after_run(job(on_timeout=handler), -15, 60, "", timed_out=True)
    assert states(out) == [S.RUN_TIMEOUT, final]
    assert "retry_count" not in out.fields, "a timeout is not the job's fault: it uses up no retry"


def test_a_signal_exit_is_described():
    out = lifecycle.after_run(job(), -9, 2, "", False)
    assert "killed by signal 9" in out.steps[0].message


def test_acquired_jobs_start_where_they_left_off():
    assert lifecycle.acquired_steps(job(state=S.READY))[1] == "run"
    assert lifecycle.acquired_steps(job(state=S.READY, preprocess=["prep"]))[1] == "pre"
    assert lifecycle.acquired_steps(job(state=S.RESTART_READY)) == ([], "run")
    assert lifecycle.acquired_steps(job(state=S.RUN_DONE))[1] == "post"
    assert lifecycle.acquired_steps(job(state=S.STAGED_OUT))[1] == "finish"
    with pytest.raises(ValueError, match="does not take"):
        lifecycle.acquired_steps(job(state=S.JOB_FINISHED))


@pytest.mark.parametrize(
    "workflow, folder",
    [("wf", "wf"), ("../../etc", ".._.._etc"), ("..", "_.."), ("", "_"), ("a/b c", "a_b_c"), ("/abs", "_abs")],
)
def test_working_folders_stay_inside_the_data_folder(workflow, folder):
    path = workdir(Path("/site/data"), workflow, 12)
    assert path == Path("/site/data") / folder / "12"
    assert path.resolve().is_relative_to(Path("/site/data"))


def test_a_single_rank_job_here_runs_directly_and_a_two_rank_job_through_mpirun():
    ctx = commands.RunContext("/site", 1, "host0", "openmpi", {"executable": "mpirun"})
    here = Assignment(7, ["host0"], {"host0": [0]}, {"host0": []})
    assert commands.run_argv(job(), here, {}, "/w", ctx) == ["prog", "x"]
    mpi = job(ranks_per_node=2)
    argv = commands.run_argv(mpi, here, {"OMP_NUM_THREADS": "1"}, "/w", ctx)
    assert argv[:3] == ["mpirun", "-n", "2"] and argv[-2:] == ["prog", "x"] and "OMP_NUM_THREADS=1" in argv
    with pytest.raises(RuntimeError, match="needs an MPI launcher"):
        commands.run_argv(mpi, here, {}, "/w", commands.RunContext("/site", 1, "host0"))


def test_an_image_without_a_container_runtime_is_a_clear_error():
    ctx = commands.RunContext("/site", 1, "host0")
    here = Assignment(7, ["host0"], {"host0": [0]}, {"host0": []})
    with pytest.raises(RuntimeError, match="neither apptainer nor singularity"):
        commands.run_argv(job(image="img.sif"), here, {}, "/w", ctx)
    wrapped = commands.run_argv(job(image="img.sif"), here, {}, "/w", commands.RunContext("/site", 1, "host0", container_runtime="apptainer"))
    assert wrapped[:2] == ["apptainer", "exec"] and wrapped[-3:] == ["img.sif", "prog", "x"]
