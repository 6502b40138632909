"""The sites the coordinator knows: registration, listing and health.

A site silent for longer than the site timeout is down; one that is heard but does not apply what it
is sent for as long is stalled. Either way, the tasks it was never allowed to start (their assignment
not confirmed, see ``balsam.argo.sync``) are placed elsewhere at once (``TaskMove.REPLACED``), and
kill orders for its copies wait in its outbox, fenced: no later assignment is confirmed to it until
it has applied them. The tasks it may be running are held: placed elsewhere only once its lease has
run out and its launchers have surely ended (their batch jobs' wall time, or the owner's word).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from balsam.argo import graph
from balsam.argo.database import Database
from balsam.argo.db import taskstore
from balsam.argo.db.models import FINAL, Site
from balsam.errors import BadRequest, BalsamError, NotFound
from balsam.pgcopy import copy_rows
from balsam.protos import argo_pb2 as pb


# What the health check looks for (of ``sites``; :t the site timeout, :m the lease margin, :overdue
# the sites whose streams handed them messages they have not acknowledged for as long, from
# ``balsam.argo.deliveries``): silent sites, stalled ones (heard, but what they were sent waits at
# them), and down ones that surely run nothing.
_SILENT = "status <> 'down' AND last_seen_at < now() - make_interval(secs => :t)"
_STALLED = "status = 'up' AND name = ANY(:overdue)"
_ENDED = ("status = 'down' AND lease_until < now() - make_interval(secs => :m) AND launchers_end < now() - make_interval(secs => :m)"
          f" AND EXISTS (SELECT 1 FROM tasks t WHERE t.site = sites.name AND t.state NOT IN {FINAL})")


class SiteRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, request: pb.RegisterRequest) -> bool:
        """Add the site, or update what it offers; True when it is new."""
        if not request.name or len(request.name) > 200 or "/" in request.name or ":" in request.name:
            raise BadRequest(f"site name {request.name!r} must be 1-200 characters without '/' or ':'")
        if request.nodes < 0 or request.max_tasks < 0:
            raise BadRequest("nodes and max_tasks must not be negative")
        values = {
            "apps": json.dumps(sorted(set(request.apps))), "nodes": max(1, request.nodes), "scheduler": request.scheduler,
            "endpoint": request.transfer_endpoint, "max_tasks": request.max_tasks, "name": request.name,
        }  # fmt: skip
        with self.db.session() as session:
            created = session.execute(
                text(
                    "INSERT INTO sites (name, apps, nodes, scheduler, transfer_endpoint, max_tasks, status, heartbeat)"
                    " VALUES (:name, CAST(:apps AS jsonb), :nodes, :scheduler, :endpoint, :max_tasks, 'up', '{}')"
                    " ON CONFLICT (name) DO UPDATE SET apps = excluded.apps, nodes = excluded.nodes,"
                    "  scheduler = excluded.scheduler, transfer_endpoint = excluded.transfer_endpoint,"
                    "  max_tasks = excluded.max_tasks, last_seen_at = now()"
                    " RETURNING (xmax = 0) AS created"
                ),
                values,
            ).scalar_one()
            session.execute(text("INSERT INTO site_counters (site) VALUES (:name) ON CONFLICT DO NOTHING"), {"name": request.name})
        self.db.notify(place=True)
        return bool(created)

    def sites(self) -> list[tuple[Site, int]]:
        """Every site with its count of placed tasks that have not ended."""
        with self.db.session() as session:
            rows = session.scalars(select(Site).order_by(Site.name)).all()
            assigned = dict(
                session.execute(text(f"SELECT site, count(*) FROM tasks WHERE site IS NOT NULL AND state NOT IN {FINAL} GROUP BY site")).all()
            )
            return [(row, assigned.get(row.name, 0)) for row in rows]

    def forgive_downtime(self) -> None:
        """At start-up: the sites could not reach a stopped coordinator, so their silence until now
        does not count against them (else a restart longer than the timeout would place every task
        again)."""
        with self.db.session() as session:
            session.execute(text("UPDATE sites SET last_seen_at = now() WHERE status = 'up'"))

    def check_health(self, timeout_s: float, overdue: Sequence[str] = ()) -> list[str]:
        """Mark sites down (silent beyond ``timeout_s``) or stalled (the ``overdue`` ones: heard, but not
        acknowledging what their streams handed them for as long), place elsewhere what they surely never
        started, and, at a down site whose lease has run out and whose launchers have all ended,
        everything else. What changed, in words."""
        overdue = list(overdue)
        margin = lease_margin_s(timeout_s)
        said: list[str] = []
        with self.db.session() as session:
            # Nearly always nothing is to be done: seen without the whole graph's lock, which would stop
            # every workflow's writers while it is taken (the same three conditions as below).
            if not session.scalar(text(
                f"SELECT EXISTS (SELECT 1 FROM sites WHERE {_SILENT}) OR EXISTS (SELECT 1 FROM sites WHERE {_STALLED})"
                f" OR EXISTS (SELECT 1 FROM sites WHERE {_ENDED})"
            ), {"t": timeout_s, "m": margin, "overdue": overdue}):  # fmt: skip
                return said
        with self.db.session() as session:
            graph.lock_graph(session)
            down = session.execute(
                text(f"UPDATE sites SET status = 'down' WHERE {_SILENT} RETURNING name"),
                {"t": timeout_s},
            ).scalars().all()  # fmt: skip
            for site in sorted(down):
                said.append(self._lost_unconfirmed(session, site, f"site {site} is down (silent for more than {timeout_s:g} s)"))
            stalled = session.execute(
                text(f"UPDATE sites SET status = 'stalled' WHERE {_STALLED} RETURNING name, channel_error"),
                {"overdue": overdue},
            ).all()  # fmt: skip
            for site, error in stalled:
                why = f"site {site} stalled: it has not applied what it was sent for more than {timeout_s:g} s"
                said.append(self._lost_unconfirmed(session, site, why + (f" (its channel: {error})" if error else "")))
            ended = session.execute(
                text(f"SELECT name FROM sites WHERE {_ENDED} ORDER BY name"),
                {"m": margin},
            ).scalars().all()  # fmt: skip
            for site in ended:
                why = f"site {site} is down, its lease has run out and its launchers have ended: nothing of it runs"
                moved = taskstore.replace(session, site, why + "; placing again", unconfirmed_only=False)
                graph.kill_orders(session, ((site, t.id, t.attempt) for t in moved), f"placed again elsewhere: {why}")
                graph.site_event(session, site, f"{why}; {len(moved)} task(s) placed again")
                said.append(f"{why}: {len(moved)} task(s) placed again")
        if said:
            self.db.notify(place=True)
        return said

    @staticmethod
    def _lost_unconfirmed(session: Session, site: str, why: str) -> str:
        """Place elsewhere the site's tasks it was never allowed to start, fenced until it has killed them."""
        # The site's row is held until the fences commit: an acknowledgement waits for it (it locks
        # that row) and then sees them, so it cannot confirm an assignment being fenced here.
        session.execute(text("SELECT 1 FROM sites WHERE name = :s FOR NO KEY UPDATE"), {"s": site})
        moved = taskstore.replace(session, site, why + ": placing again what it never started", unconfirmed_only=True)
        kills = graph.kill_orders(session, ((site, t.id, t.attempt) for t in moved), f"placed again elsewhere: {why}")
        fences = [(site, t.assigned_seq, kills[t.id]) for t in moved if t.assigned_seq is not None]
        if fences:
            copy_rows(session, "site_fences", ("site", "assignment_seq", "kill_seq"), fences)
        held = session.scalar(text(f"SELECT count(*) FROM tasks WHERE site = :s AND state NOT IN {FINAL}"), {"s": site})
        said = f"{why}; {len(moved)} task(s) it never started placed again"
        if held:
            said += f", {held} held until it returns or surely runs nothing (it may be running them)"
        graph.site_event(session, site, said)
        return said

    def mark_lost(self, name: str) -> int:
        """The owner says nothing runs at the site any more: its held tasks go elsewhere once its lease
        has surely run out. Refused while the site is heard. The number of tasks held there."""
        with self.db.session() as session:
            graph.lock_graph(session)
            row = session.get(Site, name, with_for_update=graph.SITE_ROW_LOCK)
            if row is None:
                raise NotFound(f"no site {name!r}")
            if row.status != "down":
                raise BalsamError(f"site {name} is {row.status}: it is heard, so it may be running its tasks; it can be marked lost once down")
            row.launchers_end = func.now()
            graph.site_event(session, name, f"site {name} marked lost by the owner: its tasks go elsewhere once its lease has run out")
            held = session.scalar(text(f"SELECT count(*) FROM tasks WHERE site = :s AND state NOT IN {FINAL}"), {"s": name})
        self.db.notify()
        return held


def lease_margin_s(lease_s: float) -> float:
    """How long past a lease's end the coordinator waits before it counts on the lease being over:
    the site's clock may run a little faster than ours (1% of the lease, and at least 2 s)."""
    return max(2.0, 0.01 * lease_s)
