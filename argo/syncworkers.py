"""The sites' batches of events applied in worker processes, beside the server's own.

The server is one Python process: its event loop (every stream), its unary calls, placement and
the sites' batches shared one interpreter. Measured with ``bench/federation_scale.py`` (10 sites,
30,000 tasks, 10 watchers): the server's process used 0.85 of a core, its interpreter the limit,
while a quarter of the machine's two cores stayed idle; applying batches (decoding, checking,
the transaction) was a third of its busy time, and a call that does no work (WhoAmI) waited up to
0.6 s for the interpreter. So the server hands each batch to one of ``sync_batches_at_once``
worker processes, each with its own engine on the same database, running the same
``SyncEndpoint.answer_many`` in one transaction under the same locks (PostgreSQL's advisory
locks, which serialise processes as they did threads).

What crosses: the envelopes as bytes, the replies as bytes, and what the batch changed (whether
watchers and placement should look, the sites whose outbox grew). The server's process signals
those once the worker has committed, as it signals its own commits, so every waiter still wakes
on an in-process signal (``balsam.argo.database``).

A worker that dies (killed, out of memory) loses nothing: its transaction commits whole or not
at all, the streams whose envelopes it held end with an error, and their sites resend on
reconnecting, where what was applied is known by its numbers (``balsam.wire.outbox.fresh``). The
next batch starts a fresh pool. A worker whose server is gone exits within a second.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from balsam.argo.database import Database
from balsam.daemon import leave_with_parent
from balsam.errors import BalsamError
from balsam.gcpause import settle_for_serving
from balsam.protos import argo_pb2 as pb

log = logging.getLogger("balsam.argo.syncworkers")


class SyncWorkers:
    """``answer_many`` of ``balsam.argo.sync.SyncEndpoint``, done by one of ``processes`` workers."""

    def __init__(self, db: Database, url: str, lease_s: float, processes: int, log_file: str | None = None) -> None:
        self.db = db
        self._processes = processes
        self._start_args = (url, lease_s, log_file, os.getpid())
        self._lock = threading.Lock()
        self._pool = self._new_pool()
        self._pool.submit(_ready)  # the first worker imports while the sites connect

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: a fork of the server would copy its gRPC threads' state, which gRPC does not allow
        return ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=self._start_args)  # fmt: skip

    def answer_many(self, envelopes: Sequence[tuple[str, pb.SiteEnvelope]]) -> list[pb.CoordinatorEnvelope | Exception]:
        """Each envelope's reply, or the refusal of that one alone; raises BalsamError for a worker
        that died with the batch (applied or not, as one transaction: its sites resend, and what
        was applied is not applied again)."""
        payload = [(site, envelope.SerializeToString()) for site, envelope in envelopes]
        pool = self._pool
        try:
            results, changed, place, sent_to = pool.submit(_answer, payload).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    log.error("a worker applying the sites' batches died; a new pool takes the next batches")
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool()
            # It may have committed before it died: whoever waits looks again, as after any commit.
            self.db.sent([*self.db.outbox_versions, *(site for site, _ in envelopes)])
            self.db.notify(place=True)
            raise BalsamError("the worker applying this batch died; the site resends it on reconnecting") from None
        self.db.sent(sent_to)
        if changed:
            self.db.notify(place=place)
        return [result if isinstance(result, Exception) else pb.CoordinatorEnvelope.FromString(result) for result in results]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- in a worker ------------------------------------------------------------------------------------


class _Recording(Database):
    """A worker's database: what the batch would have signalled is recorded, for the server's
    process to signal (``outbox_versions`` collects the sites sent to)."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.changed = self.place = False

    def notify(self, place: bool = False) -> None:
        self.changed = True
        self.place = self.place or place


_db: _Recording | None = None
_endpoint = None  # balsam.argo.sync.SyncEndpoint


def _start(url: str, lease_s: float, log_file: str | None, server_pid: int) -> None:
    global _db, _endpoint
    from sqlalchemy import create_engine

    from balsam.argo.sync import SyncEndpoint

    if log_file:
        logging.basicConfig(filename=log_file, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    leave_with_parent(server_pid)
    _db = _Recording(create_engine(url, pool_pre_ping=True, pool_size=1, max_overflow=2))
    _endpoint = SyncEndpoint(_db, lease_s, batches_at_once=1)
    settle_for_serving()


def _ready() -> None:
    pass


def _answer(payload: list[tuple[str, bytes]]) -> tuple[list[bytes | Exception], bool, bool, list[str]]:
    _db.changed = _db.place = False
    _db.outbox_versions.clear()
    envelopes = [(site, pb.SiteEnvelope.FromString(data)) for site, data in payload]
    try:
        results = _endpoint.answer_many(envelopes)
    except BalsamError as exc:  # its text crosses, not its object: not every error class can be rebuilt
        raise BalsamError(str(exc)) from None
    except Exception as exc:  # the database unreachable, a bug
        raise BalsamError(f"applying the sites' batch failed: {type(exc).__name__}: {exc}") from None
    replies = [result if isinstance(result, Exception) else result.SerializeToString() for result in results]
    return replies, _db.changed, _db.place, list(_db.outbox_versions)
