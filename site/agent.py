"""The site agent: a daemon that keeps a site's batch jobs and leases in order.

Every ``elastic_queue.interval_s`` seconds, and at once (at most every ``MIN_TICK_GAP_S``) when the
database says jobs became runnable (the launchers' NOTIFY), it
1. takes back the jobs of launchers whose lease expired (even with no launcher running),
2. brings the site's batch jobs up to date with the scheduler, retries cancellations and
   submissions that failed,
3. when the elastic queue is enabled, submits and cancels launcher batch jobs as
   ``balsam.site.elastic.plan`` decides from the backlog, the batch jobs and the limits.
Each step's failure (a scheduler command erroring, the database restarting) is logged and the
step is tried again next round; the agent itself keeps going.

``balsam site start`` runs it detached (``python -m balsam.site.agent --site SITE``) with its pid
file, log and a status file in ``SITE/logs``; the pid file is locked while it runs, so two agents
never serve one site.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from balsam import daemon
from balsam.errors import BalsamError
from balsam.site import elastic
from balsam.site.access import check_site_secrets, protect_site, site_umask
from balsam.site.api import Site
from balsam.site.batch import LIVE_STATES, BatchQueue, LaunchRequest
from balsam.site.db import leases
from balsam.site.db.notify import RUNNABLE_CHANNEL, Listener
from balsam.site.db.models import BatchJob
from balsam.site.perf_data import FitCache
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.scheduler.base import SchedulerError
from balsam.site.settings import SiteSettings, settings_from_argv

log = logging.getLogger("balsam.site.agent")

PID_FILE, LOG_FILE, STATUS_FILE = "agent.pid", "agent.log", "agent-status.json"
MAX_BACKOFF_S = 300.0
MIN_TICK_GAP_S = 0.2  # a flood of NOTIFYs (a bulk submit) costs at most five rounds a second

# Jobs waiting to start: runnable and not yet running, whether or not a launcher has taken them
# (a launcher takes many ahead; they are still work its nodes have to do).
# Jobs with no wall time are grouped by app as well, so each app's performance model can stand in
# for the estimate; the mean and largest value of the app's feature (``perf.features``, a map
# passed as JSON) are all a linear model needs for a whole group. A value that is not a plain
# number (or would overflow a float) counts as missing rather than failing the query. The
# braces of the pattern are doubled for str.format.
_BACKLOG = """
SELECT CASE WHEN j.wall_time_min IS NULL THEN a.name END AS app, j.nodes, j.node_packing_count,
       j.wall_time_min AS minutes, count(*) AS n, avg(f.x) AS mean_x, max(f.x) AS max_x
FROM jobs j
JOIN apps a ON a.id = j.app_id
CROSS JOIN LATERAL (
    SELECT j.parameters ->> (CAST(:features AS jsonb) ->> a.name) AS value
) v
CROSS JOIN LATERAL (
    SELECT CASE WHEN j.wall_time_min IS NULL AND v.value ~ '^\\s*[-+]?([0-9]{{1,15}}(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]{{1,2}})?\\s*$'
                THEN CAST(v.value AS double precision) END AS x
) f
WHERE (j.state IN ('RESTART_READY', 'STAGED_IN', 'PREPROCESSED') OR (j.state = 'READY' AND j.stage_in = '[]'::jsonb))
  {serial}
GROUP BY 1, 2, 3, 4
"""


class Agent:
    def __init__(self, site: Site, queue: BatchQueue | None = None) -> None:
        self.site = site
        self.settings = site.settings
        self.queue = queue or BatchQueue(site)
        self.status: dict[str, Any] = {"pid": os.getpid(), "started_at": _iso(), "errors": {}}
        self._submit_failures = 0
        self._next_submit_at = 0.0
        self.argo_sync = None
        self.transfers = None
        self.triggers = None
        self._unlinked = True  # see leave_argo
        self.fits = FitCache()

    def tick(self) -> dict[str, Any]:
        """One round of every step; returns (and keeps) a status report."""
        errors: dict[str, str] = {}
        for step in (self.supervise_database, self.leave_argo, self.reap_leases, self.follow_batch_jobs, self.run_elastic_queue):
            try:
                step()
            except (SchedulerError, BalsamError) as exc:
                errors[step.__name__] = str(exc)
                log.warning("%s failed (will retry): %s", step.__name__, exc)
            except Exception as exc:  # the database restarting, a bug: log it, keep the daemon up
                errors[step.__name__] = f"{type(exc).__name__}: {exc}"
                log.exception("%s failed (will retry)", step.__name__)
        self.status.update(last_tick=_iso(), errors=errors, batch_jobs=self._batch_counts())
        return self.status

    def leave_argo(self) -> None:
        """A site no longer linked stops keeping its events for the coordinator it may have left."""
        if self._unlinked:
            return
        from balsam.site.argo_sync import unlink

        unlink(self.site)
        self._unlinked = True

    def supervise_database(self) -> None:
        """Start the site's embedded database again if it died (launchers ride out the gap, and a
        restart counts as every launcher's renewal: ``leases.reap_lost``). Logs why it was down."""
        if self.settings.database.mode != "embedded":
            return
        try:
            with self.site.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            failure = str(exc.orig or exc).strip().splitlines()[0]
        server = EmbeddedPostgres(self.settings)
        if server.is_running():
            raise BalsamError(f"the database does not answer although its server runs: {failure}")
        why = _why_down(server)
        server.start()
        self.site.engine.dispose()  # the pooled connections died with the old server
        self.status["database_restarts"] = self.status.get("database_restarts", 0) + 1
        log.warning("the database of site %s was not running (%s; %s); started it again", self.settings.name, failure, why)

    def reap_leases(self) -> None:
        with self.site.session() as session:
            for launcher_id, taken in leases.reap_lost(session, self.settings.logs_dir):
                log.warning("launcher %s lost its lease; %d job(s) taken back", launcher_id, len(taken))

    def follow_batch_jobs(self) -> None:
        self.queue.sync()
        self.queue.retry_deletions()
        if self._may_submit():
            self.queue.submit_pending()
            self._after_submissions(failed=self._pending_left())

    def run_elastic_queue(self) -> None:
        limits = self.settings.elastic_queue
        if not limits.enabled:
            self.status["elastic_queue"] = "disabled"
            return
        backlog = self.backlog()
        allocations = self.allocations()
        windows = []
        if limits.use_backfill:
            try:
                windows = [w for w in self.queue.scheduler.backfill() if self._may_use_queue(w.queue)]
            except SchedulerError as exc:
                log.warning("backfill windows unavailable this round: %s", exc)
        # One host has one launcher's worth of nodes: more launchers there would only fight for its cores.
        budget = 1 if self.queue.scheduler.name == "local" else limits.max_total_nodes
        decision = elastic.plan(backlog, allocations, limits, windows, node_budget=budget)
        self.status["elastic_queue"] = {
            "backlog_jobs": sum(s.count for s in backlog),
            "backlog_node_minutes": round(sum(s.node_minutes for s in backlog), 1),
            "unservable": decision.unservable,
        }
        for note in decision.unservable:
            log.info("elastic queue: %s", note)
        for batch_id in decision.cancel:
            log.info("elastic queue: cancelling queued batch job %s, no longer needed", batch_id)
            try:
                self.queue.cancel(batch_id)
            except SchedulerError as exc:
                log.warning("elastic queue: cancel of batch job %s failed (will retry): %s", batch_id, exc)
        if decision.submit and not self._may_submit():
            log.info("elastic queue: holding back %d submission(s) after scheduler errors", len(decision.submit))
            return
        for submission in decision.submit:
            log.info("elastic queue: submitting %d node(s) for %d min: %s", submission.nodes, submission.minutes, submission.reason)
            request = LaunchRequest(
                nodes=submission.nodes, minutes=submission.minutes, job_mode=limits.job_mode, queue=submission.queue,
                until_idle=True, linger_s=limits.linger_s, origin="elastic",
            )  # fmt: skip
            try:
                self.queue.submit(request, retry_later=True)
            except SchedulerError:
                self._after_submissions(failed=True)
                return  # the row stays pending; retried after the back-off
        if decision.submit:
            self._after_submissions(failed=False)

    def _may_use_queue(self, queue: str) -> bool:
        """A backfill window's queue is usable if the site allows it (or names it, or names none)."""
        scheduler = self.settings.scheduler
        if not queue or scheduler.allowed_queues:
            return not queue or queue in scheduler.allowed_queues
        return not scheduler.queue or queue == scheduler.queue

    def backlog(self) -> list[elastic.JobShape]:
        """The waiting work; a job without a wall time counts its app's predicted run time, else ``default_job_min``."""
        from balsam.site import perfmodel

        limits, perf = self.settings.elastic_queue, self.settings.perf
        serial = "AND j.nodes = 1 AND j.ranks_per_node = 1" if limits.job_mode == "serial" else ""
        with self.site.session() as session:
            rows = session.execute(text(_BACKLOG.format(serial=serial)), {"features": json.dumps(perf.features)}).all()
        models: dict[str, perfmodel.Model] = {}
        unestimated = {r.app for r in rows if r.minutes is None}
        if perf.elastic_queue and unestimated:
            # Fits kept a minute (perf_data.FitCache), made in a session of their own: a failure
            # here must cost only the estimates, never the elastic queue itself.
            try:
                models = self.fits.models(self.site, self.settings, unestimated)
            except Exception:
                log.exception("performance models unavailable this round; counting %g min per job", limits.default_job_min)
        shapes = []
        for r in rows:
            estimate = None
            if r.minutes is None and r.app in models:
                try:
                    estimate = perfmodel.backlog_minutes(models[r.app], r.nodes, r.n, r.mean_x, r.max_x, perf.wall_time_margin)
                except BalsamError:  # a node count never run, or no feature values: the default holds
                    estimate = None
            if estimate:
                shapes.extend(elastic.JobShape(r.nodes, minutes, count, r.node_packing_count) for minutes, count in estimate)
            else:
                minutes = limits.default_job_min if r.minutes is None else float(r.minutes)
                shapes.append(elastic.JobShape(nodes=r.nodes, minutes=minutes, count=r.n, packing=r.node_packing_count))
        return shapes

    def allocations(self) -> list[elastic.Allocation]:
        now = datetime.now(UTC)
        with self.site.session() as session:
            rows = session.scalars(select(BatchJob).where(BatchJob.state.in_(LIVE_STATES), BatchJob.state != "pending_deletion")).all()
        result = []
        for row in rows:
            running = row.state == "running"
            left = float(row.wall_time_min)
            if running and row.started_at:
                left = math.ceil(left - (now - row.started_at).total_seconds() / 60)
            result.append(elastic.Allocation(row.id, running, row.nodes, left, elastic=row.origin == "elastic"))
        return result

    def _may_submit(self) -> bool:
        return time.monotonic() >= self._next_submit_at

    def _after_submissions(self, failed: bool) -> None:
        # Back off exponentially while the scheduler refuses, so an outage costs a few tries, not hundreds.
        self._submit_failures = self._submit_failures + 1 if failed else 0
        delay = min(MAX_BACKOFF_S, self.settings.elastic_queue.interval_s * 2 ** (self._submit_failures - 1)) if failed else 0
        self._next_submit_at = time.monotonic() + delay

    def _pending_left(self) -> bool:
        return self.queue.counts().get("pending_submission", 0) > 0

    def _batch_counts(self) -> dict[str, int]:
        try:
            return self.queue.counts()
        except Exception:  # reported as unknown; the tick's own errors say why
            return {}

    def start_argo_sync(self, stop: threading.Event, wait_s: float = 10.0) -> None:
        """Run the sync with the Argo coordinator in a thread, when the site is linked to one.

        Waits up to ``wait_s`` for the first exchange, so that kill orders for stale copies of
        tasks (placed elsewhere while this site was away) are applied before launchers start here.
        """
        from balsam.site.argo_sync import ArgoSync

        self.argo_sync = ArgoSync(self.site)
        thread = threading.Thread(target=self.argo_sync.run, args=(stop,), name="argo-sync", daemon=True)
        thread.start()
        if not self.argo_sync.first_sync.wait(wait_s):
            log.warning("no first sync with Argo at %s within %g s; going on", self.settings.argo.address, wait_s)

    def start_transfers(self, stop: threading.Event) -> None:
        """Stage files in and out in a thread of its own: a long copy or a slow Globus poll must
        not hold up the batch jobs, nor they the transfers."""
        from balsam.site.transfers import TransferService

        self.transfers = TransferService(self.site)
        threading.Thread(target=self.transfers.run, args=(stop,), name="transfers", daemon=True).start()

    def start_triggers(self, stop: threading.Event) -> None:
        """Watch the folders of the site's trigger rules in a thread of its own (``site/triggers.py``):
        a job per complete file within a tick, never held up by a slow scheduler command."""
        from balsam.site.triggers import TriggerWatcher

        self.triggers = TriggerWatcher(self.site)
        threading.Thread(target=self.triggers.run, args=(stop,), name="triggers", daemon=True).start()

    def start_wakeups(self, stop: threading.Event) -> threading.Event:
        """An event set when jobs become runnable (NOTIFY) or the agent stops: a task Argo assigns to a
        site with no launcher gets one within a tick's time, not after up to ``interval_s`` (10 s by
        default) of waiting for the next round."""
        wake = threading.Event()
        listener = Listener(self.site.engine, [RUNNABLE_CHANNEL])

        def listen() -> None:
            while not stop.is_set():
                if listener.wait(1.0):
                    wake.set()
            listener.close()

        def on_stop() -> None:
            stop.wait()
            wake.set()

        threading.Thread(target=listen, name="agent-listen", daemon=True).start()
        threading.Thread(target=on_stop, name="agent-stop", daemon=True).start()
        return wake

    def run(self, stop: threading.Event) -> None:
        interval = self.settings.elastic_queue.interval_s
        status_file = self.settings.logs_dir / STATUS_FILE
        log.info("agent of site %s started (pid %d, scheduler %s, elastic queue %s, Argo %s)", self.settings.name, os.getpid(),
                 self.queue.scheduler.name, "on" if self.settings.elastic_queue.enabled else "off",
                 self.settings.argo.address or "none")  # fmt: skip
        if self.settings.argo.address:
            self.start_argo_sync(stop)
        else:
            self._unlinked = False  # done in the first tick that reaches the database
        self.start_transfers(stop)
        self.start_triggers(stop)
        wake = self.start_wakeups(stop)
        while not stop.is_set():
            started = time.monotonic()
            wake.clear()
            report = self.tick()
            if self.argo_sync is not None:
                report["argo"] = dict(self.argo_sync.status)
            if self.transfers is not None:
                report["transfers"] = dict(self.transfers.status)
            if self.triggers is not None:
                report["triggers"] = dict(self.triggers.status)
            _write_json(status_file, report)
            stop.wait(max(0.0, MIN_TICK_GAP_S - (time.monotonic() - started)))
            wake.wait(max(0.0, interval - (time.monotonic() - started)))
        self.status["stopped_at"] = _iso()
        _write_json(status_file, self.status)
        log.info("agent stopped")


# -- the daemon ----------------------------------------------------------------------------------


def start_agent(settings: SiteSettings, wait_s: float = 15.0) -> int:
    """Start the agent detached; returns its pid once it holds its pid file (or raises, with its log)."""
    check_site_secrets(settings)  # refused before a daemon is started, not only in its log
    settings.logs_dir.mkdir(exist_ok=True)
    return daemon.start_daemon(
        [sys.executable, "-m", "balsam.site.agent", "--site", str(settings.path)], settings.logs_dir / PID_FILE,
        settings.logs_dir / "agent.out", settings.path, f"the agent of site {settings.name}", lambda: _tail(settings), wait_s,
    )  # fmt: skip


def stop_agent(settings: SiteSettings, wait_s: float = 30.0) -> int | None:
    """Stop the running agent (SIGTERM, then SIGKILL after ``wait_s``); its pid, or None if none ran."""
    return daemon.stop_daemon(settings.logs_dir / PID_FILE, wait_s)


def agent_pid(settings: SiteSettings) -> int | None:
    """The pid of the site's running agent, if one runs."""
    return daemon.daemon_pid(settings.logs_dir / PID_FILE)


def agent_report(settings: SiteSettings) -> dict[str, Any]:
    """What `balsam site status` shows about the agent."""
    pid = agent_pid(settings)
    report: dict[str, Any] = {"running": pid is not None, "pid": pid}
    try:
        report.update({k: v for k, v in json.loads((settings.logs_dir / STATUS_FILE).read_text()).items() if k != "pid"})
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    return report


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_argv("python -m balsam.site.agent", "Run a Balsam site's agent in the foreground.", argv)
    try:
        check_site_secrets(settings)  # a password others can read is one given away: do not serve it
        protect_site(settings)
    except BalsamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def serve(stop: threading.Event, ready) -> None:
        os.umask(site_umask(settings))  # what the agent writes (staged files, logs) is as private as the site
        from balsam.site.web.serve import start_site_web

        with Site(settings) as site:
            agent = Agent(site)
            web = start_site_web(site)  # its dashboard, when the settings give one an address (docs/web.md)
            try:
                ready()  # only now: a pid in the file means an agent that is up and connected (and serving)
                agent.run(stop)
            finally:
                if web is not None:
                    web.stop()

    return daemon.run_daemon(settings.logs_dir / PID_FILE, settings.logs_dir / LOG_FILE, f"the agent of site {settings.name}", serve)


def _why_down(server: EmbeddedPostgres) -> str:
    """What the database's own log and files say of why it is down, in one line."""
    said = []
    if (server.pgdata / "postmaster.pid").exists():
        said.append("it did not shut down cleanly (postmaster.pid left behind: killed, or its host crashed)")
    else:
        said.append("it was shut down")
    try:
        tail = [line for line in server.log_file.read_text(errors="replace").splitlines() if line.strip()][-1:]
    except FileNotFoundError:
        tail = []
    if tail:
        said.append(f"its log ends: {tail[0][:300]}")
    return "; ".join(said)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


def _tail(settings: SiteSettings, lines: int = 8) -> str:
    return daemon.tail_files([settings.logs_dir / "agent.out", settings.logs_dir / LOG_FILE], lines)


def _iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


if __name__ == "__main__":
    sys.exit(main())
