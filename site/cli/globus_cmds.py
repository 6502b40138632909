"""``balsam globus login | status | logout``: the site's Globus credentials (its token file).

These commands read only the site's settings, never its database: a login works before the site's
database server is started.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from balsam.site.cli.common import JsonOption, SiteOption
from balsam.site.cli.output import console, print_json
from balsam.site.settings import SiteSettings, find_site

app = typer.Typer(help="The site's Globus login, for globus:// transfers.", no_args_is_help=True)


def _settings(site: Path | None) -> SiteSettings:
    return SiteSettings.load(site if site else find_site())


@app.command("login")
def login(
    collection: list[str] = typer.Option([], "--collection", metavar="ID",
                                         help="Also consent to data_access on this GCSv5 mapped collection (repeatable)."),
    browser: bool = typer.Option(False, "--browser/--no-browser",
                                 help="Also open the URL in a browser (off by default: login nodes have none)."),
    site: Path | None = SiteOption,
) -> None:
    """Sign in to Globus (native-app flow) and keep the transfer tokens in the site's token file (mode 0600)."""
    from balsam.transfer import globus_auth

    settings = _settings(site)
    # data_access consent is opt-in (--collection): guest collections, for one, must not be asked for it.
    tokens = globus_auth.login(settings.transfer.globus_client_id, settings.globus_tokens_file, collections=collection,
                               read_code=lambda prompt: typer.prompt(prompt.rstrip(": ")), show=console.print,
                               open_browser=browser)  # fmt: skip
    console.print(f"logged in to Globus; tokens saved to {settings.globus_tokens_file} "
                  f"(access token valid until {time.strftime('%Y-%m-%d %H:%M', time.localtime(tokens['expires_at_seconds']))}, "
                  "refreshed as needed)")  # fmt: skip


@app.command("status")
def status(site: Path | None = SiteOption, as_json: bool = JsonOption) -> None:
    """Whether the site is logged in to Globus, until when, and its Globus settings."""
    from balsam.transfer import globus_auth

    settings = _settings(site)
    info = globus_auth.token_status(settings.globus_tokens_file)
    info.update(endpoint=settings.transfer.globus_endpoint, root=settings.transfer.globus_root,
                settings_client_id=settings.transfer.globus_client_id)  # fmt: skip
    if as_json:
        print_json(info)
        return
    if info["logged_in"]:
        expiry = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["expires_at_seconds"]))
        state = "expired (it is refreshed on next use)" if info["access_token_expired"] else f"valid until {expiry}"
        console.print(f"logged in to Globus (client {info['client_id']}); access token {state}")
    else:
        console.print("not logged in to Globus: run `balsam globus login`")
    console.print(f"token file: {info['token_file']}")
    console.print(f"client id:  {settings.transfer.globus_client_id or '(not set: [transfer] globus_client_id)'}")
    console.print(f"endpoint:   {settings.transfer.globus_endpoint or '(not set: [transfer] globus_endpoint)'}")
    if settings.transfer.globus_root:
        console.print(f"root:       {settings.transfer.globus_root}")


@app.command("logout")
def logout(site: Path | None = SiteOption) -> None:
    """Delete the site's Globus tokens (they stay valid at Globus until they expire or are revoked there)."""
    from balsam.transfer import globus_auth

    settings = _settings(site)
    if globus_auth.delete_tokens(settings.globus_tokens_file):
        console.print(f"logged out: deleted {settings.globus_tokens_file}")
    else:
        console.print("not logged in: no token file to delete")
