"""A lone site's web dashboard (``balsam site start --web ADDRESS``; docs/web.md).

    app        the Starlette application over the site's database: jobs, a job, the live feed
    serve      the agent's side: the token (SITE/web-token), the address checks, the server

It is built from the pieces both dashboards share (``balsam.web``); the site never imports the
coordinator's dashboard (``balsam.argo.web``).
"""

from __future__ import annotations

from balsam.site.settings import SiteSettings

URL_FILE = "web-url"  # in the site's logs/: where the running agent serves the dashboard


def web_url(settings: SiteSettings) -> str:
    """Where the running agent serves the dashboard ('' : it does not). Light: no web framework imported."""
    try:
        return (settings.logs_dir / URL_FILE).read_text().strip()
    except FileNotFoundError:
        return ""
