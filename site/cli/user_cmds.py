"""``balsam site user add | rm | ls``: the people who share a site's database, each with their own login."""

from __future__ import annotations

from pathlib import Path

import typer
from balsam.site.cli.common import JsonOption, Site, SiteOption
from balsam.site.cli.output import console, err_console, print_json, print_table
from balsam.site.settings import CREDENTIALS_ENV, SiteSettings, find_site

app = typer.Typer(
    help="The site's users: a database login each, as owner, collaborator or viewer (run these with the site's own login).",
    no_args_is_help=True,
)


def _site(site: Path | None) -> Site:
    return Site(SiteSettings.load(site if site else find_site()))


@app.command("add")
def add(
    name: str = typer.Argument(..., help="The new database role (lowercase letters, digits, _)."),
    role: str = typer.Option("collaborator", "--role", help="owner | collaborator | viewer."),
    site: Path | None = SiteOption,
) -> None:
    """Create a database login for NAME with the rights of ROLE, and write its credentials file."""
    from balsam.site import access

    with _site(site) as s:
        with s.engine.begin() as conn:
            password = access.add_user(conn, name, role)
            # Written before the commit, so a role is never left without the file that logs in as it.
            file = access.write_credentials(s.settings, name, role, password)
        settings = s.settings
    console.print(f"added {name} as a {role} of site {settings.name}: {access.SUMMARY[role]}")
    console.print(f"its login is in {file} (mode 600). Hand that file to {name} privately; {name} keeps a copy "
                  "(chmod 600) and uses it with:")  # fmt: skip
    console.print(f"  export BALSAM_SITE={settings.path}")
    console.print(f"  export {CREDENTIALS_ENV}=~/{settings.name}-{name}.toml   (or: balsam --db-credentials FILE ...)")


@app.command("rm")
def rm(name: str = typer.Argument(...), site: Path | None = SiteOption) -> None:
    """Drop NAME's database role (its open connections are closed) and its credentials file."""
    from balsam.site import access

    from sqlalchemy.exc import DBAPIError

    with _site(site) as s:
        with s.engine.begin() as conn:
            user = access.remove_user(conn, name)
        try:
            with s.engine.begin() as conn:
                access.end_sessions(conn, user)
        except DBAPIError as exc:  # not allowed to signal them: they fail at their next login
            err_console.print(f"note: could not close {name}'s open connections: {str(exc.orig).strip().splitlines()[0]}")
        access.credentials_file(s.settings, name).unlink(missing_ok=True)
    console.print(f"removed {user.kind} {name}")


@app.command("ls")
def ls(site: Path | None = SiteOption, as_json: bool = JsonOption) -> None:
    """The site's users and the kind of each."""
    from balsam.site import access

    with _site(site) as s:
        with s.engine.connect() as conn:
            users = access.list_users(conn)
    records = [{"name": u.name, "role": u.kind, "login": u.can_login} for u in users]
    if as_json:
        print_json(records)
        return
    if not records:
        console.print("no users besides the site's own login (add one with `balsam site user add NAME --role ROLE`)")
        return
    print_table(["NAME", "ROLE", "RIGHTS"], [(r["name"], r["role"], access.SUMMARY[r["role"]]) for r in records])

