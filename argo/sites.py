"""The sites the coordinator knows: registration, listing and health.

A site that stays silent for longer than the site timeout is down: its unfinished tasks are placed
again (``TaskMove.REPLACED``), and kill orders for its copies wait in its outbox, so that should it
come back, those copies are killed before anything else reaches it.
"""

from __future__ import annotations

import json

from sqlalchemy import select, text

from balsam.argo import graph
from balsam.argo.database import Database
from balsam.argo.db import taskstore
from balsam.argo.db.models import FINAL, Site
from balsam.errors import BadRequest
from balsam.protos import argo_pb2 as pb


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

    def mark_silent_sites_down(self, timeout_s: float) -> list[str]:
        """Sites silent for longer than ``timeout_s`` are down: their unfinished tasks go back to be placed."""
        with self.db.session() as session:
            graph.lock_graph(session)
            down = session.execute(
                text("UPDATE sites SET status = 'down' WHERE status = 'up' AND last_seen_at < now() - make_interval(secs => :t) RETURNING name"),
                {"t": timeout_s},
            ).scalars().all()
            for site in sorted(down):
                reason = f"site {site} is down (silent for more than {timeout_s:g} s): placing again"
                moved = taskstore.replace(session, site, reason)
                # Should the site come back, these orders reach it first: its copies are killed, not run twice.
                graph.kill_orders(session, ((site, t.id, t.attempt) for t in moved), f"placed again elsewhere: {reason}")
        if down:
            self.db.notify(place=True)
        return list(down)
