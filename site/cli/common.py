"""Options shared by the CLI's commands."""

import typer

SiteOption = typer.Option(None, "--site", help="Site folder (default: $BALSAM_SITE, else the site folder around the cwd).")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")
