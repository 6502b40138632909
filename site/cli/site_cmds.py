"""``balsam site start | stop | status``: the site's database server and its agent."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from balsam.errors import BalsamError
from balsam.site.cli import user_cmds
from balsam.site.cli.common import JsonOption, Site, SiteOption
from balsam.site.cli.output import console, err_console, print_json, print_table
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings, find_site

app = typer.Typer(help="The site's services: its database server and its agent.", no_args_is_help=True)
app.add_typer(user_cmds.app, name="user")


# The common choices, as options of `balsam init` and `balsam site set` (no TOML editing).
SchedulerOption = typer.Option(None, "--scheduler", help="Batch scheduler: local, slurm, pbs, cobalt or lsf.")
ProjectOption = typer.Option(None, "--project", "-A", help="Project (account) batch jobs are charged to by default.")
QueueOption = typer.Option(None, "--queue", "-q", help="Queue (Slurm partition) batch jobs go to by default.")
ElasticOption = typer.Option(None, "--elastic-queue/--no-elastic-queue", help="The agent submits batch jobs sized to the backlog (default: off).")
MaxNodesOption = typer.Option(None, "--max-nodes", help="Nodes of each batch job the elastic queue submits, at most.")


def _settings(site: Path | None) -> SiteSettings:
    return SiteSettings.load(site if site else find_site())


@app.command("start")
def start(
    db_only: bool = typer.Option(False, "--db-only", help="Start the database server but not the agent."),
    argo: str | None = typer.Option(
        None, "--argo", metavar="ADDRESS",
        help="Join the Argo coordinator at HOST:PORT (kept in the settings; --argo '' leaves it).",
    ),
    argo_ca: Path | None = typer.Option(None, "--argo-ca", help="Talk TLS to Argo, trusting this CA certificate (kept)."),
    argo_cert: Path | None = typer.Option(None, "--argo-cert", help="This site's certificate, for mutual TLS (kept)."),
    argo_key: Path | None = typer.Option(None, "--argo-key", help="Its private key, mode 600 (kept)."),
    enrol_token: str | None = typer.Option(None, "--enrol-token", help="Exchange this one-time token (`argo site enrol NAME`) for the site's credential."),
    web: str | None = typer.Option(None, "--web", metavar="ADDRESS", help="Serve the site's dashboard on HOST:PORT, e.g. 127.0.0.1:8181 (kept; 'off': none)."),
    web_tls_dir: Path | None = typer.Option(None, "--web-tls-dir", help="Serve the dashboard over TLS with DIR/server.pem and server.key (kept; needed off loopback)."),
    site: Path | None = SiteOption,
) -> None:
    """Start the site's database server (an embedded one; an external one is only checked) and its agent."""
    from balsam.site.access import check_site_secrets
    from balsam.site.agent import agent_pid, start_agent

    settings = _settings(site)
    check_site_secrets(settings)  # the agent checks too; here the refusal reads as one line
    if argo is not None and argo != settings.argo.address:
        if agent_pid(settings):
            raise BalsamError("stop the agent first (`balsam site stop`) to change the Argo coordinator it syncs with")
        settings.argo.address = argo.strip()
        settings.save()
    if web is not None or web_tls_dir is not None:
        _set_web(settings, web, web_tls_dir)
    tls = {"ca_file": argo_ca, "cert_file": argo_cert, "key_file": argo_key}
    if any(v is not None for v in tls.values()):
        for name, value in tls.items():
            if value is not None:
                setattr(settings.argo, name, str(value.expanduser().resolve()) if str(value) else "")
        settings.save()
    if enrol_token:
        from balsam.site.argo_sync import enrol

        if not settings.argo.address:
            raise BalsamError("--enrol-token needs the coordinator's address (--argo ADDRESS)")
        enrol(settings, enrol_token)
        console.print(f"site {settings.name} enrolled with Argo at {settings.argo.address}; credential in {settings.argo_credential_file}")
    if settings.database.mode == "embedded":
        started = EmbeddedPostgres(settings).start()
        console.print(f"database of site {settings.name} {'started' if started else 'was already running'} "
                      f"on {settings.database.host}:{settings.database.port}")  # fmt: skip
    Site(settings).close()  # reach it and bring its schema up to date
    if not db_only:
        running = agent_pid(settings)
        if running:
            console.print(f"agent already running (pid {running})")
        else:
            pid = start_agent(settings, wait_s=30.0)
            console.print(f"agent started (pid {pid}), logging to {settings.logs_dir / 'agent.log'}")
        from balsam.site.web import web_url

        if web_url(settings):
            console.print(f"dashboard on {web_url(settings)} (sign in with the token in {settings.web_token_file})")
    problems: list[str] = []
    if settings.argo.address and not db_only:
        problems = _first_sync(settings)
        if not problems:
            console.print(f"syncing with the Argo coordinator at {settings.argo.address}")
    for line in problems:
        err_console.print(f"problem: {line}")
    console.print(f"site {settings.name} is {'up, with the problem(s) above' if problems else 'ready'}")


def _set_web(settings: SiteSettings, address: str | None, tls_dir: Path | None) -> None:
    """Keep the dashboard's address and TLS folder in the settings (checked: no plain text off loopback)."""
    from balsam.site.agent import agent_pid

    wanted = dataclasses.replace(settings.web)
    if address is not None:
        wanted.address = "" if address.strip() in ("", "off") else address.strip()
    if tls_dir is not None:
        wanted.tls_dir = str(tls_dir.expanduser().resolve()) if str(tls_dir) else ""
    if wanted == settings.web:
        return
    wanted.check()
    if agent_pid(settings):
        raise BalsamError("stop the agent first (`balsam site stop`): it serves the dashboard, and keeps its address until restarted")
    settings.web = wanted
    settings.save()


def _first_sync(settings: SiteSettings, wait_s: float = 15.0) -> list[str]:
    """Wait for the running agent's first word on its Argo link (its first round waits up to 10 s
    for the first sync): connected, or why not, in plain words."""
    import json
    import time

    from balsam.site.agent import STATUS_FILE, agent_report

    from balsam.site import diagnosis

    deadline = time.monotonic() + wait_s
    while True:
        report = agent_report(settings)
        try:  # the report of this agent, not one left by an earlier run
            fresh = json.loads((settings.logs_dir / STATUS_FILE).read_text()).get("pid") == report["pid"]
        except (FileNotFoundError, json.JSONDecodeError):
            fresh = False
        link = (report.get("argo") or {}) if fresh else {}
        if link.get("connected") or link.get("last_error") or time.monotonic() > deadline or not report["running"]:
            if not link and report["running"]:
                report["argo"] = {"connected": False, "last_error": f"no sync within {wait_s:g} s; see {settings.logs_dir / 'agent.log'}"}
            return diagnosis.argo_findings(settings, report)
        time.sleep(0.2)


@app.command("set")
def set_choices(
    scheduler: str | None = SchedulerOption,
    project: str | None = ProjectOption,
    queue: str | None = QueueOption,
    elastic_queue: bool | None = ElasticOption,
    max_nodes: int | None = MaxNodesOption,
    max_queued: int | None = typer.Option(None, "--max-queued", help="Batch jobs the elastic queue keeps waiting in the scheduler at once."),
    max_wall: int | None = typer.Option(None, "--max-wall-time", help="Minutes of each batch job the elastic queue submits, at most."),
    job_mode: str | None = typer.Option(None, "--job-mode", help="The elastic queue's launchers: mpi or serial."),
    idle_stop: float | None = typer.Option(None, "--db-idle-stop", help="Minutes unused after which the embedded database stops itself (0: never)."),
    site: Path | None = SiteOption,
) -> None:
    """Change the site's common settings (written to balsam-site.toml for you); with no option, show them."""
    from balsam.site.agent import agent_pid
    from balsam.site.settings import apply_choices

    settings = _settings(site)
    changed = apply_choices(
        settings, scheduler=scheduler, project=project, queue=queue, elastic_queue=elastic_queue, max_nodes=max_nodes,
        max_queued=max_queued, max_wall_min=max_wall, job_mode=job_mode, idle_stop_min=idle_stop,
    )  # fmt: skip
    if not changed:
        eq = settings.elastic_queue
        console.print(f"scheduler {settings.scheduler.name} (project {settings.scheduler.project or '-'}, queue "
                      f"{settings.scheduler.queue or '-'}); elastic queue {'on' if eq.enabled else 'off'} ({eq.job_mode} mode, "
                      f"up to {eq.max_nodes} node(s) x {eq.max_wall_min} min, {eq.max_queued} queued); database stops when idle "
                      f"for {settings.database.idle_stop_min:g} min")  # fmt: skip
        return
    settings.save()
    for line in changed:
        console.print(f"set {line} in {settings.settings_file}")
    if agent_pid(settings):
        console.print("the running agent keeps its settings until restarted: `balsam site stop && balsam site start`")


@app.command("stop")
def stop(
    force: bool = typer.Option(False, "--force", help="Cancel the site's queued and running batch jobs (their launchers) first."),
    site: Path | None = SiteOption,
) -> None:
    """Stop the site's agent, then its embedded database server (refused while batch jobs need it, unless --force)."""
    from balsam.site.stopping import stop_site

    stop_site(_settings(site), force, say=console.print, warn=err_console.print)


@app.command("status")
def status(site: Path | None = SiteOption, as_json: bool = JsonOption) -> None:
    """Where the site is, whether its database and agent are up, its jobs per state and its batch jobs."""
    from balsam.site.agent import agent_report

    settings = _settings(site)
    db = settings.database
    report: dict[str, Any] = {"name": settings.name, "path": str(settings.path), "database": db.mode}
    if db.mode == "embedded":
        running = EmbeddedPostgres(settings).is_running()
        report.update(address=f"{db.host}:{db.port}", running=running)
    else:
        running = True
    report["scheduler"] = settings.scheduler.name
    report["elastic_queue"] = "on" if settings.elastic_queue.enabled else "off"
    report["argo"] = settings.argo.address or "none"
    from balsam.site.web import web_url

    report["agent"] = agent_report(settings)
    # where the running agent serves the dashboard (a URL left by an agent that was killed is not shown)
    served = web_url(settings) if report["agent"]["running"] else ""
    report["web"] = served or ("off" if not settings.web.address else f"{settings.web.address} (when the agent runs)")
    from balsam.site import diagnosis

    report["jobs"] = None
    problems = diagnosis.argo_findings(settings, report["agent"])
    if running:
        with Site(settings) as s:
            report["jobs"] = s.count_jobs()
            problems += diagnosis.job_findings(s, report["agent"])
    report["problems"] = problems
    if as_json:
        print_json(report)
        return
    rows = [(k, v) for k, v in report.items() if k not in ("jobs", "agent", "problems")]
    jobs = report["jobs"]
    rows.append(("jobs", "(database stopped)" if jobs is None else ", ".join(f"{n} {s}" for s, n in jobs.items()) or "none"))
    rows.append(("agent", _agent_line(report["agent"])))
    rows += [("problem", line) for line in problems]
    print_table(["", ""], rows)
    if not problems:
        console.print("no problems found")


def _agent_line(agent: dict[str, Any]) -> str:
    if not agent["running"]:
        return "not running (start it with `balsam site start`)"
    parts = [f"running, pid {agent['pid']}", f"last round {agent.get('last_tick', 'not yet')}"]
    batch = agent.get("batch_jobs") or {}
    if batch:
        parts.append("batch jobs: " + ", ".join(f"{n} {state}" for state, n in sorted(batch.items())))
    elastic = agent.get("elastic_queue")
    if isinstance(elastic, dict):
        parts.append(f"backlog {elastic['backlog_jobs']} job(s), {elastic['backlog_node_minutes']} node-min")
    for step, error in (agent.get("errors") or {}).items():
        parts.append(f"{step} failing: {error}")
    return "; ".join(parts)
