"""Options shared by the CLI's commands."""

import typer

SiteOption = typer.Option(None, "--site", help="Site folder (default: $BALSAM_SITE, else the site folder around the cwd).")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")


class _SiteOnDemand:
    """``balsam.site.api.Site``, imported when a command first uses it: `balsam --help`, a group's
    help and a malformed command line load no database library (SQLAlchemy alone takes longer
    than a user should wait for help)."""

    @staticmethod
    def _site():
        from balsam.site.api import Site

        return Site

    def __getattr__(self, name: str):
        return getattr(self._site(), name)

    def __call__(self, *args, **kwargs):
        return self._site()(*args, **kwargs)


Site = _SiteOnDemand()


def parse_assignments(items: list[str], what: str) -> dict:
    """``balsam.site.specs.parse_assignments``, loaded when a command runs (not for its help), and
    only when there is something to parse (the specs module loads PyYAML)."""
    if not items:
        return {}
    from balsam.site.specs import parse_assignments as parse

    return parse(items, what)
