"""Riding out an outage of the site's database: what a launcher does while it cannot write.

Pure decisions plus a small journal. A launcher keeps running its tasks while the database is away;
what they did stays in memory and, in case the launcher itself dies meanwhile, in its journal
(``balsam.site.db.journal``), which whoever finds the launcher lost applies before taking its jobs
back. Reconnection backs off
(0.5 s doubling up to 30 s), with one log line per attempt.

Whether to go on past the lease: a refused connection proves the database's host answers and no
server listens, so the server itself is down, for every launcher alike; when it comes back its start
time restarts every lease (``leases.reap_lost`` counts heartbeats from it), so no launcher is taken
for lost because of the outage. Anything else (timeouts, no route) may be this launcher alone cut off
while the others and the database go on: then, past 3/4 of its lease, it stops its tasks as before,
since its jobs may soon be taken back and run elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
# What psycopg2 says when nothing listens at the database's address, or the server went away under us.
_SERVER_DOWN = ("connection refused", "server closed the connection unexpectedly", "terminating connection due to administrator command",
                "the database system is starting up", "the database system is shutting down")  # fmt: skip


def server_is_down(error: BaseException) -> bool:
    """True when the error shows the database server itself is down (not this launcher cut off)."""
    text = str(error).lower()
    return any(sign in text for sign in _SERVER_DOWN)


@dataclass
class Outage:
    """The state of one outage: since when, how many attempts, when the next one is due."""

    began: float
    # Back in the database within a quarter of the lease after it returns: the lease clock restarts
    # with the server, and a launcher that waited longer could be taken for lost.
    max_backoff_s: float = MAX_BACKOFF_S
    attempts: int = 0
    next_try: float = 0.0
    server_down: bool = True  # every failure so far showed the server itself down
    reason: str = ""

    def failed(self, now: float, error: BaseException) -> str:
        """Note a failed attempt; the one log line for it."""
        self.attempts += 1
        self.server_down = self.server_down and server_is_down(error)
        self.reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        delay = min(self.max_backoff_s, MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (self.attempts - 1))
        self.next_try = now + delay
        kind = "the server is down" if self.server_down else "cannot reach it"
        return f"database unreachable for {now - self.began:.0f} s ({kind}; attempt {self.attempts}), next try in {delay:g} s: {self.reason}"

    def must_stop_tasks(self, now: float, last_renewal: float, lease_s: float) -> bool:
        """Past 3/4 of the lease, stop the tasks unless the server itself is known down."""
        return now - last_renewal > 0.75 * lease_s and not self.server_down
