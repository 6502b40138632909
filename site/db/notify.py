"""Waiting for the database to say something changed: a connection of its own that LISTENs.

A pooled connection could be handed to someone else mid-wait, so each listener holds one of its own,
in autocommit mode. Should it fail (the database restarting), the listener closes it and opens a
new one at the next wait; meanwhile waits simply time out, so a caller falls back to polling.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Sequence

import psycopg2
from sqlalchemy import Engine

log = logging.getLogger("balsam.site.notify")

# Who notifies what: jobs a launcher may take (balsam.site.db.jobstore), job events waiting for the
# Argo sync (the job_events_to_argo trigger, site migration 0010), and a launcher that started, which
# may start Argo tasks once a heartbeat has counted it (balsam.site.db.leases).
RUNNABLE_CHANNEL = "balsam_runnable"
ARGO_CHANNEL = "balsam_argo"
LAUNCHERS_CHANNEL = "balsam_launchers"


class Listener:
    def __init__(self, engine: Engine, channels: Sequence[str]) -> None:
        self._url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.channels = tuple(channels)
        self._conn = None
        self._warned = False
        self.heard: set[str] = set()  # the channels the last notifications that came were on

    def fileno(self) -> int | None:
        """The connection's socket, to wait on together with others (None: not connected)."""
        self._open()
        return self._conn.fileno() if self._conn is not None else None

    def drain(self) -> bool:
        """Read what arrived; True if any channel was notified."""
        if self._conn is None:
            return False
        try:
            self._conn.poll()
        except psycopg2.Error:
            self.close()
            return False
        notified = bool(self._conn.notifies)
        if notified:
            self.heard = {n.channel for n in self._conn.notifies}
        self._conn.notifies.clear()
        return notified

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a notification; True if one came."""
        fd = self.fileno()
        if fd is None:
            select.select([], [], [], timeout)
            return False
        if self.drain():
            return True
        try:
            readable, _, _ = select.select([fd], [], [], timeout)
        except (InterruptedError, ValueError):
            return False
        return bool(readable) and self.drain()

    def _open(self) -> None:
        if self._conn is not None:
            return
        try:
            conn = psycopg2.connect(self._url)
            conn.autocommit = True
            with conn.cursor() as cur:
                for channel in self.channels:
                    cur.execute(f"LISTEN {channel}")
            self._conn, self._warned = conn, False
        except psycopg2.Error as exc:
            if not self._warned:
                log.warning("cannot LISTEN on %s (%s): polling until the database answers", ", ".join(self.channels), str(exc).strip())
                self._warned = True

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
            self._conn = None
