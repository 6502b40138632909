"""The site's transfer service: stage-in before a run, stage-out after it, run by the site agent.

A job with files to stage in waits in READY (launchers do not take it); one with files to stage
out waits in POSTPROCESSED once its launcher let go of it. Each round (``transfer.interval_s``)
the service

1. turns such jobs' declared files into ``transfer_items`` rows, each checked against the folders
   it may touch (a failure there fails the job with the reason, before anything is copied);
2. polls the backend of every active ``transfer_tasks`` row, and settles its items: done, or
   tried again after a delay, or failed once their retries are used;
3. submits pending items in batches (``transfer_plan.batches``), within the site's transfer slots;
4. moves each job whose items have all ended: READY -> STAGED_IN, or POSTPROCESSED -> STAGED_OUT
   -> JOB_FINISHED, or -> FAILED naming the file and the reason; its items are then deleted.

Every step is its own transaction and can be repeated: an agent that stops at any point finds
its tasks in the database when it starts again (a local copy that was cut short is simply
tried again; a Globus task is polled again by its id).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from balsam.errors import BalsamError
from balsam.pgcopy import copy_rows
from balsam.site import transfer_plan
from balsam.site.access import private_folder
from balsam.site.api import Site
from balsam.site.db import jobstore
from balsam.site.db.notify import RUNNABLE_CHANNEL, Listener
from balsam.site.settings import SiteSettings
from balsam.site.workdir import workdir
from balsam.states import JobState
from balsam.transfer.base import Backend, Item, Location, TaskStatus, TransferError
from balsam.transfer.confine import remote_inside, resolve_inside, shown_path
from balsam.transfer.local import link_at_once
from balsam.transfer.rsync import ssh_roots

log = logging.getLogger("balsam.site.transfers")
S = JobState
DISCOVER_BATCH = 5000
ERROR_TAIL = 4000


class SiteLocations:
    """How this site names its own files to others, and recognises them in others' locations."""

    def __init__(self, settings: SiteSettings) -> None:
        self.transfer = settings.transfer
        self.site_path = Path(os.path.realpath(settings.path))  # as resolve_inside gives paths back

    def _globus_root(self) -> str:
        return self.transfer.globus_root or str(self.site_path)

    def to_local(self, location: Location) -> Location:
        """A location at this site's own Globus collection, under the site folder, is a local path; so is
        one at this site's own ssh host (``transfer.ssh_host``)."""
        if location.scheme == "ssh" and self.transfer.ssh_host and location.endpoint == self.transfer.ssh_host:
            return Location.local(location.path)
        endpoint = self.transfer.globus_endpoint
        if location.scheme != "globus" or not endpoint or location.endpoint != endpoint:
            return location
        root = self._globus_root().rstrip("/")
        if location.path == root or location.path.startswith(root + "/"):
            return Location.local(str(self.site_path) + location.path[len(root) :])
        return location

    def as_globus(self, path: Path) -> Location:
        """A path in the site folder as the site's Globus collection shows it."""
        if not self.transfer.globus_endpoint:
            raise TransferError("the other side is a Globus location, but this site has no transfer.globus_endpoint setting")
        try:
            relative = Path(os.path.realpath(path)).relative_to(self.site_path)
        except ValueError:
            raise TransferError(f"{path} is not inside the site folder {self.site_path}, so the site's collection does not show it") from None
        return Location("globus", self.transfer.globus_endpoint, f"{self._globus_root().rstrip('/')}/{relative}")

    def output_location(self, path: Path) -> Location:
        """Where others find a file this site made: at its Globus collection if it has one, else at its
        ssh host if it names one, else as a path on the filesystem others are taken to share."""
        if self.transfer.globus_endpoint:
            return self.as_globus(path)
        if self.transfer.ssh_host:
            return Location("ssh", self.transfer.ssh_host, str(path))
        return Location.local(str(path))


class TransferService:
    def __init__(self, site: Site, backends: dict[str, Backend] | None = None) -> None:
        self.site = site
        self.settings = site.settings.transfer
        self.site_path = site.settings.path
        self.data_dir = site.settings.data_dir
        self._backends: dict[str, Backend] = dict(backends or {})
        self.wake = threading.Event()  # set when a round is worth running now
        self.locations = SiteLocations(site.settings)
        self.status: dict[str, Any] = {}

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Rounds until ``stop``: at once when a job needs files moved (NOTIFY) or a local copy ended,
        else every ``interval_s`` (Globus tasks are polled)."""
        listener = Listener(self.site.engine, [RUNNABLE_CHANNEL])

        def listen() -> None:
            while not stop.is_set():
                if listener.wait(1.0):
                    self.wake.set()

        threading.Thread(target=listen, name="transfers-listen", daemon=True).start()
        while not stop.is_set():
            self.wake.clear()
            try:
                self.round()
            except Exception:  # the database restarting, a bug: log it, try again next round
                log.exception("transfer round failed (will retry)")
            self.wake.wait(self.settings.interval_s)
        self.wake.set()
        listener.close()
        # Copies cut short leave only temporary names; their files are tried again at the next start.
        for backend in self._backends.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()

    def round(self) -> dict[str, Any]:
        """One pass of every step; returns counts for the agent's status report."""
        self.discover()
        self.poll()
        self.submit()
        self.settle()
        with self.site.session() as session:
            items = dict(session.execute(text("SELECT state, count(*) FROM transfer_items GROUP BY state")).all())
            active = session.scalar(text("SELECT count(*) FROM transfer_tasks WHERE state = 'active'"))
        self.status = {"items": items, "active_tasks": active, "slots": self.settings.slots}
        return self.status

    # -- backends and locations ----------------------------------------------------------------

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            if name == "local":
                from balsam.transfer.local import LocalBackend

                self._backends[name] = LocalBackend(link=self.settings.link, on_done=self.wake.set)
            elif name == "globus":
                from balsam.transfer.globus import GlobusBackend

                self._backends[name] = GlobusBackend.from_token_file(
                    self.site.settings.globus_tokens_file, self.settings.globus_client_id,
                    sync_level=self.settings.globus_sync_level, deadline_min=self.settings.globus_deadline_min,
                )  # fmt: skip
            elif name == "rsync":
                from balsam.transfer.rsync import RsyncBackend, SshOptions

                ssh = SshOptions(self.settings.ssh_identity, self.settings.ssh_known_hosts, self.settings.ssh_connect_timeout_s)
                self._backends[name] = RsyncBackend(ssh, self.settings.ssh_roots, on_done=self.wake.set)
            else:
                raise TransferError(f"no transfer backend called {name!r}")
        return self._backends[name]

    def plan_item(self, folder: Path, direction: str, item: dict[str, str]) -> tuple[str, Location, Location]:
        """(backend, source, destination) of one declared file; TransferError if it may not be moved."""
        if direction == "in":
            dest_path = resolve_inside(folder / item["dest"], [folder], "stage-in destination")
            source = self.locations.to_local(Location.parse(item["source"]))
            if source.scheme == "file":
                return "local", Location.local(str(self.readable(source.path))), Location.local(str(dest_path))
            if source.scheme == "ssh":
                return "rsync", remote_inside(source, ssh_roots(self.settings.ssh_roots), "stage-in source", "read from"), Location.local(str(dest_path))
            return "globus", source, self.locations.as_globus(dest_path)
        source_path = resolve_inside(folder / item["source"], [folder], "stage-out source")
        dest = self.locations.to_local(Location.parse(item["dest"]))
        if dest.scheme == "file":
            roots = [self.data_dir, *self.settings.allowed_roots]
            return "local", Location.local(str(source_path)), Location.local(str(resolve_inside(dest.path, roots, "stage-out destination")))
        if dest.scheme == "ssh":
            return "rsync", Location.local(str(source_path)), remote_inside(dest, ssh_roots(self.settings.ssh_roots), "stage-out destination")
        return "globus", self.locations.as_globus(source_path), dest

    def readable(self, path: str) -> Path:
        """A local stage-in source, confined as destinations are: its real path inside ``data/``, one of
        ``transfer.allowed_roots`` or one of ``transfer.read_roots``, and never the private files of a
        site (this one's or another's: database, settings, credentials, tokens, logs) or of an Argo
        coordinator."""
        roots = [self.data_dir, *self.settings.allowed_roots, *self.settings.read_roots]
        real = resolve_inside(path, roots, "stage-in source", access="read from")
        owner = private_folder(real)
        if owner is not None:
            raise TransferError(
                f"stage-in source {shown_path(path, real)} is a private file of the {owner.kind} in {owner.path} "
                f"({owner.readable}); jobs may not read it"
            )
        return real

    # -- 1. jobs that wait for files become items ----------------------------------------------

    def discover(self) -> int:
        with self.site.session() as session:
            jobs = session.execute(
                text(
                    "SELECT j.id, j.workflow, j.state, j.stage_in, j.stage_out FROM jobs j"
                    " WHERE ((j.state = 'READY' AND j.stage_in <> '[]'::jsonb) OR (j.state = 'POSTPROCESSED' AND j.stage_out <> '[]'::jsonb))"
                    "  AND j.launcher_id IS NULL AND NOT EXISTS (SELECT 1 FROM transfer_items t WHERE t.job_id = j.id)"
                    " ORDER BY j.id LIMIT :n FOR UPDATE OF j SKIP LOCKED"
                ),
                {"n": DISCOVER_BATCH},
            ).all()
            rows, linked = [], []
            for job in jobs:
                direction, declared = ("in", job.stage_in) if job.state == S.READY else ("out", job.stage_out)
                folder = workdir(self.data_dir, job.workflow, job.id)
                planned = []
                for item in declared:
                    try:
                        backend, source, dest = self.plan_item(folder, direction, item)
                        planned.append({"job": job.id, "dir": direction, "src": source.uri, "dst": dest.uri, "backend": backend,
                                        "state": "pending", "error": "", "paths": (source.path, dest.path)})  # fmt: skip
                    except (TransferError, KeyError, ValueError) as exc:
                        shown = item.get("dest" if direction == "in" else "source", "?") if isinstance(item, dict) else "?"
                        planned.append({"job": job.id, "dir": direction, "src": str(item.get("source", "")), "dst": str(item.get("dest", "")),
                                        "backend": "local", "state": "failed", "error": f"{shown}: {exc}"})  # fmt: skip
                if self._linked_at_once(planned):
                    linked.append((job.id, direction, len(planned)))
                else:
                    rows.extend(planned)
            if linked:
                self._staged(session, [(j, n) for j, d, n in linked if d == "in"], [(j, n) for j, d, n in linked if d == "out"])
            if rows:
                copy_rows(session, "transfer_items", ("job_id", "direction", "source", "dest", "backend", "state", "attempts", "position", "error"),
                          ((r["job"], r["dir"], r["src"], r["dst"], r["backend"], r["state"], 0, 0, r["error"]) for r in rows))  # fmt: skip
                for direction, verb in (("in", "staging in"), ("out", "staging out")):
                    counts = Counter(row["job"] for row in rows if row["dir"] == direction)
                    for job_ids, message in _by_count(list(counts.items()), verb + " {n} file(s)"):
                        jobstore.note(session, job_ids, message)
            return len(jobs)

    def _linked_at_once(self, planned: list[dict[str, Any]]) -> bool:
        """Link a job's files now when every one is a local file this filesystem can hard-link
        (``transfer.link``): True when all were. Otherwise its items take the backend's way (a file
        linked here is found in place by it)."""
        if not planned or not self.settings.link or any(r["state"] != "pending" or r["backend"] != "local" for r in planned):
            return False
        return all(link_at_once(*r["paths"]) for r in planned)

    @staticmethod
    def _staged(session: Session, staged_in: Sequence[tuple[int, int]], staged_out: Sequence[tuple[int, int]]) -> None:
        """Jobs (id, files) whose files have all arrived: in, they may run; out, they are done."""
        for job_ids, message in _by_count(staged_in, "staged in {n} file(s)"):
            jobstore.transition(session, job_ids, S.STAGED_IN, message)
        if staged_in:
            jobstore.notify_runnable(session)
        for job_ids, message in _by_count(staged_out, "staged out {n} file(s)"):
            jobstore.transition(session, job_ids, S.STAGED_OUT, message)
            jobstore.transition(session, job_ids, S.JOB_FINISHED)

    # -- 2. what the backends say ----------------------------------------------------------------

    def poll(self) -> int:
        with self.site.session() as session:
            tasks = session.execute(text("SELECT id, backend, backend_id FROM transfer_tasks WHERE state = 'active' ORDER BY id")).all()
        ended = 0
        for task in tasks:
            try:
                status = self.backend(task.backend).poll(task.backend_id)
            except Exception as exc:  # a network hiccup: the task is still there, ask again next round
                log.warning("transfer task %d (%s %s): poll failed, will ask again: %s", task.id, task.backend, task.backend_id, exc)
                continue
            with self.site.session() as session:
                self._record(session, task.id, status)
            ended += status.ended
        return ended

    def _record(self, session: Session, task_id: int, status: TaskStatus) -> None:
        session.execute(
            text(
                "UPDATE transfer_tasks SET files_done = :files, bytes_done = :bytes, message = :msg,"
                " state = :state, ended_at = CASE WHEN :state = 'active' THEN NULL ELSE now() END WHERE id = :id"
            ),
            {"id": task_id, "files": status.files_done, "bytes": status.bytes_done, "msg": status.message, "state": status.state},
        )
        if not status.ended:
            return
        items = session.execute(
            text("SELECT id, position, attempts FROM transfer_items WHERE task_id = :t AND state = 'active' FOR UPDATE"), {"t": task_id}
        ).all()
        done, failures = [], []
        for item in items:
            if status.state == "failed":
                failures.append((item, status.message or "the transfer task failed"))
            elif item.position in status.failed:
                failures.append((item, status.failed[item.position]))
            else:
                done.append(item.id)
        if done:
            session.execute(text("UPDATE transfer_items SET state = 'done', error = '' WHERE id = ANY(:ids)"), {"ids": done})
        self._failed_attempts(session, failures)

    def _failed_attempts(self, session: Session, failures: Sequence[tuple[Any, str]]) -> None:
        for item, reason in failures:
            nxt = transfer_plan.after_attempt(item.attempts, self.settings.retries, self.settings.retry_delay_s)
            session.execute(
                text(
                    "UPDATE transfer_items SET state = :state, attempts = :attempts, error = :error, task_id = NULL,"
                    " not_before = now() + make_interval(secs => :delay) WHERE id = :id"
                ),
                {"id": item.id, "state": nxt.state, "attempts": nxt.attempts, "error": reason[:ERROR_TAIL], "delay": nxt.delay_s},
            )

    # -- 3. new transfer tasks --------------------------------------------------------------------

    def submit(self) -> int:
        with self.site.session() as session:
            active = session.scalar(text("SELECT count(*) FROM transfer_tasks WHERE state = 'active'"))
            free = self.settings.slots - active
            if free <= 0:
                return 0
            pending = session.execute(
                text(
                    "SELECT id, backend, direction, source, dest FROM transfer_items"
                    " WHERE state = 'pending' AND not_before <= now() ORDER BY id LIMIT :n"
                ),
                {"n": free * self.settings.max_items},
            ).all()
        by_id = {row.id: row for row in pending}
        views = [
            transfer_plan.PendingItem(row.id, row.backend, row.direction, Location.parse(row.source).endpoint,
                                      Location.parse(row.dest).endpoint, order=row.id)
            for row in pending
        ]  # fmt: skip
        submitted = 0
        for batch in transfer_plan.batches(views, free, self.settings.max_items):
            rows = [by_id[i] for i in batch.item_ids]
            items = [Item(Location.parse(r.source), Location.parse(r.dest)) for r in rows]
            label = f"balsam {self.site.settings.name}: stage-{batch.direction} of {len(items)} file(s)"
            try:
                backend_id = self.backend(batch.backend).submit(items, label=label, verify_checksum=self.settings.verify_checksum)
            except (TransferError, BalsamError) as exc:
                log.warning("could not start a %s transfer of %d file(s): %s", batch.backend, len(items), exc)
                with self.site.session() as session:
                    self._failed_attempts(session, [(r, str(exc)) for r in self._attempts(session, batch.item_ids)])
                continue
            with self.site.session() as session:
                task_id = session.execute(
                    text(
                        "INSERT INTO transfer_tasks (backend, backend_id, source_endpoint, dest_endpoint, direction, state,"
                        " item_count, files_done, bytes_done, message)"
                        " VALUES (:b, :bid, :se, :de, :dir, 'active', :n, 0, 0, '') RETURNING id"
                    ),
                    {"b": batch.backend, "bid": backend_id, "se": batch.source_endpoint, "de": batch.dest_endpoint,
                     "dir": batch.direction, "n": len(items)},
                ).scalar_one()  # fmt: skip
                session.execute(
                    text(
                        "UPDATE transfer_items SET state = 'active', task_id = :t, position = v.pos"
                        " FROM (SELECT unnest(CAST(:ids AS bigint[])) AS id, generate_subscripts(CAST(:ids AS bigint[]), 1) - 1 AS pos) v"
                        " WHERE transfer_items.id = v.id"
                    ),
                    {"t": task_id, "ids": list(batch.item_ids)},
                )
            log.info("transfer task %d (%s %s): stage-%s of %d file(s)", task_id, batch.backend, backend_id, batch.direction, len(items))
            submitted += 1
        return submitted

    @staticmethod
    def _attempts(session: Session, ids: Sequence[int]) -> list[Any]:
        return session.execute(text("SELECT id, attempts FROM transfer_items WHERE id = ANY(:ids) FOR UPDATE"), {"ids": list(ids)}).all()

    # -- 4. jobs whose files have all ended ----------------------------------------------------

    def settle(self) -> int:
        with self.site.session() as session:
            # Files still waiting for a job that was killed while they waited: nothing will want them.
            session.execute(
                text(
                    "DELETE FROM transfer_items t USING jobs j WHERE t.job_id = j.id AND t.state = 'pending'"
                    " AND NOT ((j.state = 'READY' AND t.direction = 'in') OR (j.state = 'POSTPROCESSED' AND t.direction = 'out'))"
                )
            )
            groups = session.execute(
                text(
                    "SELECT job_id, direction, count(*) AS n, array_agg(state ORDER BY id) AS states,"
                    "  array_agg(error ORDER BY id) FILTER (WHERE state = 'failed') AS errors"
                    " FROM transfer_items GROUP BY job_id, direction"
                    " HAVING bool_and(state IN ('done', 'failed')) ORDER BY job_id LIMIT :n"
                ),
                {"n": DISCOVER_BATCH},
            ).all()
            if not groups:
                return 0
            ids = [g.job_id for g in groups]
            states = dict(session.execute(text("SELECT id, state FROM jobs WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"), {"ids": ids}).all())
            staged_in, staged_out, failed = [], [], []
            for group in groups:
                expected = S.READY if group.direction == "in" else S.POSTPROCESSED
                if states.get(group.job_id) != expected:
                    continue  # killed (or reset) meanwhile: its files no longer matter
                outcome = transfer_plan.job_outcome(group.states)
                if outcome == "done":
                    (staged_in if group.direction == "in" else staged_out).append((group.job_id, group.n))
                else:
                    failed.append((group.job_id, group.direction, group.n, list(group.errors or [])))
            self._staged(session, staged_in, staged_out)
            for job_id, direction, n, errors in failed:
                what = "stage-in" if direction == "in" else "stage-out"
                summary = f"{what} failed for {len(errors)} of {n} file(s): {errors[0]}" if errors else f"{what} failed"
                jobstore.transition(session, [job_id], S.FAILED, summary[:ERROR_TAIL], error_tail="\n".join(errors)[-ERROR_TAIL:])
            session.execute(text("DELETE FROM transfer_items WHERE job_id = ANY(:ids) AND state IN ('done', 'failed')"), {"ids": ids})
            return len(staged_in) + len(staged_out) + len(failed)


def _by_count(jobs: Sequence[tuple[int, int]], template: str) -> list[tuple[list[int], str]]:
    """Jobs grouped by their number of files, so each group is one batched transition."""
    groups: dict[int, list[int]] = {}
    for job_id, n in jobs:
        groups.setdefault(n, []).append(job_id)
    return [(ids, template.format(n=n)) for n, ids in sorted(groups.items())]
