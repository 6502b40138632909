"""``balsam launcher``: run the site's jobs here, inside a batch job or on a workstation.

The launcher package is imported only when the command runs: the CLI is where the site and the
launcher meet, and every other command stays as quick to start as before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from balsam.errors import BalsamError
from balsam.site.cli.common import Site, SiteOption, parse_assignments


def launcher(
    job_mode: str = typer.Option("mpi", "--job-mode", help="mpi: any job, multi-rank ones through mpirun/srun; serial: single-rank jobs packed per node."),
    wall_time: float | None = typer.Option(None, "--wall-time", help="Minutes this launcher may run; it stops its tasks and exits shortly before."),
    max_jobs: int | None = typer.Option(None, "--max-jobs", help="Start at most this many jobs, then exit when they are done."),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="Only run jobs of this workflow."),
    tags: list[str] = typer.Option([], "--tag", help="Only run jobs with this tag, NAME=VALUE (repeatable)."),
    until_idle: bool = typer.Option(False, "--until-idle", help="Exit once no runnable job is left and none is running."),
    linger: float = typer.Option(0.0, "--linger", help="With --until-idle: exit only after being idle this many seconds."),
    lease: float = typer.Option(60.0, "--lease", help="Seconds without a heartbeat after which other launchers take this one's jobs back."),
    progress: float = typer.Option(30.0, "--progress", help="Seconds between two progress lines in the log (jobs done, failed, running, rate)."),
    mpi: str | None = typer.Option(None, "--mpi", help="MPI launcher for multi-rank jobs: openmpi, mpich, srun or aprun [default: detected]."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every batch written, not just progress."),
    consume_all: bool = typer.Option(False, "--consume-all", hidden=True, help="(Balsam 0.x) run every workflow: the default."),
    wf_filter: str | None = typer.Option(None, "--wf-filter", hidden=True, help="(Balsam 0.x) --workflow."),
    time_limit: float | None = typer.Option(None, "--time-limit-minutes", hidden=True, help="(Balsam 0.x) --wall-time."),
    site: Path | None = SiteOption,
) -> None:
    """Run jobs of the site on the nodes of this batch job (or on this host)."""
    if consume_all or wf_filter is not None or time_limit is not None:
        from balsam.site.cli.output import err_console
        from balsam.site.compat import modern

        if wf_filter is not None and workflow is not None and wf_filter != workflow:
            raise BalsamError("--wf-filter and --workflow name different workflows; give one")
        workflow = workflow if workflow is not None else wf_filter
        wall_time = wall_time if wall_time is not None else (time_limit or None)  # the old 0 meant "no limit"
        err_console.print(modern(["balsam", "launcher", "--job-mode", job_mode] + (["--workflow", workflow] if workflow else [])
                                 + (["--wall-time", f"{wall_time:g}"] if wall_time else [])))  # fmt: skip
    from balsam.launcher.master import LauncherConfig
    from balsam.launcher.start import ensemble_rank, run_ensemble_worker, run_launcher

    try:
        config = LauncherConfig(
            job_mode=job_mode, wall_time_min=wall_time, max_jobs=max_jobs, workflow=workflow,
            tags=parse_assignments(tags, "tag"), until_idle=until_idle, linger_s=linger, lease_seconds=lease,
            batch_job_id=_batch_job_id(), progress_seconds=progress,
        )  # fmt: skip
    except ValueError as exc:
        raise BalsamError(str(exc)) from None
    from balsam.site.access import protect_site, site_umask
    from balsam.site.settings import SiteSettings, find_site

    settings = SiteSettings.load(Path(site) if site else find_site())
    # Job folders, outputs and logs as private as the site (or its group's): the jobs inherit the umask.
    protect_site(settings)
    os.umask(site_umask(settings))
    _log_to(settings.logs_dir, logging.DEBUG if verbose else logging.INFO)
    if ensemble_rank() not in (None, 0):
        # A worker rank of a serial ensemble takes its work from rank 0 and opens no database connection.
        raise typer.Exit(run_ensemble_worker())
    with Site(settings, launcher=True) as opened:
        code = run_launcher(opened, config, mpi)
    raise typer.Exit(code)


def _batch_job_id() -> int | None:
    """The site's batch job this launcher was started for (set in the scripts the site submits)."""
    from balsam.site.batch import BATCH_JOB_VARIABLE

    value = os.environ.get(BATCH_JOB_VARIABLE, "")
    if not value:
        return None
    if not value.isdigit():
        raise BalsamError(f"{BATCH_JOB_VARIABLE}={value!r} is not a batch job id")
    return int(value)


def _log_to(logs_dir: Path, level: int) -> None:
    """Progress to stderr, and everything to a log file in the site's logs/ folder."""
    logger = logging.getLogger("balsam.launcher")
    logger.setLevel(logging.DEBUG)
    if logger.handlers:  # run twice in one process (tests): keep one set of handlers
        return
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    to_stderr = logging.StreamHandler()
    to_stderr.setLevel(level)
    to_stderr.setFormatter(fmt)
    to_file = logging.FileHandler(logs_dir / "launcher.log")
    to_file.setFormatter(fmt)
    logger.addHandler(to_stderr)
    logger.addHandler(to_file)
