"""The coordinator's database and the signal that something in it changed, shared by its parts.

All writes go through the one server process, so watchers, site streams and the placement loop wait
on in-process events instead of polling the database: ``notify`` after a commit wakes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # ``version`` counts changes; ``changed`` wakes those waiting for the next one.
        self.changed = threading.Condition()
        self.version = 0
        self.placement_wanted = threading.Event()
        self.wakers: set[threading.Event] = set()  # one per site stream, set on every change

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def notify(self, place: bool = False) -> None:
        """Something changed (committed): wake watchers and site streams, and placement if ``place``."""
        with self.changed:
            self.version += 1
            self.changed.notify_all()
        for wake in list(self.wakers):
            wake.set()
        if place:
            self.placement_wanted.set()

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Wait up to ``timeout`` s for a change after version ``seen``; the version now."""
        with self.changed:
            if self.version == seen:
                self.changed.wait(timeout)
            return self.version
