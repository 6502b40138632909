"""A site's private PostgreSQL cluster, in ``SITE/db`` (see ``balsam.postgres`` for how it runs)."""

from __future__ import annotations

from balsam.postgres import EmbeddedPostgres as _Cluster
from balsam.postgres import find_bin_dir, free_port
from balsam.site.settings import SiteSettings

__all__ = ["EmbeddedPostgres", "find_bin_dir", "free_port"]


class EmbeddedPostgres(_Cluster):
    """The private cluster of one site (``settings.database.mode == "embedded"``)."""

    def __init__(self, settings: SiteSettings) -> None:
        self.settings = settings
        super().__init__(settings.db_dir, settings.logs_dir, settings.database, settings.save, f"site {settings.name!r}")

    def start(self) -> bool:
        """Start the server unless it is up (True when this call started it), with its idle watcher."""
        started = super().start()
        if started:
            from balsam.site.idle_stop import ensure_watcher

            ensure_watcher(self.settings)
        return started
