"""The coordinator, put together: its parts over one database and one change signal.

    workflows  what users ask: workflows, tasks, queries, kills (``balsam.argo.workflows``)
    sites      registration, listing and health of the sites (``balsam.argo.sites``)
    sync       the coordinator's end of the sites' sync channel, leases and fencing (``balsam.argo.sync``)
    deliveries what each site's stream sent it and what the site acknowledged: a stall's evidence (``balsam.argo.deliveries``)
    feed       the one reader of the event log that every watcher follows (``balsam.argo.feed``)

Each part writes tasks only through ``balsam.argo.db.taskstore``.
"""

from __future__ import annotations

from sqlalchemy import Engine

from balsam.argo.database import Database
from balsam.argo.deliveries import Deliveries
from balsam.argo.feed import EventFeed
from balsam.argo.sites import SiteRegistry
from balsam.argo.sync import SyncEndpoint
from balsam.argo.workflows import WorkflowStore


class Coordinator:
    def __init__(self, engine: Engine, auth=None, lease_s: float = 60.0, batches_at_once: int = 2, feed_events: int = 50_000) -> None:
        self.db = Database(engine)
        self.workflows = WorkflowStore(self.db)
        self.sites = SiteRegistry(self.db)
        self.sync = SyncEndpoint(self.db, lease_s, batches_at_once)
        self.deliveries = Deliveries()  # written by the sites' Sync streams, read by the health check
        self.feed = EventFeed(self.db, self.workflows, feed_events)  # read by a task of the gRPC server's loop (server.RpcServer)
        self.auth = auth  # balsam.argo.auth.Authenticator, or None (tests embedding a server without tokens)
        # The server applies the sites' batches in worker processes (balsam.argo.syncworkers.SyncWorkers);
        # None: in this process (a coordinator embedded in a test).
        self.sync_workers = None
        # The server's placement rounds, in a process of their own (balsam.argo.placeworker.PlacementProcess);
        # None: nothing places (a coordinator embedded in a test).
        self.placement = None
