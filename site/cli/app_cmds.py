"""``balsam app add | ls | rm``."""

from __future__ import annotations

from pathlib import Path

import typer

from balsam.site.api import Site
from balsam.site.cli.common import JsonOption, SiteOption
from balsam.site.cli.output import app_record, compact, console, print_json, print_table
from balsam.site.specs import parse_assignments

app = typer.Typer(help="Apps: the programs a site runs, as command templates.", no_args_is_help=True)


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Name jobs use to refer to the app."),
    command: str = typer.Option(..., "--command", "-c", help="Command template, e.g. 'prog --x {x} {infile}'."),
    env: list[str] = typer.Option([], "--env", help="Environment variable K=V for its runs (repeatable)."),
    preprocess: str | None = typer.Option(None, "--preprocess", help="Command run in the job folder before the app."),
    postprocess: str | None = typer.Option(None, "--postprocess", help="Command run in the job folder after the app."),
    on_error: str = typer.Option("fail", "--on-error", help="On a non-zero exit: retry | rescue | fail."),
    max_retries: int = typer.Option(3, "--max-retries", help="Retries before a job fails."),
    on_timeout: str = typer.Option("fail", "--on-timeout", help="When a run is timed out: retry | fail."),
    image: str | None = typer.Option(None, "--image", help="Container image to run the app in."),
    description: str = typer.Option("", "--description", help="Free text shown by `app ls`."),
    launch: str = typer.Option("mpi", "--launch", help="mpi: the launcher starts the ranks; script: the command runs once and starts its own."),
    site: Path | None = SiteOption,
) -> None:
    """Register an app: a command template whose {placeholders} each job fills in."""
    with Site.open(site) as s:
        created = s.add_app(
            name, command, env=parse_assignments(env, "--env"), preprocess=preprocess, postprocess=postprocess,
            on_error=on_error, max_retries=max_retries, on_timeout=on_timeout, image=image, description=description,
            launch=launch,
        )  # fmt: skip
    params = ", ".join(created.parameters) or "none"
    console.print(f"added app [bold]{created.name}[/] (parameters: {params})")


@app.command("ls")
def ls(site: Path | None = SiteOption, as_json: bool = JsonOption) -> None:
    """List the site's apps."""
    with Site.open(site) as s:
        apps = s.apps()
    if as_json:
        print_json([app_record(a) for a in apps])
        return
    print_table(
        ["NAME", "COMMAND", "PARAMETERS", "ON ERROR", "ON TIMEOUT", "ENV", "DESCRIPTION"],
        [(a.name, a.command_template, ", ".join(a.parameters), f"{a.on_error} (max {a.max_retries})",
          a.on_timeout, compact(a.environment), a.description) for a in apps],
    )  # fmt: skip
    if not apps:
        console.print("no apps yet: add one with `balsam app add NAME --command '...'`")


@app.command("rm")
def rm(name: str = typer.Argument(...), site: Path | None = SiteOption) -> None:
    """Remove an app that no job uses."""
    with Site.open(site) as s:
        s.remove_app(name)
    console.print(f"removed app {name}")
