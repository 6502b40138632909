"""``balsam job add | ls | show | history | modify | kill | reset | rm``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from balsam.errors import BalsamError
from balsam.site.cli.common import JsonOption, Site, SiteOption, parse_assignments
from balsam.site.cli.output import (
    compact, console, err_console, event_record, job_record, local_time, print_json, print_table,
)  # fmt: skip

app = typer.Typer(help="Jobs: runs of apps, with parameters, resources and dependencies.", no_args_is_help=True)

ParamOption = typer.Option([], "--param", "-p", help="Value of a template placeholder, NAME=VALUE (repeatable).")
TagOption = typer.Option([], "--tag", help="Tag NAME=VALUE (repeatable).")


def _given(**options: Any) -> dict[str, Any]:
    """The options the user actually gave (typer leaves the others None)."""
    return {key: value for key, value in options.items() if value is not None}


@app.command("add")
def add(
    app_name: str | None = typer.Option(None, "--app", "-a", help="The app to run."),
    name: str | None = typer.Option(None, "--name", "-n", help="A name for the job."),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="The workflow it belongs to [default: default]."),
    params: list[str] = ParamOption,
    parents: list[int] = typer.Option([], "--parent", help="Id of a job that must finish first (repeatable)."),
    nodes: str | None = typer.Option(
        None, "--nodes", help="Nodes per run, or 'auto': the fastest count at the site's minimum parallel efficiency (perf model) [default: 1]."
    ),
    ranks_per_node: int | None = typer.Option(None, "--ranks-per-node", help="MPI ranks per node [default: 1]."),
    threads_per_rank: int | None = typer.Option(None, "--threads-per-rank", help="Threads per rank [default: 1]."),
    gpus_per_rank: int | None = typer.Option(None, "--gpus-per-rank", help="GPUs per rank [default: 0]."),
    node_packing: int | None = typer.Option(None, "--node-packing", help="How many such jobs may share one node [default: 1]."),
    wall_time: str | None = typer.Option(
        None, "--wall-time", help="Expected run time in minutes, or 'auto': the app's perf model's upper estimate with a margin."
    ),
    tags: list[str] = TagOption,
    from_file: Path | None = typer.Option(None, "--from", help="Add many jobs from a YAML, JSON or JSON-lines file."),
    site: Path | None = SiteOption,
) -> None:
    """Add one job (printing its id), or many from a file (all or nothing, printing their ids)."""
    from balsam.site import perf_data

    nodes = perf_data.parse_auto(nodes, "--nodes", int)
    wall_time = perf_data.parse_auto(wall_time, "--wall-time", float)
    # Options left out stay out, so JobSpec's defaults are the only ones.
    fields = _given(
        name=name, workflow=workflow, nodes=nodes, ranks_per_node=ranks_per_node, threads_per_rank=threads_per_rank,
        gpus_per_rank=gpus_per_rank, node_packing_count=node_packing, wall_time_min=wall_time,
        params=params or None, parents=parents or None, tags=tags or None,
    )  # fmt: skip
    if from_file is not None:
        given = (["app"] if app_name else []) + list(fields)
        if given:
            flag = {"params": "param", "parents": "parent", "tags": "tag"}.get(given[0], given[0]).replace("_", "-")
            raise BalsamError(f"--from FILE takes every job field from the file; drop --{flag}")
        from balsam.gcpause import paused_gc
        from balsam.site.cli.progress import add_progress
        from balsam.site.specs import read_job_file

        with add_progress(err_console, from_file) as progress:  # on stderr, on a terminal only
            with paused_gc():  # a file of many jobs: see balsam.gcpause
                items = read_job_file(from_file)
            with Site.open(site) as s:  # each job is checked as it is stored, and names its line
                ids = s.add_jobs([raw for raw, _ in items], sources=[source for _, source in items], progress=progress.stored)
        print("\n".join(map(str, ids)))  # one id per line, as `job add` prints its one id
        err_console.print(f"added {len(ids)} job{'s' if len(ids) != 1 else ''} in {progress.elapsed_s():.1f} s")
        return
    if not app_name:
        raise BalsamError("which app? give --app NAME (or --from FILE for many jobs)")
    fields["params"] = parse_assignments(params, "--param")
    fields["tags"] = parse_assignments(tags, "--tag")
    fields["parents"] = list(parents)
    with Site.open(site) as s:
        if "auto" in (nodes, wall_time):
            resolved = perf_data.resolve_auto(s, app_name, fields["params"], nodes, wall_time)
            for note in resolved.notes:
                err_console.print(note)
            fields.pop("nodes", None)
            fields.pop("wall_time_min", None)
            fields.update(_given(nodes=resolved.nodes, wall_time_min=resolved.wall_time_min))
        job = s.add_job(app_name, **fields)
    print(job.id)


@app.command("ls")
def ls(
    state: str | None = typer.Option(None, "--state", "-s", help="Only jobs in this state."),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="Only jobs of this workflow."),
    tags: list[str] = TagOption,
    limit: int = typer.Option(100, "--limit", help="Show at most this many jobs (0: all)."),
    site: Path | None = SiteOption,
    as_json: bool = JsonOption,
) -> None:
    """List jobs, oldest first, with a count per state."""
    if limit < 0:
        raise BalsamError("--limit must be >= 0")
    tag_filter = parse_assignments(tags, "--tag")
    from balsam.site.settings import SiteSettings, find_site

    settings = SiteSettings.load(site if site else find_site())
    # The table comes through plain psycopg2 when it can (balsam.site.db.listing): no SQLAlchemy to import.
    quick = None
    if not as_json:
        from balsam.site.db.listing import listing

        quick = listing(settings, state, workflow, tag_filter, limit or None)
    if quick is not None:
        counts, rows = quick
    else:
        with Site(settings) as s:
            counts = s.count_jobs(state=state, workflow=workflow, tags=tag_filter)
            jobs = s.jobs(state=state, workflow=workflow, tags=tag_filter, limit=limit or None)
            rows = [job_record(j) for j in jobs]
            if as_json:
                times = s.run_times(r["id"] for r in rows)
                for r in rows:
                    r["started_at"], r["ended_at"] = times.get(r["id"], (None, None))
    total = sum(counts.values())
    if as_json:
        # "limit" in the document, and a word on stderr: a script reading "jobs" sees it is a page, not all.
        print_json({"total": total, "counts": _ordered(counts), "limit": limit, "jobs": rows})
        if total > len(rows):
            err_console.print(f"showing {len(rows)} of {total} jobs (--limit 0 shows all)")
        return
    print_table(
        ["ID", "NAME", "WORKFLOW", "APP", "STATE", "NODES", "PARAMS", "TAGS"],
        [(r["id"], r["name"], r["workflow"], r["app"], r["state"], r["nodes"], compact(r["params"]),
          compact(r["tags"])) for r in rows],
    )  # fmt: skip
    if total > len(rows):
        console.print(f"showing {len(rows)} of {total} jobs (--limit 0 shows all)")
    summary = ", ".join(f"{n} {st}" for st, n in _ordered(counts).items())
    console.print(f"{total} job{'s' if total != 1 else ''}" + (f": {summary}" if summary else ""))


def _ordered(counts: dict[str, int]) -> dict[str, int]:
    """Counts in the state machine's order, for a stable read."""
    from balsam.states import JobState

    return {st.value: counts[st.value] for st in JobState if st.value in counts}


@app.command("show")
def show(job_id: int = typer.Argument(...), site: Path | None = SiteOption, as_json: bool = JsonOption) -> None:
    """Everything about one job, with its parents and children."""
    from balsam.site.workdir import workdir

    with Site.open(site) as s:
        record: dict[str, Any] = job_record(s.job(job_id))
        record["parents"] = s.parents(job_id)
        record["children"] = s.children(job_id)
        # Where it runs and writes job.out / job.err (`balsam job log ID` shows them).
        record["workdir"] = str(workdir(s.settings.data_dir, record["workflow"], job_id))
    if as_json:
        print_json(record)
        return
    print_table(["FIELD", "VALUE"], [(k, _show_value(v)) for k, v in record.items()])


def _show_value(value: Any) -> str:
    if isinstance(value, dict):
        return compact(value)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if hasattr(value, "astimezone"):
        return local_time(value)
    return "" if value is None else str(value)


@app.command("log")
def log(
    job_id: int = typer.Argument(...),
    stderr: bool = typer.Option(False, "--err", help="Show its standard error (job.err) instead of its output."),
    lines: int = typer.Option(0, "--tail", "-n", help="Only the last N lines (0: all)."),
    site: Path | None = SiteOption,
) -> None:
    """What the job's program printed: job.out (or job.err) in its working folder."""
    from balsam.site.workdir import workdir

    if lines < 0:
        raise BalsamError("--tail must be >= 0")
    with Site.open(site) as s:
        job = s.job(job_id)
        folder = workdir(s.settings.data_dir, job.workflow, job_id)
    file = folder / ("job.err" if stderr else "job.out")
    if not file.exists():
        raise BalsamError(f"job {job_id} ({job.state}) has no {file.name} yet in {folder}: it has not started")
    with open(file, "rb") as handle:
        data = handle.read()
    text = data.decode(errors="replace")
    if lines:
        text = "".join(text.splitlines(keepends=True)[-lines:])
    if sys.stdout.isatty():
        # A terminal shows the output, never obeys it: its control sequences are escaped (balsam.terminal).
        from balsam.terminal import shown

        sys.stdout.write(shown(text, keep_newlines=True) + ("" if not text or text.endswith("\n") else "\n"))
    else:
        sys.stdout.write(text)  # a pipe or a file gets the program's output whole


@app.command("history")
def history(job_id: int = typer.Argument(...), site: Path | None = SiteOption, as_json: bool = JsonOption) -> None:
    """The job's event log: every state change, when, and why."""
    with Site.open(site) as s:
        events = s.history(job_id)
    if as_json:
        print_json([event_record(e) for e in events])
        return
    print_table(["TIME", "FROM", "TO", "MESSAGE"], [(local_time(e.timestamp), e.from_state, e.to_state, e.message) for e in events])


@app.command("modify")
def modify(
    job_id: int = typer.Argument(...),
    name: str | None = typer.Option(None, "--name", "-n", help="New name."),
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="New workflow."),
    params: list[str] = typer.Option([], "--param", "-p", help="Set one parameter, NAME=VALUE (repeatable; others kept)."),
    nodes: int | None = typer.Option(None, "--nodes", help="Nodes per run."),
    ranks_per_node: int | None = typer.Option(None, "--ranks-per-node", help="MPI ranks per node."),
    threads_per_rank: int | None = typer.Option(None, "--threads-per-rank", help="Threads per rank."),
    gpus_per_rank: int | None = typer.Option(None, "--gpus-per-rank", help="GPUs per rank."),
    node_packing: int | None = typer.Option(None, "--node-packing", help="How many such jobs may share one node."),
    wall_time: float | None = typer.Option(None, "--wall-time", help="Expected run time in minutes."),
    tags: list[str] = typer.Option([], "--tag", help="Set one tag, NAME=VALUE (repeatable; others kept)."),
    site: Path | None = SiteOption,
) -> None:
    """Change a job that has not started, or has failed or been killed (not one a launcher holds)."""
    changes = _given(
        name=name, workflow=workflow, nodes=nodes, ranks_per_node=ranks_per_node, threads_per_rank=threads_per_rank,
        gpus_per_rank=gpus_per_rank, node_packing_count=node_packing, wall_time_min=wall_time,
    )  # fmt: skip
    if params:
        changes["params"] = parse_assignments(params, "--param")
    if tags:
        changes["tags"] = parse_assignments(tags, "--tag")
    if not changes:
        raise BalsamError("nothing to change: give at least one option (see --help)")
    with Site.open(site) as s:
        s.modify_job(job_id, **changes)
    console.print(f"modified job {job_id}")


@app.command("kill")
def kill(job_id: int = typer.Argument(...), site: Path | None = SiteOption) -> None:
    """Stop a job for good (USER_KILLED); `job reset` reopens it."""
    with Site.open(site) as s:
        s.kill_job(job_id)
    console.print(f"killed job {job_id}")


@app.command("reset")
def reset(job_id: int = typer.Argument(...), site: Path | None = SiteOption) -> None:
    """Reopen a FAILED or USER_KILLED job."""
    with Site.open(site) as s:
        state = s.reset_job(job_id)
    console.print(f"reset job {job_id}: now {state.value}")


@app.command("rm")
def rm(job_id: int = typer.Argument(...), site: Path | None = SiteOption) -> None:
    """Delete a job and its history (not while a launcher holds it, nor while it has children)."""
    with Site.open(site) as s:
        s.remove_job(job_id)
    console.print(f"removed job {job_id}")
