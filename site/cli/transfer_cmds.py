"""``balsam transfer ls``: the files jobs are waiting for, and the transfer tasks moving them."""

from __future__ import annotations

from pathlib import Path

import typer

from balsam.site.cli.common import JsonOption, Site, SiteOption
from balsam.site.cli.output import console, local_time, print_json, print_table

app = typer.Typer(help="Stage-in and stage-out of the site's jobs (run by the site agent).", no_args_is_help=True)


@app.command("ls")
def ls(
    show_all: bool = typer.Option(False, "--all", help="Also list ended transfer tasks (the last 100)."),
    site: Path | None = SiteOption,
    as_json: bool = JsonOption,
) -> None:
    """Transfer tasks with their progress, and the files still waiting, by state."""
    from sqlalchemy import text

    with Site.open(site) as s, s.session() as session:
        where = "" if show_all else "WHERE state = 'active'"
        tasks = session.execute(text(
            "SELECT id, backend, backend_id, direction, state, item_count, files_done, bytes_done, message, created_at, ended_at"
            f" FROM transfer_tasks {where} ORDER BY id DESC LIMIT 100"
        )).all()  # fmt: skip
        waiting = session.execute(text(
            "SELECT direction, state, count(*) AS files, count(DISTINCT job_id) AS jobs, min(error) FILTER (WHERE error <> '') AS error"
            " FROM transfer_items GROUP BY direction, state ORDER BY direction, state"
        )).all()  # fmt: skip
    records = [dict(row._mapping) for row in tasks]
    files = [dict(row._mapping) for row in waiting]
    if as_json:
        print_json({"tasks": records, "files": files})
        return
    print_table(
        ["ID", "BACKEND", "DIR", "STATE", "FILES", "BYTES", "STARTED", "MESSAGE"],
        [(r["id"], r["backend"], r["direction"], r["state"], f"{r['files_done']}/{r['item_count']}", r["bytes_done"],
          local_time(r["created_at"]), r["message"]) for r in records],
    )  # fmt: skip
    for row in files:
        note = f" (last error: {row['error']})" if row["error"] else ""
        console.print(f"stage-{row['direction']}: {row['files']} file(s) of {row['jobs']} job(s) {row['state']}{note}")
    if not records and not files:
        console.print("no transfers in flight" + ("" if show_all else "; --all lists ended ones"))
