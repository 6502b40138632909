"""The ``argo`` command: run the coordinator, submit and follow workflows, see the sites."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from balsam import __version__
from balsam.errors import BalsamError

console = Console(highlight=False, width=None if sys.stdout.isatty() else 250)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 250)

cli = typer.Typer(help="Argo: the coordinator of workflows across Balsam sites.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)  # fmt: skip
server_cli = typer.Typer(help="Run the coordinator: start, stop, status.", no_args_is_help=True)
cli.add_typer(server_cli, name="server")

AddressOption = typer.Option(None, "--address", help="The coordinator, HOST:PORT (default: $ARGO_ADDRESS, else 127.0.0.1:50551).")
DataOption = typer.Option(None, "--data", help="The server's folder: database, logs, pid file (default: $ARGO_DATA, else ~/.argo).")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column not in ("MESSAGE", "APPS"))
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def _json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _client(address: str | None):
    from balsam.argo.client import ArgoClient

    return ArgoClient(address)


# -- the server ----------------------------------------------------------------------------------


@server_cli.command("start")
def server_start(
    address: str | None = typer.Option(None, "--address", help="Listen on HOST:PORT (default: the saved one, else 127.0.0.1:50551)."),
    data: Path | None = DataOption,
    db_url: str | None = typer.Option(None, "--db-url", help="Use this PostgreSQL server instead of an embedded one."),
    site_timeout: float | None = typer.Option(None, "--site-timeout", help="Seconds of silence after which a site is down (default 60)."),
) -> None:
    """Start the coordinator in the background (creating its database on first use)."""
    from balsam.argo.config import ServerSettings, default_data_dir
    from balsam.argo.server import server_pid, start_server
    from balsam.postgres import DatabaseSettings

    folder = (data or default_data_dir()).expanduser().resolve()
    running = server_pid(folder)
    if running:
        raise BalsamError(f"an Argo server already runs with data {folder} (pid {running}); `argo server stop` first")
    try:
        settings = ServerSettings.load(folder)
    except BalsamError:
        if (folder / "argo.toml").exists():
            raise
        settings = ServerSettings(data=folder)
    if address:
        settings.address = address
    if db_url:
        settings.database = DatabaseSettings(mode="external", url=db_url)
    if site_timeout is not None:
        settings.coordinator.site_timeout_s = site_timeout
    settings.coordinator.check()
    pid = start_server(settings)
    console.print(f"Argo server started (pid {pid}) on {settings.address}; data in {folder}")
    console.print(f"clients find it with --address {settings.address} or ARGO_ADDRESS={settings.address}")


@server_cli.command("stop")
def server_stop(data: Path | None = DataOption) -> None:
    """Stop the coordinator and its embedded database."""
    from balsam.argo.config import default_data_dir
    from balsam.argo.server import stop_server

    folder = (data or default_data_dir()).expanduser().resolve()
    pid = stop_server(folder)
    console.print(f"Argo server (pid {pid}) stopped" if pid else "no Argo server was running")


@server_cli.command("status")
def server_status(data: Path | None = DataOption, as_json: bool = JsonOption) -> None:
    """Whether the coordinator runs, where, and whether it answers its health check."""
    from balsam.argo.client import ArgoClient
    from balsam.argo.config import ServerSettings, default_data_dir
    from balsam.argo.server import server_pid

    folder = (data or default_data_dir()).expanduser().resolve()
    settings = ServerSettings.load(folder)
    pid = server_pid(folder)
    report = {"data": str(folder), "address": settings.address, "running": pid is not None, "pid": pid, "serving": False}
    if pid:
        with ArgoClient(settings.address) as client:
            report["serving"] = client.healthy()
    if as_json:
        _json(report)
        return
    _table(["", ""], [[k, v] for k, v in report.items()])
    if not pid:
        raise typer.Exit(3)


# -- workflows -----------------------------------------------------------------------------------


@cli.command("submit")
def submit(spec: Path = typer.Argument(..., help="The workflow spec (YAML or JSON)."), address: str | None = AddressOption) -> None:
    """Validate a workflow spec and submit it; prints the workflow id."""
    from balsam.argo.spec import load_spec

    workflow = load_spec(spec)  # shape errors here, before anything is sent
    with _client(address) as client:
        workflow_id = client.submit(workflow)
    console.print(workflow_id)
    err_console.print(f"workflow {workflow.name!r} submitted: {len(workflow.tasks)} tasks; follow it with `argo watch {workflow_id}`")


@cli.command("ls")
def ls(address: str | None = AddressOption, limit: int = typer.Option(50, "--limit"), as_json: bool = JsonOption) -> None:
    """The newest workflows with their status and task counts."""
    with _client(address) as client:
        workflows = client.list(limit)
    if as_json:
        _json(workflows)
        return
    _table(["ID", "NAME", "STATUS", "TASKS", "STATES", "CREATED"],
           [[w["id"], w["name"], w["status"], w["tasks"], _counts(w["counts"]), w["created_at"]] for w in workflows])  # fmt: skip


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


@cli.command("status")
def status(workflow_id: int = typer.Argument(...), address: str | None = AddressOption, as_json: bool = JsonOption) -> None:
    """A workflow's status and its task counts by state and site."""
    with _client(address) as client:
        report = client.status(workflow_id)
    if as_json:
        _json(report)
        return
    console.print(f"workflow {report['id']} {report['name']!r}: {report['status']}, {report['tasks']} tasks")
    states = sorted(report["counts"])
    sites = sorted(report["by_site"])
    _table(["SITE", *states], [[site, *(report["by_site"][site].get(s, "") for s in states)] for site in sites])


@cli.command("tasks")
def tasks(workflow_id: int = typer.Argument(...), address: str | None = AddressOption, as_json: bool = JsonOption) -> None:
    """Every task of a workflow: state, site, attempt, return code."""
    with _client(address) as client:
        found = client.tasks(workflow_id)
    if as_json:
        _json(found)
        return
    _table(["TASK", "APP", "STATE", "SITE", "ATTEMPT", "RC", "MESSAGE"],
           [[t["id"], t["app"], t["state"], t["site"], t["attempt"], t["return_code"], t["message"]] for t in found])  # fmt: skip


@cli.command("watch")
def watch(
    workflow_id: int = typer.Argument(0, help="The workflow (default: every workflow, until interrupted)."),
    site: str = typer.Option("", "--site", help="Only events at this site."),
    state: list[str] = typer.Option([], "--state", help="Only transitions into this state (repeatable)."),
    address: str | None = AddressOption,
) -> None:
    """Print events as they happen (history first), until the workflow ends."""
    from balsam.argo.wire import state_name

    with _client(address) as client:
        for event in client.watch(workflow_id, site=site, states=state, until_done=bool(workflow_id)):
            when = event.at.ToDatetime().strftime("%H:%M:%S")
            if event.workflow_status:
                console.print(f"{when}  workflow {event.workflow_id} {event.workflow_status}: {event.message}")
                continue
            before = state_name(event.from_state) if event.from_state else "-"
            where = f" @{event.site}" if event.site else ""
            console.print(f"{when}  {event.task_id}{where}  {before} -> {state_name(event.to_state)}  {event.message}")


@cli.command("cancel")
def cancel(workflow_id: int = typer.Argument(...), address: str | None = AddressOption) -> None:
    """Kill every task of a workflow that has not ended."""
    with _client(address) as client:
        killed = client.cancel(workflow_id)
    console.print(f"workflow {workflow_id} cancelled: {killed} task(s) killed")


@cli.command("kill")
def kill(task_id: str = typer.Argument(..., help="WORKFLOW/NAME, e.g. 3/produce"), address: str | None = AddressOption) -> None:
    """Kill one task (its site stops it; tasks depending on it will not run)."""
    with _client(address) as client:
        task = client.kill(task_id)
    console.print(f"task {task['id']}: {task['state']}")


@cli.command("sites")
def sites(address: str | None = AddressOption, as_json: bool = JsonOption) -> None:
    """Registered sites: health, apps, backlog and tasks placed there."""
    with _client(address) as client:
        found = client.sites()
    if as_json:
        _json(found)
        return
    _table(["SITE", "STATUS", "LAST SEEN", "BACKLOG", "RUNNING", "ASSIGNED", "NODES", "APPS"],
           [[s["name"], s["status"], s["last_seen"], s["backlog"], s["running"], s["assigned"], s["nodes"], ", ".join(s["apps"])]
            for s in found])  # fmt: skip


@cli.command("demo")
def demo(path: Path | None = typer.Option(None, "--path", help="Where to make the demo's folders (default: a new temporary folder).")) -> None:
    """A coordinator and two sites on this machine, running a workflow that spans both."""
    from balsam.argo.demo import run_demo

    run_demo(path)


@cli.callback(invoke_without_command=True)
def _version(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        print(__version__)
        raise typer.Exit()


def main() -> None:
    try:
        cli()
    except BalsamError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
