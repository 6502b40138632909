"""The launcher's database work, in a thread of its own: the loop that starts tasks never waits on a commit.

The main loop (``balsam.launcher.master``) records what happened to its jobs (``record``), lets go of
jobs it may not start (``release``), says how many more it wants (``ask``) and reads back what each
transaction brought (``take``). This thread does the rest, one transaction at a time, each holding
everything recorded since the last one began (group commit): when tasks end often, one commit carries
many; when they end seldom, each end is written at once. A commit is at most one every
``flush_seconds``, so the database is not asked for thousands a second; while commits carry many
changes each (``BUSY_BATCH``: jobs end by the hundred a second) at most one every
``busy_flush_seconds``: each commit has a fixed cost (a WAL flush, some eight statements) that larger
batches share, and a job's end then reaches the database a fraction of a second later, where a
single dependent job (a chain: small batches) still sees its parent's end at once.

Each transaction writes the changes, lets go of released jobs, reads the site's Argo lease, and, when
due, looks for jobs users killed (every ``poll_seconds``), takes back the jobs of lost launchers
(every ``heartbeat_seconds``), renews this launcher's lease (as often) and takes more jobs (when the
loop wants some and there may be work: a NOTIFY on ``balsam_runnable``, which this thread LISTENs
for, or the poll).

While the database is away it keeps what it could not write, journals it (``balsam.site.db.journal``)
and tries again with backoff (``balsam.launcher.outage``). Two connections in all: one from the pool
for the transactions, one for LISTEN.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from sqlalchemy.exc import DBAPIError, OperationalError

from balsam.launcher import store
from balsam.launcher.lifecycle import HeldJob
from balsam.launcher.outage import Outage
from balsam.site.api import Site
from balsam.site.db import journal, leases
from balsam.site.db.jobstore import Change
from balsam.site.db.notify import RUNNABLE_CHANNEL, Listener

log = logging.getLogger("balsam.launcher")
DB_ERRORS = (OperationalError, DBAPIError, psycopg2.Error)
FINAL_ATTEMPTS = 30  # at the end, tries to write what is left before leaving it in the journal
BUSY_BATCH = 32  # changes in the last commit from which the next waits busy_flush_s


@dataclass
class Result:
    """What one transaction brought back (or, with ``failed``, that it could not be made)."""

    asked: float  # monotonic time just before the transaction: what lease_left counts from
    jobs: list[HeldJob] = field(default_factory=list)
    broken: list[tuple[int, str]] = field(default_factory=list)  # jobs taken whose command cannot be built
    gone: set[int] = field(default_factory=set)  # jobs no longer this launcher's: skipped, killed, released
    lease_left: float | None = None  # seconds of the site's Argo lease (None: none)
    took: int = 0
    wanted: int = 0
    lease_lost: str = ""  # another launcher declared this one lost
    failed: bool = False


class DbWorker:
    def __init__(self, site: Site, launcher_id: int, fit: store.Fit, *, lease_s: float, heartbeat_s: float, poll_s: float,
                 flush_s: float, busy_flush_s: float | None = None, on_result: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.site = site
        self.id = launcher_id
        self.lease_s, self.heartbeat_s, self.poll_s, self.flush_s = lease_s, heartbeat_s, poll_s, flush_s
        self.busy_flush_s = flush_s if busy_flush_s is None else max(flush_s, busy_flush_s)
        self.journal = journal.Journal(journal.journal_path(site.settings.logs_dir, launcher_id))
        self.listener = Listener(site.engine, [RUNNABLE_CHANNEL])
        self.too_big_noted: set[int] = set()
        self.last_renewal = time.monotonic()  # the loop judges the lease by it
        self.outage: Outage | None = None
        self.dry = False  # the last acquisition found nothing, and nothing since may have made work
        self._lock = threading.Lock()
        self._changes: list[Change] = []
        self._rescues: dict[int, dict[str, Any]] = {}
        self._fenced: set[int] = set()
        self._want, self._fit = 0, fit
        self._woken = True  # there may be work: take some as soon as wanted
        self._in_flight = False
        self._closing: str | None = None  # the reason, once the loop has ended
        self._results: list[Result] = []
        self._wake_r, self._wake_w = _pipe()
        self.ready_fd, self._ready_w = _pipe()  # readable when results wait: the loop selects on it
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name="launcher-db", daemon=True)
        self._thread.start()

    # -- the loop's side -------------------------------------------------------------------------

    def record(self, change: Change, rescue: dict[str, Any] | None = None) -> None:
        # Only the first change since the thread last took them wakes it: for the others it already
        # knows a write is pending (or is writing and looks again after). Tasks ending a thousand times
        # a second would otherwise wake it, and make it contend for the interpreter, at each one.
        with self._lock:
            first = not (self._changes or self._fenced)
            self._changes.append(change)
            if rescue is not None:
                self._rescues[change.job_id] = rescue
            self.dry = False
        if first:
            _poke(self._wake_w)

    def release(self, job_id: int) -> None:
        with self._lock:
            first = not (self._changes or self._fenced)
            self._fenced.add(job_id)
        if first:
            _poke(self._wake_w)

    def ask(self, want: int, fit: store.Fit) -> None:
        with self._lock:
            changed = want != self._want
            self._want, self._fit = want, fit
        if changed and want:
            _poke(self._wake_w)

    def busy(self) -> bool:
        """Changes or releases wait to be written, or are being written."""
        with self._lock:
            return bool(self._changes or self._fenced or self._in_flight)

    def pending(self) -> int:
        with self._lock:
            return len(self._changes)

    def take(self) -> list[Result]:
        _drain(self.ready_fd)
        with self._lock:
            results, self._results = self._results, []
        return results

    def stop(self, reason: str, wait_s: float = 120.0) -> None:
        """Write what is left and end this launcher's lease, then end the thread."""
        with self._lock:
            self._closing = reason
        _poke(self._wake_w)
        self._thread.join(wait_s)
        self.listener.close()

    # -- the thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = next_scan = next_beat = 0.0
        last_commit = -1e9
        flush_s = self.flush_s  # the least time from one commit to the next: longer while batches are large
        while True:
            now = time.monotonic()
            with self._lock:
                pending = bool(self._changes or self._fenced)
                closing = self._closing
                # Take more when there may be work, or anyway when a transaction is made for writing.
                want = self._want if (self._woken or now >= next_poll or pending) else 0
            if closing is not None:
                self._finish(closing)
                return
            if self.outage is not None and now < self.outage.next_try:
                self._sleep(self.outage.next_try - now, listen=False)
                continue
            due_poll, due_scan, due_beat = now >= next_poll, now >= next_scan, now >= next_beat
            write_due = pending and now - last_commit >= flush_s
            if not (write_due or want or due_poll or due_scan or due_beat):
                deadlines = [next_poll, next_scan, next_beat] + ([last_commit + flush_s] if pending else [])
                if self._sleep(min(deadlines) - now, listen=True):
                    with self._lock:
                        self._woken = True
                        self.dry = False
                continue
            with self._lock:
                changes, rescues, fenced = self._changes, self._rescues, sorted(self._fenced)
                self._changes, self._rescues, self._fenced = [], {}, set()
                # Read again with the changes: the loop may have stopped asking since (ask(0)), and a
                # job those changes release would otherwise be taken back in the same transaction.
                want = min(want, self._want)
                self._woken = False
                self._in_flight = bool(changes or fenced)
                fit = self._fit
            asked = time.monotonic()
            try:
                result = self._transact(asked, changes, rescues, fenced, fit, want, due_poll, due_scan, due_beat)
            except DB_ERRORS as exc:
                self._failed(now, exc, changes, rescues, fenced)
                continue
            last_commit = now
            flush_s = self.busy_flush_s if len(changes) >= BUSY_BATCH else self.flush_s
            if due_poll:
                next_poll = now + self.poll_s
            if due_scan:
                next_scan = now + self.heartbeat_s
            if due_beat:
                next_beat = now + self.heartbeat_s
            if self.outage is not None:
                log.warning("launcher %d: database back after %.0f s (%d attempt(s)); what was kept is written",
                            self.id, now - self.outage.began, self.outage.attempts)  # fmt: skip
                self.outage, next_beat = None, 0.0  # renew the lease at once
            with self._lock:
                self._in_flight = False
                if not self._changes:
                    self.journal.clear()
                # A full batch: there is probably more, so take again without waiting for a NOTIFY.
                self._woken = self._woken or 0 < want <= result.took
                if want > 0:  # only a look for work can tell there is none (record() says there may be)
                    self.dry = result.took < want and not self._changes
                self._results.append(result)
            _poke(self._ready_w)

    def _transact(self, asked: float, changes: list[Change], rescues: dict[int, dict[str, Any]], fenced: list[int], fit: store.Fit,
                  want: int, due_poll: bool, due_scan: bool, due_beat: bool) -> Result:  # fmt: skip
        result = Result(asked=asked, wanted=want)
        with self.site.session() as session:
            if changes:
                result.gone.update(store.write(session, self.id, changes, rescues))
            if fenced:
                store.release(session, self.id, fenced, "the site's Argo lease ran out before it could start")
                result.gone.update(fenced)
            if due_poll:
                result.gone.update(store.killed(session, self.id))
            if due_beat and not leases.renew(session, self.id):
                result.lease_lost = "another launcher declared this one lost"
            if due_scan:  # before acquiring, so jobs taken back can be run here at once
                for lost_id, taken in leases.reap_lost(session, self.site.settings.logs_dir, me=self.id):
                    log.warning("launcher %d was lost; took back %d job(s)", lost_id, len(taken))
                self.too_big_noted.update(store.note_too_big(session, self.id, fit, self.too_big_noted))
            if want > 0 and not result.lease_lost:
                result.jobs, result.broken = store.acquire(session, self.id, fit, want)
            # After the acquisition: a heartbeat's lease committed between two statements is seen by both,
            # so an Argo task taken under the lease comes back with it (not fenced at once, then started).
            result.lease_left = store.argo_lease_left(session, self.id)
        if due_beat and not result.lease_lost:
            self.last_renewal = asked
        result.took = len(result.jobs) + len(result.broken)
        return result

    def _failed(self, now: float, exc: BaseException, changes: list[Change], rescues: dict[int, dict[str, Any]], fenced: list[int]) -> None:
        """Keep what could not be written (ahead of what came since), journal it, back off."""
        self.outage = self.outage or Outage(began=now, max_backoff_s=self.lease_s / 4)
        log.warning("launcher %d: %s", self.id, self.outage.failed(now, exc))
        self.listener.close()
        with self._lock:
            self._changes[:0] = changes
            self._rescues = {**rescues, **self._rescues}
            self._fenced.update(fenced)
            self._woken = True
            self._in_flight = False
            self.journal.keep(self._changes, self._rescues)  # should this process die before the database is back
            self._results.append(Result(asked=now, failed=True))
        _poke(self._ready_w)

    def _finish(self, reason: str) -> None:
        """The last transaction: what is left, and the end of the lease (let go of every held job)."""
        for attempt in range(FINAL_ATTEMPTS):
            with self._lock:
                changes, rescues = list(self._changes), dict(self._rescues)
            try:
                with self.site.session() as session:
                    if changes:
                        store.write(session, self.id, changes, rescues)
                    leases.end(session, self.id, reason)
                with self._lock:
                    self._changes, self._rescues = [], {}
                self.journal.clear()
                break
            except DB_ERRORS as exc:
                with self._lock:
                    self.journal.keep(self._changes, self._rescues)
                log.warning("cannot write the final states yet (%s); retrying", str(exc).strip().splitlines()[0])
                time.sleep(min(2.0, 0.1 * 2**attempt))
        else:
            log.error("launcher %d: the database stayed away; %d change(s) are left in %s, applied once this launcher is found lost",
                      self.id, len(self._changes), self.journal.path)  # fmt: skip
        self.ended.set()

    def _sleep(self, timeout: float, listen: bool) -> bool:
        """Until poked, notified (True) or ``timeout`` s have passed."""
        fds = [self._wake_r]
        listening = self.listener.fileno() if listen and self.outage is None else None
        if listening is not None:
            fds.append(listening)
        try:
            readable, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            return False
        if self._wake_r in readable:
            _drain(self._wake_r)
        return listening is not None and listening in readable and self.listener.drain()


def _pipe() -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    return read, write


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"x")
    except BlockingIOError:
        pass  # full: a wake-up is already waiting


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass

