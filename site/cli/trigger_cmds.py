"""``balsam trigger add | ls | rm | pause | resume``: files appearing in a folder become jobs.

    balsam trigger add raw --folder /data/incoming --app reduce -p infile={path} -p label={stem} --pattern '*.h5'

The site agent watches the rules (``balsam site start``); see ``balsam.site.triggers``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from balsam.fswatch import DEFAULT_SETTLE_S
from balsam.site.cli.common import JsonOption, Site, SiteOption, parse_assignments
from balsam.site.cli.output import console, print_json, print_table

app = typer.Typer(help="Filesystem triggers: a job for each new file in a folder (watched by the site agent).", no_args_is_help=True)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="A name for the rule."),
    folder: Path = typer.Option(..., "--folder", help="The folder to watch (an absolute path of an existing folder)."),
    app_name: str = typer.Option(..., "--app", "-a", help="The app each file's job runs."),
    params: list[str] = typer.Option([], "--param", "-p", help="NAME=TEMPLATE, filled from the file: {path}, {name}, {stem}, {parent} (repeatable)."),
    patterns: list[str] = typer.Option([], "--pattern", help="Only files matching this glob, e.g. '*.h5' (repeatable; default: all)."),
    ignore: list[str] = typer.Option([], "--ignore", help="Never files matching this glob (repeatable; dotfiles, *.tmp, *.part, *~ always)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Watch the subfolders too."),
    workflow: str = typer.Option("default", "--workflow", "-w", help="The workflow of the jobs."),
    tags: list[str] = typer.Option([], "--tag", help="Tag NAME=VALUE of the jobs (repeatable)."),
    nodes: int | None = typer.Option(None, "--nodes", help="Nodes per job [default: 1]."),
    ranks_per_node: int | None = typer.Option(None, "--ranks-per-node", help="MPI ranks per node [default: 1]."),
    threads_per_rank: int | None = typer.Option(None, "--threads-per-rank", help="Threads per rank [default: 1]."),
    gpus_per_rank: int | None = typer.Option(None, "--gpus-per-rank", help="GPUs per rank [default: 0]."),
    node_packing: int | None = typer.Option(None, "--node-packing", help="How many such jobs may share one node [default: 1]."),
    wall_time: float | None = typer.Option(None, "--wall-time", help="Expected run time in minutes."),
    settle: float = typer.Option(DEFAULT_SETTLE_S, "--settle", help="Seconds a file must stay unchanged to count when no close event is seen."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Files already in the folder get no job."),
    site: Path | None = SiteOption,
) -> None:
    """Add a rule: each complete file matching it becomes one job."""
    from balsam.site.triggers import add_rule

    resources = {k: v for k, v in {"nodes": nodes, "ranks_per_node": ranks_per_node, "threads_per_rank": threads_per_rank,
                                   "gpus_per_rank": gpus_per_rank, "node_packing_count": node_packing, "wall_time_min": wall_time}.items()
                 if v is not None}  # fmt: skip
    with Site.open(site) as s:
        rule = add_rule(
            s, name, folder, app_name, parse_assignments(params, "parameter"), patterns=patterns, ignore=ignore,
            recursive=recursive, workflow=workflow, tags=parse_assignments(tags, "tag"), resources=resources,
            settle_s=settle, skip_existing=skip_existing,
        )  # fmt: skip
    console.print(f"trigger rule {rule.name!r} added: watching {rule.folder}{' and its subfolders' if rule.recursive else ''}")


@app.command("ls")
def ls(site: Path | None = SiteOption, as_json: bool = JsonOption) -> None:
    """The rules, with the files each counted and the jobs it made."""
    from balsam.site.triggers import rules

    with Site.open(site) as s:
        found = rules(s)
    if as_json:
        print_json(found)
        return
    print_table(
        ["NAME", "FOLDER", "PATTERNS", "APP", "WORKFLOW", "STATE", "FILES", "JOBS"],
        [(r["name"], r["folder"] + ("/**" if r["recursive"] else ""), " ".join(r["patterns"]) or "*", r["app"], r["workflow"],
          "paused" if r["paused"] else "active", r["files"], r["jobs"]) for r in found],
    )  # fmt: skip
    if not found:
        console.print("no trigger rules; add one with `balsam trigger add`")


@app.command("rm")
def rm(name: str = typer.Argument(...), site: Path | None = SiteOption) -> None:
    """Remove a rule (the jobs it made stay)."""
    from balsam.site.triggers import remove_rule

    with Site.open(site) as s:
        remove_rule(s, name)
    console.print(f"trigger rule {name!r} removed")


@app.command("pause")
def pause(name: str = typer.Argument(...), site: Path | None = SiteOption) -> None:
    """Stop watching; files that come meanwhile get their jobs on resume."""
    from balsam.site.triggers import set_paused

    with Site.open(site) as s:
        set_paused(s, name, True)
    console.print(f"trigger rule {name!r} paused")


@app.command("resume")
def resume(name: str = typer.Argument(...), site: Path | None = SiteOption) -> None:
    """Watch again, first making the jobs of the files that came while paused."""
    from balsam.site.triggers import set_paused

    with Site.open(site) as s:
        set_paused(s, name, False)
    console.print(f"trigger rule {name!r} resumed")
