"""``balsam submit-launch``, ``balsam queue ls | rm`` and ``balsam qsub``: batch jobs of a site."""

from __future__ import annotations

from pathlib import Path

import typer

from balsam.site.cli.common import JsonOption, Site, SiteOption
from balsam.site.cli.output import console, err_console, local_time, print_json, print_table

app = typer.Typer(help="The site's launcher batch jobs in the scheduler.", no_args_is_help=True)


def submit_launch(
    project: str | None = typer.Option(None, "--project", "-A", help="Project (account) to charge [default: the site's]."),
    queue: str | None = typer.Option(None, "--queue", "-q", help="Queue (Slurm partition) [default: the site's]."),
    minutes: int = typer.Option(..., "--time", "-t", "--time-minutes", help="Wall time in minutes."),
    nodes: int = typer.Option(..., "--nodes", "-n", help="Nodes to reserve."),
    job_mode: str = typer.Option("mpi", "--job-mode", help="mpi: any job; serial: single-rank jobs packed per node."),
    until_idle: bool = typer.Option(False, "--until-idle", help="End the batch job once no runnable job is left."),
    site: Path | None = SiteOption,
) -> None:
    """Submit a launcher batch job now: it runs the site's jobs on NODES nodes for MINUTES."""
    from balsam.site.batch import BatchQueue, LaunchRequest

    with Site.open(site) as s:
        if s.settings.scheduler.name == "local":
            nodes = _on_this_host(nodes, project, queue)
        request = LaunchRequest(nodes=nodes, minutes=minutes, job_mode=job_mode, project=project or "",
                                queue=queue or "", until_idle=until_idle)  # fmt: skip
        row = BatchQueue(s).submit(request)
    console.print(f"batch job {row.id} submitted to {row.scheduler} as {row.scheduler_id}: "
                  f"{row.nodes} node(s), {row.wall_time_min} min, {row.job_mode} mode")  # fmt: skip


def _on_this_host(nodes: int, project: str | None, queue: str | None) -> int:
    """The local scheduler has one host and no accounts or queues: say so, and ask for what it has."""
    notes = []
    if nodes > 1:
        notes.append(f"it runs on this host alone, so 1 node instead of {nodes}")
        nodes = 1
    if project or queue:
        given = " and ".join(f"{flag} {value}" for flag, value in (("-A", project), ("-q", queue)) if value)
        notes.append(f"it has no projects or queues, so {given} only pass the site's checks")
    if notes:
        err_console.print(f"the site's scheduler is local: {'; '.join(notes)} "
                          "(another scheduler: `balsam site set --scheduler slurm|pbs|cobalt|lsf`)")  # fmt: skip
    return nodes


@app.command("ls")
def ls(
    show_all: bool = typer.Option(False, "--all", help="Also list finished and failed batch jobs."),
    refresh: bool = typer.Option(True, "--refresh/--no-refresh", help="Ask the scheduler for fresh states first."),
    site: Path | None = SiteOption,
    as_json: bool = JsonOption,
) -> None:
    """The site's batch jobs with their scheduler state."""
    from balsam.site.batch import BatchQueue

    with Site.open(site) as s:
        batch = BatchQueue(s)
        if refresh:
            batch.sync()
        rows = batch.list(all_states=show_all)
    records = [
        {"id": r.id, "scheduler": r.scheduler, "scheduler_id": r.scheduler_id, "state": r.state,
         "native_state": r.status_info.get("native_state", ""), "nodes": r.nodes, "minutes": r.wall_time_min,
         "job_mode": r.job_mode, "project": r.project, "queue": r.queue, "origin": r.origin, "message": r.message,
         "submitted_at": r.submitted_at, "started_at": r.started_at, "ended_at": r.ended_at}
        for r in rows
    ]  # fmt: skip
    if as_json:
        print_json(records)
        return
    if not records:
        console.print("no batch jobs" + ("" if show_all else " queued or running (--all shows finished ones)"))
        return
    print_table(
        ["ID", "SCHEDULER ID", "STATE", "NODES", "MIN", "MODE", "PROJECT", "QUEUE", "BY", "SUBMITTED", "MESSAGE"],
        [(r["id"], r["scheduler_id"] or "-", _state(r), r["nodes"], r["minutes"], r["job_mode"], r["project"] or "-",
          r["queue"] or "-", r["origin"], local_time(r["submitted_at"])[:19] if r["submitted_at"] else "-", r["message"])
         for r in records],
    )  # fmt: skip


def _state(record: dict) -> str:
    native = record["native_state"]
    return f"{record['state']} ({native})" if native and native.lower() != record["state"] else record["state"]


@app.command("rm")
def rm(batch_id: int = typer.Argument(..., help="The batch job's id (from `balsam queue ls`)."), site: Path | None = SiteOption) -> None:
    """Cancel a queued or running batch job."""
    from balsam.site.batch import BatchQueue

    with Site.open(site) as s:
        row = BatchQueue(s).cancel(batch_id)
    console.print(f"batch job {row.id} ({row.scheduler} {row.scheduler_id or '-'}): {row.message or row.state}")


def qsub(
    command: list[str] = typer.Argument(..., help="The command and its arguments, or a batch script (after --)."),
    nodes: int | None = typer.Option(None, "-n", "--nodes", help="Nodes [default: the script's directive, else 1]."),
    minutes: int | None = typer.Option(None, "-t", "--time", help="Wall time in minutes [default: the script's directive]."),
    project: str | None = typer.Option(None, "-A", "--project", help="Project to charge (checked against the site's allowed ones)."),
    queue: str | None = typer.Option(None, "-q", "--queue", help="Queue (checked against the site's allowed ones)."),
    name: str = typer.Option("", "--name", help="A name for the job [default: the command's name]."),
    workflow: str = typer.Option("qsub", "--workflow", "-w", help="The workflow the job joins."),
    site: Path | None = SiteOption,
) -> None:
    """Like qsub, but into the site: the request becomes a job that the site packs into its batch jobs."""
    from balsam.site.qsub import submit

    from balsam.site.agent import agent_pid

    with Site.open(site) as s:
        job = submit(s, command, nodes=nodes, minutes=minutes, project=project, queue=queue, name=name, workflow=workflow)
        settings = s.settings
    # Like qsub: the id alone on stdout, for scripts that capture it.
    print(job.id)
    # The job waits for a launcher; say so when nothing will start one by itself.
    if not settings.elastic_queue.enabled:
        err_console.print(f"job {job.id} waits for a launcher, and the site's elastic queue is off: turn it on "
                          "(`balsam site set --elastic-queue`, then `balsam site start`) or submit one (`balsam submit-launch`)")  # fmt: skip
    elif not agent_pid(settings):
        err_console.print(f"job {job.id} waits for the elastic queue, and no agent runs it: `balsam site start`")

