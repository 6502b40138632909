"""How fast work ends and how long the rest will take: one estimate for every progress display.

``argo watch`` (its live display), the launcher's progress log line and the site's dashboard all
say "N tasks ended per second, about T left"; this is where that figure comes from, so they agree.
The rate is over a sliding window (the last ``window_s`` seconds of endings, so it follows a
change of pace within a minute) and counts from the oldest ending in the window, so a run that
began 10 s ago is not diluted over the whole window.
"""

from __future__ import annotations

import time
from collections import deque


class Throughput:
    """Endings (tasks finished or failed) at given times; their rate and the time left at that rate."""

    def __init__(self, window_s: float = 60.0) -> None:
        if window_s <= 0:
            raise ValueError(f"the window must be positive, got {window_s}")
        self.window_s = window_s
        self._ends: deque[tuple[float, int]] = deque()  # (time, how many ended then), oldest first
        self.total = 0

    def add(self, count: int = 1, at: float | None = None) -> None:
        """``count`` endings at ``at`` (Unix seconds; default: now). Out-of-order times are kept in order."""
        if count <= 0:
            return
        at = time.time() if at is None else at
        self.total += count
        # A late report (sites' and nodes' endings arrive out of time order) goes where its time
        # belongs, found from the newest end: usually a step or two, where a sort of the whole window
        # on every late one cost the launcher's loop and `argo watch` in proportion to the rate.
        place = len(self._ends)
        while place and self._ends[place - 1][0] > at:
            place -= 1
        self._ends.insert(place, (at, count))

    def rate(self, now: float | None = None) -> float:
        """Endings per second over the window up to ``now`` (0.0 before two endings were seen)."""
        now = time.time() if now is None else now
        while self._ends and self._ends[0][0] < now - self.window_s:
            self._ends.popleft()
        if not self._ends:
            return 0.0
        count = sum(n for _, n in self._ends)
        span = now - self._ends[0][0]
        if span < 1.0:  # too short to say (a burst replayed at once): as if over one second
            span = 1.0
        return count / span

    def time_left_s(self, remaining: int, now: float | None = None) -> float | None:
        """Seconds until ``remaining`` more end at the current rate (None: no rate yet)."""
        if remaining <= 0:
            return 0.0
        rate = self.rate(now)
        return remaining / rate if rate > 0 else None


def duration_text(seconds: float | None) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``, ``1.5 d``; ``?`` when not known."""
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
