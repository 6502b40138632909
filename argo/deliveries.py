"""What each site's sync stream handed it, and what the site said it applied: the evidence of a stall.

A site is stalled when it is heard (its heartbeats come) but does not apply what it is sent. Judged
from the outbox, the coordinator took its own backlog for the site's: a message waits there just
as long when the coordinator has not yet sent it (its stream busy applying the site's events, a
placement round of a million tasks queueing thousands) or has not yet applied the site's
acknowledgement (queued behind other sites' batches). At a hundred sites every site was marked
stalled that way within 77 s of a large submission, and each mark placed its thousands of tasks
again (docs/scaling.md, "A hundred sites and a million tasks"). So the stream itself keeps the
evidence: when it handed each envelope of messages to the transport, and the highest number the
site acknowledged as the stream read it, before that acknowledgement waits for anything of ours.

Kept in memory, a record a site, across its streams: a site whose every stream breaks before it
applies what it was handed (its database refusing the writes) is stalled as surely as one that keeps
a stream open and says nothing. A coordinator that restarts has handed nothing yet, so it blames
nobody until it has. The streams' event loop writes; the health check reads, from its thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Site:
    acked: int  # the highest of our messages the site said it applied
    acked_at: float  # time.monotonic() when that number last rose (or the record began)
    unacked: deque[tuple[int, float]] = field(default_factory=deque)  # (last number of an envelope handed over, when)


class Deliveries:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sites: dict[str, _Site] = {}

    def opened(self, site: str, applied: int, afresh: bool = False) -> None:
        """A stream of the site began: the site said it applied our messages up to ``applied``.
        ``afresh``: it comes back from being marked down, its unconfirmed tasks already placed elsewhere;
        what it was handed before counts from now (else it would be marked stalled as it returns,
        before its new stream could hand it anything)."""
        with self._lock:
            record = self._sites.get(site)
            if record is None or afresh or applied < record.acked:  # new to us, back, or its numbering began again
                self._sites[site] = _Site(applied, time.monotonic())
                return
        self.acknowledged(site, applied)

    def sent(self, site: str, last_seq: int) -> None:
        """Messages up to ``last_seq`` were handed to the site's stream."""
        with self._lock:
            record = self._sites.get(site)
            if record is not None and last_seq > record.acked:
                record.unacked.append((last_seq, time.monotonic()))

    def acknowledged(self, site: str, seq: int) -> None:
        """The site said it applied our messages up to ``seq`` (as its stream read it)."""
        with self._lock:
            record = self._sites.get(site)
            if record is None or seq <= record.acked:
                return
            record.acked, record.acked_at = seq, time.monotonic()
            while record.unacked and record.unacked[0][0] <= seq:
                record.unacked.popleft()

    def overdue(self, timeout_s: float) -> list[str]:
        """The sites that were handed a message more than ``timeout_s`` ago and have acknowledged
        nothing new for as long: what they were sent waits at them, not at us."""
        now = time.monotonic()
        with self._lock:
            return sorted(site for site, r in self._sites.items()
                          if r.unacked and now - r.unacked[0][1] > timeout_s and now - r.acked_at > timeout_s)  # fmt: skip
