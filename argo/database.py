"""The coordinator's database and the signal that something in it changed, shared by its parts.

Every commit is signalled in the one server process, so watchers and site streams wait on
in-process signals instead of polling the database: ``notify`` after a commit wakes them (what the
server's worker processes commit, the sites' batches and the placement rounds, is signalled by the
server's process once the worker reports it: ``balsam.argo.syncworkers``, ``balsam.argo.placeworker``).
The streams wait on the server's event loop (``wakened``), holding no thread while nothing happens.
``placement_wanted`` is what ``notify(place=True)`` sets: in the server, the pipe to its placement
process (``placeworker.Wanted``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker


class Signal:
    """Wakes whoever waits on it, on whichever event loop each waits, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakers: set[Callable[[], None]] = set()

    def fire(self) -> None:
        with self._lock:
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    @contextmanager
    def wakened(self) -> Iterator[asyncio.Event]:
        """An event of the running loop, set on every ``fire`` (from whichever thread) while in the block."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop has closed: nobody waits any more
                pass

        with self._lock:
            self._wakers.add(wake)
        try:
            yield event
        finally:
            with self._lock:
                self._wakers.discard(wake)


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.placement_wanted = threading.Event()
        self._lock = threading.Lock()
        self._changed = Signal()
        self.version = 0  # counts changes: whoever saw a number knows whether anything changed since
        # Per site, counts commits that queued messages to it (``graph.send``): its sync stream asks for
        # its outbox only when this moved, not after every change of anything.
        self.outbox_versions: dict[str, int] = {}

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session
        self.sent(session.info.pop(SENT_TO, ()))

    def sent(self, sites) -> None:
        """A commit queued messages to these sites: their sync streams look at their outboxes."""
        if sites:
            with self._lock:
                for site in sites:
                    self.outbox_versions[site] = self.outbox_versions.get(site, 0) + 1

    def notify(self, place: bool = False) -> None:
        """Something changed (committed): wake watchers and site streams, and placement if ``place``."""
        with self._lock:
            self.version += 1
        self._changed.fire()
        if place:
            self.placement_wanted.set()

    def wakened(self):
        """An event of the running loop, set on every change (whichever thread commits it) while in the block."""
        return self._changed.wakened()


SENT_TO = "balsam.sent_to"  # session.info key: the sites a transaction queued messages to
