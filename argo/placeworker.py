"""Placement in a process of its own, beside the server's.

The server's process runs the event loop (every stream), the unary calls and the feed in one
interpreter; its placement thread held that interpreter 40% of the time it was held at all
(``bench/federation_scale.py``, 10 sites, 100,000 tasks, 100 watchers, sampled with py-spy
``--gil``): reading the ready tasks, building each assignment, decoding the rows' JSON. So the
server starts one placement process (spawned, with its own engine on the same database) that runs
the same rounds (``placing.Placer.place_round``) under the same locks.

What crosses, and why nothing is lost:
- to the process, that placement is wanted: ``Database.placement_wanted`` is a ``Wanted`` in the
  server, whose ``set`` (by whoever commits something placement should look at) writes a byte to a
  pipe the process waits on. A pipe, not a multiprocessing event: that event's lock is a semaphore
  that a process killed while holding it never releases, and the server's next ``set`` would wait
  for it for ever (measured: the server stopped applying the sites' batches);
- back, after each round that committed: the sites whose outboxes grew, for the server's process to
  signal as after its own commits (``Database.sent``, ``notify``), so the site streams send the
  assignments and watchers see the placements.
A round is one transaction: a process killed in it placed everything of it or nothing. One that
dies is started again within a second, and the server then has every site stream look at its
outbox (a round may have committed just before the death, unannounced). The process leaves when
its server does.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time

from sqlalchemy import text

from balsam.argo.database import Database
from balsam.daemon import leave_with_parent

log = logging.getLogger("balsam.argo.placeworker")

_SPAWN = multiprocessing.get_context("spawn")  # a fork of the server would copy its gRPC threads' state


class Wanted:
    """``set`` from the server, seen by its placement process: a byte in a pipe, written without
    ever blocking (a full pipe already says it). The API of ``threading.Event`` that ``Database``
    uses; the process reads the other end (``_Waiting``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a pipe is not closed under a writer (its number could be another file's by then)
        self._writer = None

    def attach(self, writer) -> None:
        """Signal from now on through ``writer`` (a new process's pipe); the old pipe is closed."""
        os.set_blocking(writer.fileno(), False)
        with self._lock:
            old, self._writer = self._writer, writer
            if old is not None:
                old.close()

    def set(self) -> None:
        with self._lock:
            if self._writer is None:
                return
            try:
                os.write(self._writer.fileno(), b"!")
            except OSError:  # full: already signalled; or the process died (a new one places at once)
                pass

    def close(self) -> None:
        """No more signals: the process's wait ends, and it leaves."""
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


class PlacementProcess:
    """Runs placement rounds in a child process until ``close``; starts it again if it dies."""

    def __init__(self, db: Database, url: str, instance: str, max_per_round: int, interval_s: float, log_file: str | None) -> None:
        self.db = db
        self._wanted = Wanted()
        db.placement_wanted = self._wanted
        self._args = (url, instance, max_per_round, interval_s, log_file, os.getpid())
        self._closed = threading.Event()
        self._process, self._news = self._start()
        self._relaying = threading.Thread(target=self._relay, name="placement-relay", daemon=True)
        self._relaying.start()

    def _start(self):
        news, news_writer = _SPAWN.Pipe(duplex=False)
        wanted_reader, wanted = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(target=_run, args=(*self._args, wanted_reader, news_writer), name="argo-placement", daemon=True)
        process.start()
        news_writer.close()  # the child holds the only writing end: its death ends the pipe
        wanted_reader.close()
        self._wanted.attach(wanted)
        self._wanted.set()  # a new process looks at once
        log.info("placement runs in process %d", process.pid)
        return process, news

    def _relay(self) -> None:
        """Signal here what each round committed; start the process again when it dies."""
        while not self._closed.is_set():
            try:
                if not self._news.poll(1.0):
                    continue
                sent = self._news.recv()
            except (EOFError, OSError):  # the process died (or was stopped)
                self._process.join(5)
                if self._closed.is_set():
                    return
                log.error("the placement process died (exit %s); starting it again", self._process.exitcode)
                self._news.close()
                time.sleep(0.5)  # a process dying at its start is not restarted in a tight loop
                while True:
                    try:
                        self._process, self._news = self._start()
                        break
                    except Exception:  # out of processes or memory: placement waits, the server goes on
                        log.exception("starting the placement process failed; trying again in 5 s")
                        if self._closed.wait(5.0):
                            return
                # A round may have committed just before the death: every stream looks at its outbox.
                self.db.sent(self._every_site())
                self.db.notify()
                continue
            self.db.sent(sent)
            self.db.notify()

    def _every_site(self) -> list[str]:
        """Every registered site (those sent to before, if the database cannot say)."""
        try:
            with self.db.session() as session:
                return list(session.scalars(text("SELECT name FROM sites")))
        except Exception:  # noqa: BLE001 (the database restarting: the streams known to have had messages)
            return list(self.db.outbox_versions)

    def close(self) -> None:
        self._closed.set()
        self._wanted.close()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._relaying.join(5)


# -- in the child ------------------------------------------------------------------------------------


class _Waiting:
    """The child's end of ``Wanted``: the API of ``threading.Event`` over the pipe's reading end.
    The pipe closed (the server closing, or gone) reads as set, and ``closed`` says so."""

    def __init__(self, reader) -> None:
        self._reader = reader
        self._local = False  # set by this process itself
        self.closed = False

    def set(self) -> None:
        self._local = True

    def is_set(self) -> bool:
        return self._local or self.closed or self._reader.poll(0)

    def clear(self) -> None:
        self._local = False
        while not self.closed and self._reader.poll(0):
            try:
                if not os.read(self._reader.fileno(), 4096):
                    self.closed = True
            except OSError:
                self.closed = True

    def wait(self, timeout: float) -> bool:
        return self._local or self.closed or self._reader.poll(timeout)


class _Relaying(Database):
    """The child's database: what its commits would signal goes to the server's process instead."""

    def __init__(self, engine, wanted: _Waiting, news) -> None:
        super().__init__(engine)
        self.placement_wanted = wanted
        self._news = news
        self._sent: set[str] = set()

    def sent(self, sites) -> None:
        self._sent.update(sites)

    def notify(self, place: bool = False) -> None:
        self._news.send(sorted(self._sent))
        self._sent.clear()
        if place:
            self.placement_wanted.set()


def _run(url: str, instance: str, max_per_round: int, interval_s: float, log_file: str | None, server_pid: int, wanted_reader, news) -> None:
    from sqlalchemy import create_engine

    from balsam.argo.placing import Placer
    from balsam.gcpause import settle_for_serving

    if log_file:
        logging.basicConfig(filename=log_file, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    leave_with_parent(server_pid)
    wanted = _Waiting(wanted_reader)
    db = _Relaying(create_engine(url, pool_pre_ping=True, pool_size=1, max_overflow=1), wanted, news)
    placer = Placer(db, instance)
    settle_for_serving()
    while True:
        signalled = wanted.is_set()  # taken before the round reads anything: a change after it wakes the next one
        wanted.clear()
        if wanted.closed:
            return  # the server closes
        try:
            placed = placer.place_round(max_per_round, signalled)
            if placed:
                log.info("placed %d task(s)", placed)
        except Exception:  # the database restarting, a bug: log it and keep placing
            log.exception("placement round failed; retrying")
            time.sleep(1.0)
            placed = 0
        if placed < max_per_round:  # else more are waiting: the next round at once
            wanted.wait(interval_s)
