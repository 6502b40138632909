"""What happens to a job after each of its steps: a pure core over plain data.

The launcher asks these functions which states a job passes through after its main run or one
of its pre/post steps ends, and what follows (a post step, a rescue job, nothing). They do no I/O
and read no clock, so every handler case is tested directly.

Stage-in and stage-out of remote files belong to the site's transfer service: a launcher takes
a READY job only when it has nothing to stage in, and leaves a job that has files to stage out
in POSTPROCESSED, released, for that service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from balsam.states import JobState, Step

S = JobState


@dataclass
class HeldJob:
    """What a launcher knows of a job it holds: the row and its app, as plain values."""

    id: int
    name: str
    workflow: str
    state: JobState  # as the launcher knows it: written, or among ``unwritten``
    app_name: str
    command: list[str]  # the app's template, filled in
    environment: dict[str, str]
    preprocess: list[str] | None
    postprocess: list[str] | None
    on_error: str
    max_retries: int
    on_timeout: str
    image: str | None
    retry_count: int
    nodes: int = 1
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    gpus_per_rank: int = 0
    node_packing_count: int = 1
    wall_time_min: float | None = None
    stage_out: list[Any] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    launch: str = "mpi"  # the app's: "script" runs the command once, which starts its own ranks
    argo: bool = False  # an Argo task: it starts only while the site holds the coordinator's lease
    # Steps taken but not handed to the database yet (a queued job's way to PREPROCESSED): they go
    # with the job's next change, its start, so that the row is written once for both.
    unwritten: list[Step] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """The transitions to write, the columns to set, and what the launcher does next."""

    steps: list[Step]
    fields: dict[str, Any] = field(default_factory=dict)
    # "post": run the post step; "rescue": create a rescue job; "release": let go of the job.
    next: str = "release"


def acquired_steps(job: HeldJob) -> tuple[list[Step], str]:
    """Steps right after acquisition, and what to do next: "pre", "run" or one of the post-run moves."""
    if job.state == S.READY:
        steps = [Step(S.STAGED_IN, "nothing to stage in")]
        if job.preprocess:
            return steps, "pre"
        return steps + [Step(S.PREPROCESSED, "no preprocess step")], "run"
    if job.state == S.STAGED_IN:
        if job.preprocess:
            return [], "pre"
        return [Step(S.PREPROCESSED, "no preprocess step")], "run"
    if job.state in (S.PREPROCESSED, S.RESTART_READY):
        return [], "run"
    if job.state == S.RUN_DONE:
        return [], "post"
    if job.state in (S.POSTPROCESSED, S.STAGED_OUT):
        return [], "finish"
    raise ValueError(f"job {job.id}: a launcher does not take jobs in state {job.state}")


def after_pre(job: HeldJob, return_code: int, error_tail: str) -> Outcome:
    if return_code == 0:
        return Outcome([Step(S.PREPROCESSED, "preprocess step done")], next="run")
    return Outcome(
        [Step(S.FAILED, f"preprocess step failed with exit code {return_code}")],
        {"error_tail": error_tail},
    )


def after_run(job: HeldJob, return_code: int, seconds: float, error_tail: str, timed_out: bool) -> Outcome:
    """The transitions after the main run ended: success, an error, or the launcher's wall time."""
    fields: dict[str, Any] = {"return_code": return_code, "error_tail": error_tail}
    if timed_out:
        steps = [Step(S.RUN_TIMEOUT, f"stopped at the launcher's wall time after {seconds:.1f} s")]
        if job.on_timeout == "retry":
            return Outcome(steps + [Step(S.RESTART_READY, "timeout handler: run it again")], fields)
        return Outcome(steps + [Step(S.FAILED, "timeout handler: fail")], fields)
    if return_code == 0:
        steps = [Step(S.RUN_DONE, f"exit code 0 after {seconds:.1f} s")]
        if job.postprocess:
            return Outcome(steps, fields, next="post")
        return Outcome(steps + finishing_steps(job, "no postprocess step"), fields)
    steps = [Step(S.RUN_ERROR, f"{describe_exit(return_code)} after {seconds:.1f} s")]
    return _error_handler(job, steps, fields)


def after_post(job: HeldJob, return_code: int, error_tail: str) -> Outcome:
    if return_code == 0:
        return Outcome(finishing_steps(job, "postprocess step done"))
    return Outcome(
        [Step(S.FAILED, f"postprocess step failed with exit code {return_code}")],
        {"error_tail": error_tail},
    )


def finishing_steps(job: HeldJob, post_message: str) -> list[Step]:
    """From RUN_DONE (or later) to JOB_FINISHED, stopping at POSTPROCESSED when there is a stage-out."""
    steps = []
    if job.state in (S.RUNNING, S.RUN_DONE):
        steps.append(Step(S.POSTPROCESSED, post_message))
    if job.stage_out:
        return steps  # the transfer service takes it from POSTPROCESSED
    if job.state != S.STAGED_OUT:
        steps.append(Step(S.STAGED_OUT, "nothing to stage out"))
    return steps + [Step(S.JOB_FINISHED)]


def _error_handler(job: HeldJob, steps: list[Step], fields: dict[str, Any]) -> Outcome:
    if job.on_error == "retry":
        if job.retry_count < job.max_retries:
            attempt = job.retry_count + 1
            message = f"error handler: retry {attempt} of {job.max_retries}"
            return Outcome(steps + [Step(S.RESTART_READY, message)], {**fields, "retry_count": attempt})
        return Outcome(steps + [Step(S.FAILED, f"error handler: all {job.max_retries} retries used")], fields)
    if job.on_error == "rescue":
        depth = int(job.data.get("rescue_depth", 0))
        if depth < job.max_retries:
            return Outcome(steps + [Step(S.FAILED, "error handler: a rescue job takes over")], fields, next="rescue")
        return Outcome(steps + [Step(S.FAILED, f"error handler: {depth} rescue jobs already tried")], fields)
    return Outcome(steps + [Step(S.FAILED, "error handler: fail")], fields)


def rescue_spec(job: HeldJob) -> dict[str, Any]:
    """The job that stands in for a failed one: same app, parameters and resources, one level deeper."""
    depth = int(job.data.get("rescue_depth", 0)) + 1
    return {
        "app": job.app_name,
        "params": dict(job.params),
        "name": f"{job.name or 'job'}-rescue{depth}"[:200],
        "workflow": job.workflow,
        "nodes": job.nodes,
        "ranks_per_node": job.ranks_per_node,
        "threads_per_rank": job.threads_per_rank,
        "gpus_per_rank": job.gpus_per_rank,
        "node_packing_count": job.node_packing_count,
        "wall_time_min": job.wall_time_min,
        "data": {**job.data, "rescue_of": job.id, "rescue_depth": depth},
        "stage_out": list(job.stage_out),
    }


def describe_exit(return_code: int) -> str:
    if return_code < 0:
        return f"killed by signal {-return_code}"
    return f"exit code {return_code}"
