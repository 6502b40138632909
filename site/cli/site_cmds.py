"""``balsam site start | stop | status``: the site's database server and its agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from balsam.errors import BalsamError
from balsam.site.api import Site
from balsam.site.cli import user_cmds
from balsam.site.cli.common import JsonOption, SiteOption
from balsam.site.cli.output import console, print_json, print_table
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings, find_site

app = typer.Typer(help="The site's services: its database server and its agent.", no_args_is_help=True)
app.add_typer(user_cmds.app, name="user")


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
            if settings.argo.address:
                console.print(f"syncing with the Argo coordinator at {settings.argo.address}")
    console.print(f"site {settings.name} is ready")


@app.command("stop")
def stop(site: Path | None = SiteOption) -> None:
    """Stop the site's agent, then its embedded database server."""
    from balsam.site.agent import stop_agent

    settings = _settings(site)
    stopped_agent = stop_agent(settings)
    if stopped_agent:
        console.print(f"agent (pid {stopped_agent}) stopped")
    if settings.database.mode != "embedded":
        console.print(f"site {settings.name} uses an external database server; nothing to stop")
        return
    stopped = EmbeddedPostgres(settings).stop()
    console.print(f"database of site {settings.name} {'stopped' if stopped else 'was not running'}")


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
    report["agent"] = agent_report(settings)
    report["jobs"] = None
    if running:
        with Site(settings) as s:
            report["jobs"] = s.count_jobs()
    if as_json:
        print_json(report)
        return
    rows = [(k, v) for k, v in report.items() if k not in ("jobs", "agent")]
    jobs = report["jobs"]
    rows.append(("jobs", "(database stopped)" if jobs is None else ", ".join(f"{n} {s}" for s, n in jobs.items()) or "none"))
    rows.append(("agent", _agent_line(report["agent"])))
    print_table(["", ""], rows)


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
