"""``balsam site start | stop | status``: the site's own database server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from balsam.site.api import Site
from balsam.site.cli.common import JsonOption, SiteOption
from balsam.site.cli.output import console, print_json, print_table
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings, find_site

app = typer.Typer(help="The site's services: its database server (and, later, its agent).", no_args_is_help=True)


def _settings(site: Path | None) -> SiteSettings:
    return SiteSettings.load(site if site else find_site())


@app.command("start")
def start(site: Path | None = SiteOption) -> None:
    """Start the site's database server (an embedded one; an external server is only checked)."""
    settings = _settings(site)
    if settings.database.mode == "embedded":
        started = EmbeddedPostgres(settings).start()
        console.print(f"database of site {settings.name} {'started' if started else 'was already running'} "
                      f"on {settings.database.host}:{settings.database.port}")  # fmt: skip
    Site(settings).close()  # reach it and bring its schema up to date
    console.print(f"site {settings.name} is ready")


@app.command("stop")
def stop(site: Path | None = SiteOption) -> None:
    """Stop the site's embedded database server."""
    settings = _settings(site)
    if settings.database.mode != "embedded":
        console.print(f"site {settings.name} uses an external database server; nothing to stop")
        return
    stopped = EmbeddedPostgres(settings).stop()
    console.print(f"database of site {settings.name} {'stopped' if stopped else 'was not running'}")


@app.command("status")
def status(site: Path | None = SiteOption, as_json: bool = JsonOption) -> None:
    """Where the site is, whether its database is up, and how many jobs it holds per state."""
    settings = _settings(site)
    db = settings.database
    report: dict[str, Any] = {"name": settings.name, "path": str(settings.path), "database": db.mode}
    if db.mode == "embedded":
        running = EmbeddedPostgres(settings).is_running()
        report.update(address=f"{db.host}:{db.port}", running=running)
    else:
        running = True
    report["jobs"] = None
    if running:
        with Site(settings) as s:
            report["jobs"] = s.count_jobs()
    if as_json:
        print_json(report)
        return
    rows = [(k, v) for k, v in report.items() if k != "jobs"]
    jobs = report["jobs"]
    rows.append(("jobs", "(database stopped)" if jobs is None else ", ".join(f"{n} {s}" for s, n in jobs.items()) or "none"))
    print_table(["", ""], rows)
