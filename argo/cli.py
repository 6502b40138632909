"""The ``argo`` command: run the coordinator, submit and follow workflows, see the sites."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from balsam import __version__, terminal
from balsam.errors import BalsamError
from balsam.inputs import check_argv

# What the coordinator's data holds is shown, never obeyed: controls escaped, no markup (balsam.terminal).
console = terminal.LazyConsole()
err_console = terminal.LazyConsole(stderr=True)

# rich_markup_mode=None: plain help and usage errors, as `balsam`'s (balsam.site.cli.main says why).
cli = typer.Typer(help="Argo: the coordinator of workflows across Balsam sites.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)  # fmt: skip
server_cli = typer.Typer(help="Run the coordinator: start, stop, status.", no_args_is_help=True)
cli.add_typer(server_cli, name="server")

AddressOption = typer.Option(None, "--address", help="The coordinator, HOST:PORT (default: $ARGO_ADDRESS, else 127.0.0.1:50551).")
DataOption = typer.Option(None, "--data", help="The server's folder: database, logs, pid file (default: $ARGO_DATA, else ~/.argo).")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")
CaOption = typer.Option(None, "--ca", help="Use TLS, trusting this CA certificate (default: $ARGO_CA, else the client config's).")
certs_cli = typer.Typer(help="A private certificate authority for TLS: init, site.", no_args_is_help=True)
user_cli = typer.Typer(help="Users of the coordinator: add, revoke.", no_args_is_help=True)
site_cli = typer.Typer(help="Sites of the coordinator: enrol, revoke.", no_args_is_help=True)
cli.add_typer(certs_cli, name="certs")
cli.add_typer(user_cli, name="user")
cli.add_typer(site_cli, name="site")


def _table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    terminal.print_table(console, columns, rows, ("MESSAGE", "APPS"), title)


def _json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _client(address: str | None, ca: Path | None = None):
    from balsam.argo.client import ArgoClient

    return ArgoClient(address, ca_file=ca)


def _admin_client(data: Path | None, address: str | None, ca: Path | None):
    """A client with the owner's powers: from the server's folder (its address, CA and owner token)
    when ``--data`` is given, else from the usual client defaults."""
    from balsam.argo.client import ArgoClient

    if data is None:
        return ArgoClient(address, ca_file=ca)
    from balsam.argo.config import ServerSettings
    from balsam.private_files import read_private

    settings = ServerSettings.load(data.expanduser())
    token = read_private(settings.owner_token_file).strip() if settings.owner_token_file.exists() else None
    return ArgoClient(address or _reachable(settings.address), ca_file=ca or settings.ca_file, token=token)


def _reachable(address: str) -> str:
    """Where a client on this machine reaches a server listening on ``address`` (a wildcard: loopback)."""
    host, _, port = address.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "", "::") else address


# -- the server ----------------------------------------------------------------------------------


@server_cli.command("start")
def server_start(
    address: str | None = typer.Option(None, "--address", help="Listen on HOST:PORT (default: the saved one, else 127.0.0.1:50551)."),
    data: Path | None = DataOption,
    db_url: str | None = typer.Option(None, "--db-url", help="Use this PostgreSQL server instead of an embedded one."),
    site_timeout: float | None = typer.Option(None, "--site-timeout", help="Seconds of silence after which a site is down (default 60)."),
    tls_dir: Path | None = typer.Option(None, "--tls-dir", help="Serve TLS with DIR/server.pem and server.key (`argo certs init`)."),
    mtls: bool | None = typer.Option(None, "--mtls/--no-mtls", help="Require client certificates signed by DIR/ca.pem."),
    insecure: bool | None = typer.Option(None, "--insecure/--no-insecure", help="Allow plain text on a non-loopback address."),
    token_ttl: float | None = typer.Option(None, "--token-ttl", help="Lifetime of site credentials in seconds (default 86400)."),
    web: str | None = typer.Option(None, "--web", help="Serve the web dashboard on HOST:PORT ('off': none; default: 127.0.0.1 at the gRPC port + 1)."),
) -> None:
    """Start the coordinator in the background (creating its database on first use).

    It writes DATA/owner-token (mode 600): the owner's token, which clients on this machine use."""
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
    if tls_dir is not None:
        settings.tls_dir = str(tls_dir.expanduser().resolve()) if str(tls_dir) else ""
    if mtls is not None:
        settings.mtls = mtls
    if insecure is not None:
        settings.insecure = insecure
    if token_ttl is not None:
        settings.auth.site_token_ttl_s = token_ttl
    if web is not None:
        settings.web = web.strip()
    settings.coordinator.check()
    settings.auth.check()
    if settings.mtls and not settings.tls_dir:
        raise BalsamError("--mtls needs --tls-dir")
    from balsam.argo.config import plaintext_refusal

    from balsam.argo.web.serve import web_address

    refusal = plaintext_refusal(settings.address, bool(settings.tls_dir), settings.insecure)
    if not refusal and web_address(settings):
        refusal = plaintext_refusal(web_address(settings), bool(settings.tls_dir), settings.insecure)
        refusal = refusal and f"the dashboard (--web): {refusal}"
    if refusal:
        raise BalsamError(refusal)
    pid = start_server(settings)
    console.print(f"Argo server started (pid {pid}) on {settings.address}{' with TLS' if settings.tls_dir else ''}; data in {folder}")
    from balsam.argo.server import WEB_URL_FILE

    url_file = folder / WEB_URL_FILE
    if url_file.exists():
        console.print(f"web dashboard: {url_file.read_text().strip()} (sign in with a token, e.g. the owner's)")
    console.print(f"the owner's token is in {settings.owner_token_file} (mode 600)")
    console.print(f"clients find it with --address {settings.address} or ARGO_ADDRESS={settings.address}")
    from balsam.argo.config import local_servers_file, remember_local_server

    # Clients on this machine find the owner token from the address, whatever folder --data named.
    remember_local_server(_reachable(settings.address), folder)
    if folder != default_data_dir().expanduser().resolve():
        console.print(f"`argo` commands on this machine use that token for {_reachable(settings.address)} "
                      f"(noted in {local_servers_file()}); `argo server stop` and others take --data {folder} or ARGO_DATA={folder}")  # fmt: skip


@server_cli.command("stop")
def server_stop(data: Path | None = DataOption) -> None:
    """Stop the coordinator and its embedded database."""
    from balsam.argo.config import default_data_dir
    from balsam.argo.server import stop_server

    from balsam.argo.config import ServerSettings
    from balsam.argo.db.engine import cluster

    folder = (data or default_data_dir()).expanduser().resolve()
    settings = ServerSettings.load(folder)
    database_up = settings.database.mode == "embedded" and cluster(settings).is_running()
    pid = stop_server(folder)
    if pid:
        console.print(f"Argo server (pid {pid}) stopped")
    else:
        console.print("no Argo server was running" + ("; its database was, and is stopped now" if database_up else ""))


@server_cli.command("status")
def server_status(data: Path | None = DataOption, as_json: bool = JsonOption) -> None:
    """Whether the coordinator runs, where, and whether it answers its health check."""
    from balsam.argo.client import ArgoClient
    from balsam.argo.config import ServerSettings, default_data_dir
    from balsam.argo.server import server_pid

    folder = (data or default_data_dir()).expanduser().resolve()
    settings = ServerSettings.load(folder)
    pid = server_pid(folder)
    from balsam.argo.server import WEB_URL_FILE

    url_file = folder / WEB_URL_FILE
    web = url_file.read_text().strip() if pid and url_file.exists() else None
    report = {"data": str(folder), "address": settings.address, "running": pid is not None, "pid": pid, "serving": False, "web": web}
    if pid:
        with ArgoClient(_reachable(settings.address), ca_file=settings.ca_file, token="") as client:
            report["serving"] = client.healthy()
    if as_json:
        _json(report)
        return
    _table(["", ""], [[k, v] for k, v in report.items()])
    if not pid:
        raise typer.Exit(3)


# -- workflows -----------------------------------------------------------------------------------


@cli.command("submit")
def submit(spec: Path = typer.Argument(..., help="The workflow spec (YAML or JSON)."), address: str | None = AddressOption, ca: Path | None = CaOption,
           project: str = typer.Option("", "--project", help="The project it belongs to (default: your only one).")) -> None:  # fmt: skip
    """Validate a workflow spec and submit it; prints the workflow id."""
    from balsam.argo.spec import load_spec

    workflow = load_spec(spec)  # shape errors here, before anything is sent
    with _client(address, ca) as client:
        workflow_id = client.submit(workflow, project=project)
    console.print(workflow_id)
    err_console.print(f"workflow {workflow.name!r} submitted: {len(workflow.tasks)} tasks; follow it with `argo watch {workflow_id}`")


@cli.command("ls")
def ls(address: str | None = AddressOption, ca: Path | None = CaOption, limit: int = typer.Option(50, "--limit"), as_json: bool = JsonOption) -> None:
    """The newest workflows with their status and task counts."""
    with _client(address, ca) as client:
        workflows = client.list(limit)
    if as_json:
        _json(workflows)
        return
    _table(["ID", "NAME", "STATUS", "TASKS", "STATES", "CREATED"],
           [[w["id"], w["name"], w["status"], w["tasks"], _counts(w["counts"]), w["created_at"]] for w in workflows])  # fmt: skip


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


@cli.command("status")
def status(workflow_id: int = typer.Argument(...), address: str | None = AddressOption, ca: Path | None = CaOption, as_json: bool = JsonOption) -> None:
    """A workflow's status and its task counts by state and site."""
    with _client(address, ca) as client:
        report = client.status(workflow_id)
    if as_json:
        _json(report)
        return
    console.print(f"workflow {report['id']} {report['name']!r}: {report['status']}, {report['tasks']} tasks")
    states = sorted(report["counts"])
    sites = sorted(report["by_site"])
    _table(["SITE", *states], [[site, *(report["by_site"][site].get(s, "") for s in states)] for site in sites])


@cli.command("tasks")
def tasks(workflow_id: int = typer.Argument(...), address: str | None = AddressOption, ca: Path | None = CaOption, as_json: bool = JsonOption) -> None:
    """Every task of a workflow: state, site, attempt, return code, and why it waits for a site."""
    with _client(address, ca) as client:
        found = client.tasks(workflow_id)
    if as_json:
        _json(found)
        return
    _table(["TASK", "APP", "STATE", "SITE", "ATTEMPT", "RC", "MESSAGE"],
           [[t["id"], t["app"], t["state"], t["site"], t["attempt"], t["return_code"],
             f"waiting: {t['waiting']}" if t["waiting"] else t["message"]] for t in found])  # fmt: skip


@cli.command("watch")
def watch(
    workflow_id: int = typer.Argument(0, help="The workflow (default: every workflow, until interrupted)."),
    site: str = typer.Option("", "--site", help="Only events at this site."),
    state: list[str] = typer.Option([], "--state", help="Only transitions into this state (repeatable)."),
    events: bool = typer.Option(False, "--events", help="Plain event lines even on a terminal (they are, when piped)."),
    address: str | None = AddressOption, ca: Path | None = CaOption,
) -> None:
    """Follow a workflow until it ends: on a terminal a live display (counts by state, rate, time
    left, the last events); piped or with --events, one line per event (history first)."""
    from balsam.argo import watching

    with _client(address, ca) as client:
        if events or not sys.stdout.isatty():
            watching.print_events(client, console, workflow_id, site, state)
        else:
            watching.show_live(client, console, workflow_id, site, state)


@cli.command("cancel")
def cancel(workflow_id: int = typer.Argument(...), address: str | None = AddressOption, ca: Path | None = CaOption) -> None:
    """Kill every task of a workflow that has not ended."""
    with _client(address, ca) as client:
        killed = client.cancel(workflow_id)
    console.print(f"workflow {workflow_id} cancelled: {killed} task(s) killed")


@cli.command("kill")
def kill(task_id: str = typer.Argument(..., help="WORKFLOW/NAME, e.g. 3/produce"), address: str | None = AddressOption, ca: Path | None = CaOption) -> None:
    """Kill one task (its site stops it; tasks depending on it will not run)."""
    with _client(address, ca) as client:
        task = client.kill(task_id)
    console.print(f"task {task['id']}: {task['state']}")


@cli.command("sites")
def sites(address: str | None = AddressOption, ca: Path | None = CaOption, as_json: bool = JsonOption) -> None:
    """Registered sites: health, apps, backlog and tasks placed there."""
    with _client(address, ca) as client:
        found = client.sites()
    if as_json:
        _json(found)
        return
    _table(["SITE", "STATUS", "LAST SEEN", "BACKLOG", "RUNNING", "ASSIGNED", "NODES", "APPS", "CHANNEL"],
           [[s["name"], s["status"], s["last_seen"], s["backlog"], s["running"], s["assigned"], s["nodes"], ", ".join(s["apps"]),
             s["channel_error"] or "ok"] for s in found])  # fmt: skip


# -- security ------------------------------------------------------------------------------------


@certs_cli.command("init")
def certs_init(
    folder: Path = typer.Option(..., "--dir", help="Where to keep the CA and the server's certificate."),
    host: list[str] = typer.Option([], "--host", help="A name or address clients use for the server (repeatable)."),
) -> None:
    """Create a private CA (unless DIR has one) and a server certificate for localhost, 127.0.0.1 and the hosts."""
    from balsam.argo.certs import init_ca

    init_ca(folder, host)
    console.print(f"CA {folder / 'ca.pem'}; server certificate {folder / 'server.pem'} for localhost, 127.0.0.1"
                  + "".join(f", {h}" for h in host))  # fmt: skip
    console.print(f"serve with `argo server start --tls-dir {folder}`; clients trust it with --ca {folder / 'ca.pem'}")


@certs_cli.command("site")
def certs_site(name: str = typer.Argument(...), folder: Path = typer.Option(..., "--dir")) -> None:
    """A client certificate for mutual TLS (a site, or a user): DIR/sites/NAME.pem and NAME.key."""
    from balsam.argo.certs import issue_client

    cert, key = issue_client(folder, name)
    console.print(f"{cert}\n{key}")


ServerDataOption = typer.Option(None, "--data", help="Act as the owner of the server in this folder (its owner-token).")


@user_cli.command("add")
def user_add(
    name: str = typer.Argument(...),
    role: str = typer.Option(..., "--role", help="owner | collaborator | viewer"),
    project: list[str] = typer.Option([], "--project", help="A project the user belongs to (repeatable)."),
    ttl_days: float = typer.Option(0, "--ttl-days", help="Days the token lasts (default: the server's, 30)."),
    data: Path | None = ServerDataOption,
    address: str | None = AddressOption,
    ca: Path | None = CaOption,
) -> None:
    """Give a user a token (printed once; the server keeps only its hash)."""
    with _admin_client(data, address, ca) as client:
        made = client.add_user(name, role, project, ttl_days * 86400)
    console.print(made["token"])
    err_console.print(f"user {name!r} ({role}); they store it with `argo login` (it is not shown again)")


@user_cli.command("revoke")
def user_revoke(name: str = typer.Argument(...), data: Path | None = ServerDataOption, address: str | None = AddressOption,
                ca: Path | None = CaOption) -> None:  # fmt: skip
    """Every token of the user stops working at once."""
    with _admin_client(data, address, ca) as client:
        console.print(f"user {name!r}: {client.revoke_user(name)} token(s) revoked")


@site_cli.command("enrol")
def site_enrol(name: str = typer.Argument(...), data: Path | None = ServerDataOption, address: str | None = AddressOption,
               ca: Path | None = CaOption) -> None:  # fmt: skip
    """A one-time enrolment token for a site: `balsam site start --argo ADDRESS --enrol-token TOKEN` there."""
    with _admin_client(data, address, ca) as client:
        made = client.enrol_site(name)
    console.print(made["token"])
    err_console.print(f"at site {name!r}: balsam site start --argo ADDRESS --enrol-token TOKEN (usable once)")


@site_cli.command("revoke")
def site_revoke(name: str = typer.Argument(...), data: Path | None = ServerDataOption, address: str | None = AddressOption,
                ca: Path | None = CaOption) -> None:  # fmt: skip
    """The site's credentials (and unused enrolment tokens) stop working at once; its sync stream ends."""
    with _admin_client(data, address, ca) as client:
        console.print(f"site {name!r}: {client.revoke_site(name)} token(s) revoked")


@site_cli.command("lost")
def site_lost(name: str = typer.Argument(...), data: Path | None = ServerDataOption, address: str | None = AddressOption,
              ca: Path | None = CaOption) -> None:  # fmt: skip
    """Say that nothing runs at a down site any more (its machine is gone): the tasks it may have been
    running are placed elsewhere once its lease has surely run out."""
    with _admin_client(data, address, ca) as client:
        held = client.mark_lost(name)
    console.print(f"site {name!r} marked lost: {held} task(s) will be placed elsewhere once its lease has run out")


@cli.command("login")
def login(
    token: str | None = typer.Option(None, "--token", help="The token (default: read from stdin)."),
    address: str | None = AddressOption,
    ca: Path | None = CaOption,
) -> None:
    """Check a token with the server and keep it (and --address, --ca) in the client config, mode 600."""
    from balsam.argo.client import ArgoClient
    from balsam.argo.config import save_client_config

    token = (token if token is not None else sys.stdin.readline()).strip()
    if not token:
        raise BalsamError("no token given (--token, or on stdin)")
    ca_path = str(ca.expanduser().resolve()) if ca else None
    with ArgoClient(address, ca_file=ca_path, token=token) as client:
        who = client.whoami()
    path = save_client_config({"token": token, "address": address, "ca": ca_path})
    console.print(f"logged in as {who['kind']} {who['name']!r} ({who['role']}); saved in {path}")


@cli.command("whoami")
def whoami(address: str | None = AddressOption, ca: Path | None = CaOption, as_json: bool = JsonOption) -> None:
    """Who the server takes you for."""
    with _client(address, ca) as client:
        who = client.whoami()
    if as_json:
        _json(who)
        return
    console.print(f"{who['kind']} {who['name']!r} ({who['role']}), projects: {', '.join(who['projects']) or 'none'}")


trigger_cli = typer.Typer(help="Filesystem triggers: a task for each new file in a folder on the coordinator's host.", no_args_is_help=True)
cli.add_typer(trigger_cli, name="trigger")


@trigger_cli.command("add")
def trigger_add(
    name: str = typer.Argument(..., help="A name for the rule (also its workflow's, unless --workflow)."),
    folder: Path = typer.Option(..., "--folder", help="The folder to watch: an absolute path on the coordinator's host."),
    app: str = typer.Option(..., "--app", "-a", help="The app each file's task runs (offered by a registered site)."),
    params: list[str] = typer.Option([], "--param", "-p", help="NAME=TEMPLATE filled from the file: {path}, {name}, {stem}, {parent} (repeatable)."),
    patterns: list[str] = typer.Option([], "--pattern", help="Only files matching this glob (repeatable; default: all)."),
    ignore: list[str] = typer.Option([], "--ignore", help="Never files matching this glob (repeatable; dotfiles, *.tmp, *.part, *~ always)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Watch the subfolders too."),
    workflow: str = typer.Option("", "--workflow", "-w", help="The name of the rule's workflow (default: the rule's name)."),
    site: str = typer.Option("", "--site", help="Pin the tasks to this site."),
    tags: list[str] = typer.Option([], "--tag", help="Tag NAME=VALUE of the tasks (repeatable)."),
    nodes: int = typer.Option(0, "--nodes", help="Nodes per task [default: 1]."),
    wall_time: float = typer.Option(0.0, "--wall-time", help="Expected run time in minutes."),
    settle: float = typer.Option(0.0, "--settle", help="Seconds a file must stay unchanged to count without a close event [default: 10]."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Files already in the folder get no task."),
    address: str | None = AddressOption,
) -> None:
    """Add a rule: each complete file matching it becomes a task, placed like any other."""
    values = {}
    for what, items, target in (("parameter", params, "params"), ("tag", tags, "tags")):
        found = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise BalsamError(f"bad {what} {item!r}: expected NAME=VALUE")
            found[key.strip()] = value
        values[target] = found
    resources = {k: v for k, v in (("nodes", nodes), ("wall_time_min", wall_time)) if v}
    with _client(address) as client:
        rule = client.add_trigger(name, folder, app, values["params"], patterns=patterns, ignore=ignore, recursive=recursive,
                                  workflow=workflow, site=site, tags=values["tags"], resources=resources, settle_s=settle,
                                  skip_existing=skip_existing)  # fmt: skip
    console.print(f"trigger rule {rule['name']!r} added: files in {rule['folder']} become tasks of workflow {rule['workflow_id']}")


@trigger_cli.command("ls")
def trigger_ls(address: str | None = AddressOption, as_json: bool = JsonOption) -> None:
    """The rules, their current workflow and the files each counted."""
    with _client(address) as client:
        found = client.triggers()
    if as_json:
        _json(found)
        return
    _table(["NAME", "FOLDER", "PATTERNS", "APP", "SITE", "WORKFLOW", "FILES"],
           [[r["name"], r["folder"] + ("/**" if r["recursive"] else ""), " ".join(r["patterns"]) or "*", r["app"], r["site"],
             f"{r['workflow']} ({r['workflow_id']})", r["files"]] for r in found])  # fmt: skip


@trigger_cli.command("rm")
def trigger_rm(name: str = typer.Argument(...), address: str | None = AddressOption) -> None:
    """Remove a rule (its tasks stay in the graph)."""
    with _client(address) as client:
        files = client.remove_trigger(name)
    console.print(f"trigger rule {name!r} removed ({files} file(s) had been counted)")


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
        check_argv(sys.argv[1:])
        cli()
    except BalsamError as exc:
        terminal.print_error(err_console, str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
