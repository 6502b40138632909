"""The agent's side of the site's dashboard: its token, its address, its server.

The token is made on the first start with a dashboard (``secrets.token_urlsafe``) and kept in
``SITE/web-token``, mode 0600 like every secret file of the site (``balsam.private_files``); the
agent refuses to serve when others can read it. The address comes from the settings (``[web]``,
kept by ``balsam site start --web ADDRESS``): on loopback plain HTTP, elsewhere only TLS with the
certificates of ``web.tls_dir`` (the settings refuse anything else). Where it listens is written to
``logs/web-url`` for ``balsam site start`` and ``balsam site status`` to print.
"""

from __future__ import annotations

import logging
import secrets

from balsam.private_files import read_private, write_private
from balsam.site.api import Site
from balsam.site.settings import SiteSettings
from balsam.site.web import URL_FILE
from balsam.web.serving import HttpServer

log = logging.getLogger("balsam.site.web")


def web_token(settings: SiteSettings) -> str:
    """The dashboard's token, made (owner-only) on first use."""
    if not settings.web_token_file.exists():
        write_private(settings.web_token_file, secrets.token_urlsafe(32) + "\n")
    return read_private(settings.web_token_file).strip()


class SiteWebServer(HttpServer):
    def __init__(self, app, settings: SiteSettings) -> None:
        super().__init__(app, settings.web.address, settings.web.tls_dir)
        self.url_file = settings.logs_dir / URL_FILE
        self.url_file.write_text(self.url + "\n")

    def stop(self) -> None:
        super().stop()
        self.url_file.unlink(missing_ok=True)


def start_site_web(site: Site) -> HttpServer | None:
    """The site's dashboard serving (None when the settings give it no address)."""
    from balsam.site.web.app import make_app

    settings = site.settings
    if not settings.web.address:
        (settings.logs_dir / URL_FILE).unlink(missing_ok=True)
        return None
    settings.web.check()
    app = make_app(site, web_token(settings), secure=bool(settings.web.tls_dir))
    server = SiteWebServer(app, settings)
    log.info("the site's dashboard is on %s (token in %s)", server.url, settings.web_token_file)
    return server
