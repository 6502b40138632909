"""From a held job and the resources it was given to the exact process to start: a pure core.

Where the job runs (``SITE/data/WORKFLOW/JOB_ID``), which variables it sees, and its argument
vector: the app's filled-in template, inside a container when the app names an image, behind
``mpirun``/``srun``/``aprun`` when it has several ranks or runs on another node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from balsam.launcher import containers, mpi
from balsam.launcher.lifecycle import HeldJob
from balsam.launcher.resources import Assignment, task_environment
from balsam.site.dynamic import JOB_ID_VARIABLE

@dataclass(frozen=True)
class RunContext:
    """What the launcher knows about where it runs, the same for every job."""

    site_path: str
    launcher_id: int
    local_host: str
    mpi_flavour: str | None = None  # None: every job must be single-rank on this host
    mpi_flags: dict[str, object] = field(default_factory=dict)
    container_runtime: str | None = None
    # Serial ensemble: each node has a worker of ours that starts single-rank jobs there itself.
    node_workers: bool = False


def environment(job: HeldJob, assignment: Assignment, ctx: RunContext) -> dict[str, str]:
    """The variables a job's processes get on top of the launcher's own."""
    env = dict(job.environment)
    env.update(task_environment(assignment, job.threads_per_rank))
    env.update({
        JOB_ID_VARIABLE: str(job.id),
        "BALSAM_SITE": ctx.site_path,
        "BALSAM_LAUNCHER_ID": str(ctx.launcher_id),
        "BALSAM_JOB_NODES": ",".join(assignment.hostnames),
    })  # fmt: skip
    return env


def run_argv(job: HeldJob, assignment: Assignment, env: dict[str, str], cwd: str, ctx: RunContext) -> list[str]:
    """The argument vector of the job's main run.

    A single-rank job placed on the launcher's own host (or on a node with an ensemble worker)
    starts directly, and so does a script-launched app's; anything else goes through the MPI
    launcher, which also carries the environment to remote ranks.
    """
    argv = list(job.command)
    if job.image:
        if ctx.container_runtime is None:
            raise RuntimeError(f"app {job.app_name!r} runs in image {job.image!r}, but neither apptainer nor singularity is installed here")
        argv = containers.wrap(ctx.container_runtime, job.image, argv, workdir=cwd, gpus=job.gpus_per_rank > 0)
    if job.launch == "script":
        # A batch-style script (from `balsam qsub`): started once, here; it reaches its nodes
        # itself through BALSAM_JOB_NODES (its nodes, comma-separated).
        return argv
    single = job.nodes == 1 and job.ranks_per_node == 1
    if single and (ctx.node_workers or assignment.hostnames == [ctx.local_host]):
        return argv
    if ctx.mpi_flavour is None:
        raise RuntimeError(f"job {job.id} needs an MPI launcher (it has {job.nodes * job.ranks_per_node} ranks or runs on another node), and none was found")
    run = mpi.MpiRun(
        argv=argv, nodes=list(assignment.hostnames), ranks_per_node=job.ranks_per_node,
        threads_per_rank=job.threads_per_rank, gpus_per_rank=job.gpus_per_rank, env=env,
    )  # fmt: skip
    return mpi.render(ctx.mpi_flavour, run, **ctx.mpi_flags)
