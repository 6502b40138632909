"""The coordinator's event feed: one reader of ``task_events`` for every watcher.

Each Watch stream (and each dashboard feed) once ran its own query after every change of the
database: W watchers and C changes a second made W x C queries a second, which took the server's
pool of threads from everything else (with 100 watchers, a watcher's lag reached a minute). Here one
reader, a task on the server's event loop, reads what was committed after each change (a query at a
time, so a burst of changes costs one query) with each event's project joined, into a ring of the
most recent events in memory; watchers filter that ring themselves (the filters of
``WorkflowStore.events_after``) and wait on the feed's own signal. The ring is a list of blocks, one
per read: a watcher takes every block published since its last batch, and what a filter lets
through of a block (and its wire form) is made once for every watcher with that filter, so that
a thousand watchers of ten projects cost ten filterings, and their batches, paced (``pace_s``),
cost the server about as many messages a second however many follow. A watcher that asks for older
events than the ring holds, or that falls so far behind that the ring has moved past it, reads them
from the database (``events_after``) until it has caught up, then follows the ring again.

Events are numbered by a sequence when inserted but become visible when their transaction commits,
so a higher number can be seen before a lower one. The reader publishes in number order and holds
back at a gap for ``gap_s`` (a transaction about to commit); a gap still open then is taken for
numbers that will never be used (a rolled-back transaction) and passed, but the reader looks for each
missing number (every ``LATE_EVERY_S``) until it is found or ``late_s`` is over, and publishes any that
turn up then, late, out of order (a watcher that joins from the database at that very moment may
miss such a late one; the query of every watcher that the feed replaced missed every such event).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from balsam.argo.database import Database, Signal
from balsam.argo.workflows import WorkflowStore

log = logging.getLogger("balsam.argo.feed")

READ_BATCH = 5000  # events per read of the table
READ_EVERY_S = 0.02  # the shortest time between two reads: a burst of commits is read (and wakes the watchers) at once
LATE_EVERY_S = 0.25  # the shortest time between two looks for numbers passed over (already a gap_s late)
KEEP_MADE = 64  # the newest blocks keep what each filter made of them (older ones are read by watchers far behind)
MESSAGES_PER_S = 4000  # about how many messages a second all watchers together are sent, once many follow (see ``pace_s``)
MIN_PACE_S = 0.05  # the shortest time between two messages to one watcher


EVENTS = ("SELECT e.id, e.task_id, e.workflow_id, e.site, e.from_state, e.to_state, e.at, e.message, e.workflow_status, e.attempt,"
          " e.move, w.project FROM task_events e LEFT JOIN workflows w ON w.id = e.workflow_id")  # an Entry's columns, in order


@dataclass(frozen=True)
class Filter:
    """What a watcher sees: the filters of ``WorkflowStore.events_after``, in memory. A site's own
    events (workflow 0, task '') pass every filter but the workflow's."""

    workflow_id: int = 0
    site: str = ""
    states: frozenset[str] = frozenset()
    projects: frozenset[str] | None = None  # None: every project

    def matches(self, event: Any, project: str | None) -> bool:
        if self.projects is not None and event.workflow_id != 0 and project not in self.projects:
            return False
        if self.workflow_id and event.workflow_id != self.workflow_id:
            return False
        if self.site and event.site != self.site and event.task_id != "":
            return False
        return not self.states or event.to_state in self.states or event.task_id == ""


class Entry:
    """One event in the ring: its columns as ``task_events`` holds them, its workflow's project, and
    whatever each kind of reader made of it once (so a hundred watchers build it once)."""

    __slots__ = ("id", "task_id", "workflow_id", "site", "from_state", "to_state", "at", "message", "workflow_status", "attempt", "move",
                 "project", "cache")  # fmt: skip

    def __init__(self, row: Sequence[Any]) -> None:  # the reader's row: the columns in __slots__ order
        (self.id, self.task_id, self.workflow_id, self.site, self.from_state, self.to_state, self.at, self.message, self.workflow_status,
         self.attempt, self.move, self.project) = row  # fmt: skip
        self.cache: dict[str, Any] | None = None  # made on first use: most events are sent to nobody

    def made(self, kind: str, make: Callable[[Any], Any]) -> Any:
        if self.cache is None:
            self.cache = {}
        found = self.cache.get(kind)
        if found is None:
            found = self.cache[kind] = make(self)
        return found


class Block:
    """What one read published, in number order (late ones, numbered lower, among them): the unit a
    watcher takes. Which of its events each filter lets through, and their wire form, are worked out
    once per filter, for every watcher with that filter; its events are grouped by workflow, so a
    filter of one workflow or of a few projects picks its groups instead of testing every event."""

    __slots__ = ("entries", "before", "high", "groups", "picked", "encoded")

    def __init__(self, entries: list[Entry], before: int, high: int) -> None:
        self.entries = entries
        self.before = before  # ``high`` before this block: every event of it numbered above this is new
        self.high = high  # ``high`` once it was published
        self.groups: dict[int, list[Entry]] = {}
        for entry in entries:
            self.groups.setdefault(entry.workflow_id, []).append(entry)
        self.picked: dict[Filter, list[Entry]] = {}
        self.encoded: dict[tuple[Callable, Filter], bytes] = {}

    def pick(self, which: Filter) -> list[Entry]:
        found = self.picked.get(which)
        if found is None:
            found = self.picked[which] = _pick(self, which)
        return found

    def forget(self) -> None:
        """Drop what the filters made of it (a block far behind the newest is read by few watchers)."""
        self.picked = {}
        self.encoded = {}


def _pick(block: Block, which: Filter) -> list[Entry]:
    if which.workflow_id:
        found = block.groups.get(which.workflow_id, [])
    elif which.projects is None:
        found = block.entries
    else:  # a site's own events (workflow 0) pass every filter of projects
        chosen = [group for workflow, group in block.groups.items() if workflow == 0 or group[0].project in which.projects]
        if len(chosen) == len(block.groups):
            found = block.entries
        elif len(chosen) == 1:
            found = chosen[0]
        else:
            found = sorted((e for group in chosen for e in group), key=_number)
    if which.site or which.states:
        found = [e for e in found if which.matches(e, e.project)]
    return found


def _number(entry: Entry) -> int:
    return entry.id


class Batch(list):
    """The events one watcher gets at once, in order; ``encoded`` makes their wire form, sharing the
    work with every watcher of the same filter that took the same blocks."""

    def __init__(self, events: Sequence[Any] = (), which: Filter | None = None) -> None:
        super().__init__(events)
        self.which = which
        self.parts: list[tuple[Block | None, list[Any]]] = []  # (the block it is the whole pick of, or None; its events)

    def add(self, block: Block | None, events: list[Any]) -> None:
        self.extend(events)
        self.parts.append((block, events))

    def encoded(self, encode: Callable[[Any], bytes]) -> bytes:
        """The concatenation of ``encode(event)`` over the events (a repeated field's wire form, when
        ``encode`` frames each as one element of it); each event is encoded once (``Entry.made``)."""
        if not self.parts:
            return b"".join([encoded(e, encode) for e in self])
        out = []
        for block, events in self.parts:
            if block is None:
                out.append(b"".join([encoded(e, encode) for e in events]))
                continue
            key = (encode, self.which)
            found = block.encoded.get(key)
            if found is None:
                found = block.encoded[key] = b"".join([encoded(e, encode) for e in events])
            out.append(found)
        return b"".join(out)


def encoded(event: Any, encode: Callable[[Any], bytes]) -> bytes:
    """``encode(event)``, made once for an event of the ring however many watchers send it."""
    return event.made(encode, encode) if isinstance(event, Entry) else encode(event)


class EventFeed:
    def __init__(self, db: Database, store: WorkflowStore, capacity: int = 50_000, gap_s: float = 1.0, late_s: float = 60.0) -> None:
        self.db = db
        self.store = store
        self.capacity = capacity
        self.gap_s = gap_s
        self.late_s = late_s
        self._lock = threading.Lock()  # the ring is appended on the server's loop and read from others (the dashboard's)
        self._blocks: list[Block] = []
        self._highs: list[int] = []  # each block's ``high``, for finding a watcher's place (never decreasing)
        self._held = 0  # events in the ring's blocks
        self._base = 0  # the number (count of blocks ever published) of _blocks[0]
        self.high = -1  # every event numbered up to this was published (or its number given up); -1: not started
        self.floor = -1  # the ring holds every event numbered above this that was published
        self._gap_since = 0.0  # when the reader first waited at the gap above ``high``
        self._missing: dict[int, float] = {}  # number passed over -> until when it is still looked for
        self._next_late = 0.0  # when the missing numbers are next looked for
        self.published = Signal()
        self.reads = 0  # queries of the table so far
        self.following = 0  # watchers following now (on any loop)

    # -- the reader ------------------------------------------------------------------------------

    async def run(self, pool) -> None:
        """Read after every change, until cancelled (on the server's event loop; queries in ``pool``)."""
        loop = asyncio.get_running_loop()
        with self.db.wakened() as changed:
            while True:
                await asyncio.sleep(READ_EVERY_S)
                changed.clear()  # before the query: a change committed during it wakes the next wait
                try:
                    more = await loop.run_in_executor(pool, self.read)
                except Exception:  # the database restarting: log it, try again shortly
                    log.exception("reading the event feed failed; retrying")
                    more, _ = False, await asyncio.sleep(1.0)
                if more:
                    continue
                wait = self.gap_s if self._gap_since else (1.0 if self._missing else None)
                try:
                    await asyncio.wait_for(changed.wait(), wait)
                except TimeoutError:
                    pass

    def read(self) -> bool:
        """One read of what was committed since the last; True if there may be more at once."""
        self.reads += 1
        with self.db.session() as session, session.connection().connection.cursor() as cursor:
            # The driver's cursor, not the session's results: its rows are plain tuples. The reader
            # handles every event committed, on the server's interpreter, and SQLAlchemy's rows were
            # half of its time there (bench/feed_read.py).
            if self.high < 0:
                cursor.execute("SELECT coalesce(max(id), 0) FROM task_events")
                self.high = self.floor = int(cursor.fetchone()[0])
                return False
            now = time.monotonic()
            cursor.execute(f"{EVENTS} WHERE e.id > %(high)s ORDER BY e.id LIMIT %(n)s", {"high": self.high, "n": READ_BATCH})
            rows = cursor.fetchall()
            more = len(rows) == READ_BATCH
            found: list[tuple] = []
            if self._missing and now >= self._next_late:
                # Only the numbers still missing, asked apart from the new ones (with them, the late
                # ones came first and could fill the LIMIT) and not at every read. Asked as ranges
                # with the ones found excluded, the same query took half the reader's time in the
                # server for the minute the ranges were kept, long after all had been found.
                self._missing = {number: until for number, until in self._missing.items() if until > now}
                self._next_late = now + LATE_EVERY_S
                if self._missing:
                    cursor.execute(f"{EVENTS} WHERE e.id = ANY(%(missing)s) ORDER BY e.id", {"missing": list(self._missing)})
                    found = cursor.fetchall()
        before = self.high
        if not found and rows and rows[0][0] == self.high + 1 and rows[-1][0] == self.high + len(rows):
            out = list(map(Entry, rows))  # numbered without a gap (the usual read): nothing to check one by one
            self.high = rows[-1][0]
            self._gap_since = 0.0
        else:
            out = self._in_order(found + rows, now)
        if out:
            self._publish(Block(out, before, self.high))
        return more and not self._gap_since

    def _in_order(self, rows: list[tuple], now: float) -> list[Entry]:
        """The entries of ``rows`` to publish, past the gaps that may be given up, late ones among them."""
        out: list[Entry] = []
        for row in rows:
            number = row[0]
            if number <= self.high:  # a late one
                if self._missing.pop(number, None) is not None:
                    out.append(Entry(row))
                continue
            if number != self.high + 1:
                if not self._gap_since:
                    self._gap_since = now
                if now - self._gap_since < self.gap_s:
                    break  # a transaction about to commit, probably: wait a little for it
                self._missing.update(dict.fromkeys(range(self.high + 1, number), now + self.late_s))
            self.high = number
            self._gap_since = 0.0
            out.append(Entry(row))
        return out

    def _publish(self, block: Block) -> None:
        with self._lock:
            self._blocks.append(block)
            self._highs.append(block.high)
            self._held += len(block.entries)
            if len(self._blocks) > KEEP_MADE:
                self._blocks[-KEEP_MADE - 1].forget()
            if self._held > 2 * self.capacity:
                cut = 0
                while self._held > self.capacity:
                    gone = self._blocks[cut]
                    self._held -= len(gone.entries)
                    self.floor = max(self.floor, max(e.id for e in gone.entries))
                    cut += 1
                del self._blocks[:cut], self._highs[:cut]
                self._base += cut
        self.published.fire()

    # -- the watchers ----------------------------------------------------------------------------

    def _from_ring(self, after: int, position: int | None) -> tuple[list[Block], int] | None:
        """The blocks from number ``position`` (None: the first that may hold an event after number
        ``after``) and the number of the first; None if the ring no longer (or not yet) holds what
        comes after ``after``."""
        with self._lock:
            if position is None:
                if self.high < 0 or after < self.floor:
                    return None
                position = self._base + bisect.bisect_right(self._highs, after)
            if position < self._base:
                return None
            return self._blocks[position - self._base:], position

    def pace_s(self) -> float:
        """The shortest time between two messages to one watcher: short while few follow, longer with
        many, so that all of them together are sent about ``MESSAGES_PER_S`` messages a second (each
        message costs the server's loop about as much whatever it holds, so batching is what scales)."""
        return max(MIN_PACE_S, self.following / MESSAGES_PER_S)

    async def follow(self, after: int, which: Filter, run: Callable[..., Awaitable[Any]], batch: int = 1000,
                     idle_s: float | None = None) -> AsyncIterator[Batch]:  # fmt: skip
        """The events after number ``after`` that ``which`` lets through, in batches (in number
        order, but for late ones), for as long as the caller iterates; ``run(fn, *args)`` runs a
        query in a thread (the caller's pool). A batch holds what was published since the last one
        (at least one block, else about ``batch`` events); batches come at most every ``pace_s()``.
        With ``idle_s``, an empty batch after that long without one (a keep-alive's turn)."""
        position: int | None = None
        states = sorted(which.states)
        projects = sorted(which.projects) if which.projects is not None else None
        loop = asyncio.get_running_loop()
        last = 0.0
        self.following += 1
        try:
            with self.published.wakened() as published:
                while True:
                    published.clear()
                    found = self._from_ring(after, position)
                    if found is None:  # from the database, until the ring holds what comes next
                        position = None
                        high = self.high
                        rows = await run(self.store.events_after, after, which.workflow_id, which.site, states, batch, projects)
                        if rows:
                            after = rows[-1].id
                            yield Batch(rows)
                        if len(rows) < batch:
                            after = max(after, high)  # everything numbered up to ``high`` had committed before the query
                            if high < 0:
                                await _wait(published, 1.0)  # the reader has not started yet
                        continue
                    blocks, position = found
                    out = Batch(which=which)
                    for block in blocks:
                        position += 1
                        if block.before >= after:  # all of it is new to this watcher: the filter's shared pick
                            picked = block.pick(which)
                            if picked:
                                out.add(block, picked)
                        else:  # the block it joined at, coming from the database: what it has not seen yet
                            # (numbered at or below the block's ``before``: late ones, found passed over)
                            out.add(None, [e for e in block.pick(which) if e.id > after or e.id <= block.before])
                        after = max(after, block.high)
                        if len(out) >= batch:
                            break
                    if out:
                        yield out
                    last = loop.time()
                    if position - self._base < len(self._blocks):
                        continue  # more at once (the batch was full)
                    if not await _wait(published, idle_s) and idle_s is not None:
                        yield Batch()
                    wait = last + self.pace_s() - loop.time()
                    if wait > 0:  # what is published meanwhile goes in the next batch
                        await asyncio.sleep(wait)
        finally:
            self.following -= 1


async def _wait(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event`` (at most ``timeout`` seconds); whether it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False


def watch_filter(workflow_id: int = 0, site: str = "", states: Sequence[str] = (), projects: Sequence[str] | None = None) -> Filter:
    return Filter(workflow_id, site, frozenset(states), frozenset(projects) if projects is not None else None)
