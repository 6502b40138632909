"""The Python API of a site: apps, jobs, dependencies, queries and kills, for scripts and the CLI.

    from balsam.site import Site

    site = Site.open()                      # $BALSAM_SITE, or the site folder around the cwd
    site.add_app("sim", "simulate --size {n} {infile}")
    a = site.add_job("sim", params={"n": 8, "infile": "a.dat"}, name="a")
    b = site.add_job("sim", params={"n": 16, "infile": "b.dat"}, parents=[a.id])
    print(site.count_jobs())                # {'READY': 1, 'AWAITING_PARENTS': 1}
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2.errors
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from balsam.errors import BalsamError
from balsam.gcpause import paused_gc
from balsam.resources import FIELDS as RESOURCE_FIELDS
from balsam.resources import resources_from
from balsam.inputs import check_value, has_control, preview
from balsam.site import idle_stop
from balsam.site.access import group_id, protect_site
from balsam.site.db import jobstore
from balsam.site.db.engine import connect
from balsam.site.db.models import App, Job, JobEvent, JobParent
from balsam.site.postgres import EmbeddedPostgres
from balsam.postgres import DatabaseSettings, plan_listen
from balsam.site.settings import SETTINGS_FILE, SchedulerSettings, SiteSettings, apply_choices, find_site
from balsam.site.specs import MAX_NAME, JobSpec, Progress, Request, check_shape, spec_from_dict
from balsam.site.templates import CommandTemplate
from balsam.states import RESETTABLE_STATES, JobState, parse_state

ERROR_HANDLERS = ("retry", "rescue", "fail")
TIMEOUT_HANDLERS = ("retry", "fail")
# mpi: the launcher starts every rank; script: the command runs once and starts its own ranks.
LAUNCH_MODES = ("mpi", "script")
# A launcher holds a job in these states: users may kill it, but not edit or remove it under it.
HELD_STATES = frozenset(
    {JobState.STAGED_IN, JobState.PREPROCESSED, JobState.RUNNING, JobState.RUN_DONE, JobState.POSTPROCESSED,
     JobState.STAGED_OUT, JobState.RUN_ERROR, JobState.RUN_TIMEOUT}
)  # fmt: skip


class Site:
    """One site: its settings and a connection to its database."""

    def __init__(self, settings: SiteSettings, launcher: bool = False) -> None:
        """``launcher``: the connection budget of a launcher (one pooled connection; wait while the database is full)."""
        self.settings = settings
        self._closed = False
        # Its idle watcher leaves the database alone while this object is open (see balsam.site.idle_stop).
        idle_stop.hold_in_use(settings)
        try:
            self.engine = connect(settings, launcher=launcher)
        except BaseException:
            self._release_use()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    # -- opening and creating ------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path | None = None, launcher: bool = False) -> Site:
        """The site at ``path``, else the active one (``$BALSAM_SITE`` or the folder around the cwd)."""
        return cls(SiteSettings.load(Path(path) if path else find_site()), launcher=launcher)

    @classmethod
    def init(cls, path: str | Path, name: str | None = None, db_url: str | None = None, scheduler: str = "local", group: str = "",
             listen: str | None = None, allow: list[str] = (), plaintext: bool = False, pg_bin: str | None = None,
             **choices: Any) -> Site:  # fmt: skip
        """Create a site folder with its own PostgreSQL cluster (or on the server at ``db_url``),
        private to its owner, or shared with ``group`` (``balsam.site.access.protect_site``).

        ``listen``: the address the cluster listens on (default loopback); see ``balsam.postgres.plan_listen``
        for TLS, ``allow`` (networks that may log in), ``plaintext`` and ``pg_bin``.
        ``choices``: those of ``balsam.site.settings.CHOICES`` (project, queue, elastic_queue, ...)."""
        path = Path(path).expanduser().resolve()
        if (path / SETTINGS_FILE).exists():
            raise BalsamError(f"{path} is already a Balsam site")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise BalsamError(f"{path} exists and is not an empty folder; choose a new path for the site")
        name = name or path.name
        if not name.strip():
            raise BalsamError("the site needs a name")
        scheduler_settings = SchedulerSettings(name=scheduler)
        scheduler_settings.check()
        if group:
            group_id(group)  # an unknown group fails before anything is made
        settings = SiteSettings(path=path, name=name, group=group, scheduler=scheduler_settings)
        if db_url:
            if listen or allow or plaintext or pg_bin:
                raise BalsamError("--listen, --allow, --plaintext and --pg-bin are for the site's own database, not one at --db-url")
            settings.database = DatabaseSettings(mode="external", url=db_url)
        elif listen or allow or plaintext or pg_bin:
            # Checked before anything is made: binaries without SSL for a network address are refused here.
            plan_listen(settings.database, listen or settings.database.host, list(allow), plaintext, pg_bin)
        apply_choices(settings, **choices)  # checked before anything is made
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        try:
            protect_site(settings)  # private (or the group's) before anything is written inside
            if not db_url:
                EmbeddedPostgres(settings).create()
            settings.save()
            protect_site(settings)
            return cls(settings)
        except BaseException:
            # A half-made site is worse than none: stop its server and take back what we made.
            if not db_url and EmbeddedPostgres(settings).pgdata.exists():
                EmbeddedPostgres(settings).stop()
            if created:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for child in path.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            raise

    def close(self) -> None:
        self.engine.dispose()
        self._release_use()

    def _release_use(self) -> None:
        if not self._closed:
            self._closed = True
            idle_stop.release_in_use(self.settings)  # the database's idle watcher may stop it once no one uses it

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends normally, rolled back on any error."""
        with self._sessions.begin() as session:
            yield session

    # -- apps ----------------------------------------------------------------------------------

    def add_app(
        self,
        name: str,
        command: str,
        *,
        env: dict[str, str] | None = None,
        preprocess: str | None = None,
        postprocess: str | None = None,
        on_error: str = "fail",
        max_retries: int = 3,
        on_timeout: str = "fail",
        image: str | None = None,
        description: str = "",
        launch: str = "mpi",
    ) -> App:
        if not name or not name.strip():
            raise BalsamError("an app needs a name")
        if len(name) > MAX_NAME:
            raise BalsamError(f"an app name is at most {MAX_NAME} characters long")
        if has_control(name):
            raise BalsamError(f"an app name must not hold control characters ({preview(name)})")
        texts = {"command": command, "env": env or {}, "preprocess": preprocess, "postprocess": postprocess, "image": image,
                 "description": description}  # fmt: skip
        check_value(texts, f"app {name!r}")
        template = CommandTemplate.parse(command)
        for what, step in (("preprocess", preprocess), ("postprocess", postprocess)):
            if step is not None:
                # Same splitting rules, filled from the same parameters: a bad step fails now, not mid-run.
                extra = [p for p in CommandTemplate.parse(step).placeholders if p not in template.placeholders]
                if extra:
                    raise BalsamError(
                        f"the {what} step names {{{extra[0]}}}, which the command template does not; "
                        "steps may only use the command's placeholders"
                    )
        if on_error not in ERROR_HANDLERS:
            raise BalsamError(f"on_error must be one of {', '.join(ERROR_HANDLERS)}, got {on_error!r}")
        if on_timeout not in TIMEOUT_HANDLERS:
            raise BalsamError(f"on_timeout must be one of {', '.join(TIMEOUT_HANDLERS)}, got {on_timeout!r}")
        if launch not in LAUNCH_MODES:
            raise BalsamError(f"launch must be one of {', '.join(LAUNCH_MODES)}, got {launch!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise BalsamError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        app = App(
            name=name, command_template=command, parameters=list(template.placeholders), environment=dict(env or {}),
            preprocess=preprocess, postprocess=postprocess, on_error=on_error, max_retries=max_retries,
            on_timeout=on_timeout, image=image, description=description, launch=launch,
        )  # fmt: skip
        try:
            with self.session() as session:
                session.add(app)
        except IntegrityError:
            raise BalsamError(f"an app named {name!r} already exists") from None
        return app

    def apps(self) -> list[App]:
        with self.session() as session:
            return list(session.scalars(select(App).order_by(App.name)))

    def app(self, name: str) -> App:
        with self.session() as session:
            return self._app(session, name)

    @staticmethod
    def _app(session: Session, name: str) -> App:
        app = session.scalar(select(App).where(App.name == name))
        if app is None:
            raise BalsamError(f"unknown app {name!r}")
        return app

    def remove_app(self, name: str) -> None:
        with self.session() as session:
            # FOR UPDATE waits for a creation whose key checks hold the app (a key-share lock), so the
            # count below sees its jobs.
            app = session.scalar(select(App).where(App.name == name).with_for_update())
            if app is None:
                raise BalsamError(f"unknown app {name!r}")
            used = session.scalar(select(func.count()).select_from(Job).where(Job.app_id == app.id))
            if used:
                raise BalsamError(f"app {name!r} still has {used} job(s); remove them first")
            session.delete(app)

    # -- adding jobs ---------------------------------------------------------------------------

    def add_job(self, app: str, params: dict[str, Any] | None = None, **fields: Any) -> Job:
        """One job; ``fields`` are those of :class:`~balsam.site.specs.JobSpec` (name, parents, nodes...)."""
        (job_id,) = self.add_specs([spec_from_dict({"app": app, "params": dict(params or {}), **fields})])
        return self.job(job_id)

    def add_jobs(self, jobs: Iterable[JobSpec | dict[str, Any]], sources: Sequence[str] | None = None,
                 progress: Progress | None = None) -> list[int]:  # fmt: skip
        """Many jobs at once, all or nothing; parents may name other jobs of the same request.

        ``sources``: where each job came from, for errors (``read_job_file`` gives them; "item N"
        otherwise). ``progress(stored, total)`` is told every thousand jobs and at the last.
        """
        return self._add(list(jobs), shapes_checked=False, sources=sources, progress=progress)

    def add_specs(self, specs: list[JobSpec]) -> list[int]:
        """Like ``add_jobs``, for specs made by ``spec_from_dict``: their own fields are checked
        already, so only what needs the whole request and the site is checked."""
        return self._add(specs, shapes_checked=True)

    def _add(self, items: list[JobSpec | dict[str, Any]], shapes_checked: bool, sources: Sequence[str] | None = None,
             progress: Progress | None = None) -> list[int]:  # fmt: skip
        # Each job is checked as it is written (balsam.site.specs.Request), within one transaction.
        with paused_gc(), self.session() as session:
            # A site has a handful of apps: read them all, so an unknown one can be listed with them.
            apps = session.execute(select(App.name, App.id, App.command_template)).all()
            templates = {row.name: CommandTemplate.parse(row.command_template) for row in apps}
            request = Request(items, templates, shapes_checked=shapes_checked, sources=sources, progress=progress)
            try:
                return jobstore.insert_jobs(session, request, {row.name: row.id for row in apps})
            except psycopg2.errors.ForeignKeyViolation as exc:
                if not str(exc).startswith("jobs: there is no app"):  # the app check's words (migration 0012)
                    raise
                # Read above, removed by `balsam app rm` before the jobs' check could lock it.
                raise BalsamError("an app of these jobs was removed while they were being added; none was stored") from None

    # -- queries -------------------------------------------------------------------------------

    @staticmethod
    def _filtered(query, state: str | None, workflow: str | None, tags: dict[str, str] | None):
        if state:
            query = query.where(Job.state == parse_state(state).value)
        if workflow:
            query = query.where(Job.workflow == workflow)
        if tags:
            query = query.where(Job.tags.contains(tags))
        return query

    def jobs(
        self,
        state: str | None = None,
        workflow: str | None = None,
        tags: dict[str, str] | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs matching every given filter, oldest first."""
        query = self._filtered(select(Job), state, workflow, tags).order_by(Job.id)
        if limit:
            query = query.limit(limit)
        with self.session() as session:
            return list(session.scalars(query))

    def count_jobs(
        self, state: str | None = None, workflow: str | None = None, tags: dict[str, str] | None = None
    ) -> dict[str, int]:
        """How many jobs match, per state."""
        query = self._filtered(select(Job.state, func.count()), state, workflow, tags).group_by(Job.state)
        with self.session() as session:
            return {row[0]: row[1] for row in session.execute(query)}

    def run_times(self, job_ids: Iterable[int]) -> dict[int, tuple[datetime | None, datetime | None]]:
        """Job id -> (when it first started RUNNING, when it last reached a final state), from its events."""
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        with self.session() as session:
            rows = session.execute(
                text("SELECT job_id, min(timestamp) FILTER (WHERE to_state = 'RUNNING') AS started,"
                     " max(timestamp) FILTER (WHERE to_state IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED')) AS ended"
                     " FROM job_events WHERE job_id = ANY(:ids) GROUP BY job_id"),
                {"ids": ids},
            ).all()  # fmt: skip
        return {row.job_id: (row.started, row.ended) for row in rows}

    def job(self, job_id: int) -> Job:
        with self.session() as session:
            return self._job(session, job_id)

    @staticmethod
    def _job(session: Session, job_id: int, lock: bool = False) -> Job:
        query = select(Job).where(Job.id == job_id)
        job = session.scalar(query.with_for_update(of=Job) if lock else query)
        if job is None:
            raise BalsamError(f"no job {job_id}")
        return job

    def parents(self, job_id: int) -> list[int]:
        with self.session() as session:
            query = select(JobParent.parent_id).where(JobParent.child_id == job_id).order_by(JobParent.parent_id)
            return list(session.scalars(query))

    def children(self, job_id: int) -> list[int]:
        with self.session() as session:
            query = select(JobParent.child_id).where(JobParent.parent_id == job_id).order_by(JobParent.child_id)
            return list(session.scalars(query))

    def history(self, job_id: int) -> list[JobEvent]:
        """The job's event log, oldest first."""
        with self.session() as session:
            self._job(session, job_id)
            return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))

    # -- changing jobs -------------------------------------------------------------------------

    def modify_job(self, job_id: int, **changes: Any) -> Job:
        """Change a job that no launcher holds: name, workflow, params, resources (nodes, ...,
        wall_time_min), tags, data."""
        allowed = {"name", "workflow", "params", *RESOURCE_FIELDS, "tags", "data"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise BalsamError(f"cannot modify {unknown[0]!r}; modifiable: {', '.join(sorted(allowed))}")
        with self.session() as session:
            job = self._job(session, job_id, lock=True)
            if job.state in HELD_STATES or job.state == JobState.JOB_FINISHED:
                raise BalsamError(f"job {job_id} is {job.state}; only jobs that have not started (or have failed) can be modified")
            current = _spec_of(job)
            # Parameters and tags are merged into the job's own; everything else is replaced.
            for merged in ("params", "tags"):
                if merged in changes:
                    changes[merged] = {**getattr(current, merged), **changes[merged]}
            check_value(changes, current.label)  # the input boundary first, as for a new job
            asked = {key: changes.pop(key) for key in RESOURCE_FIELDS if key in changes}
            resources, problems = resources_from({**current.resources.given(), **asked})
            if problems:
                raise BalsamError(f"{current.label}: {problems[0]}")
            spec = dataclasses.replace(current, resources=resources, **changes)
            check_shape(spec)
            CommandTemplate.parse(job.app.command_template).check_parameters(spec.params, job.app.name)
            job.name, job.workflow, job.parameters = spec.name, spec.workflow, spec.params
            job.resources = spec.resources
            job.tags, job.data = spec.tags, spec.data
            job.updated_at = func.now()
        return self.job(job_id)

    def kill_job(self, job_id: int, message: str = "killed by user") -> None:
        """Move a job that has not ended to USER_KILLED (its children keep waiting for it)."""
        with self.session() as session:
            jobstore.transition(session, [job_id], JobState.USER_KILLED, message)

    def reset_job(self, job_id: int) -> JobState:
        """Reopen a FAILED or USER_KILLED job; returns its new state (READY or AWAITING_PARENTS)."""
        with self.session() as session:
            job = self._job(session, job_id, lock=True)
            if JobState(job.state) not in RESETTABLE_STATES:
                raise BalsamError(
                    f"job {job_id} is {job.state}; only FAILED or USER_KILLED jobs can be reset"
                )
            return jobstore.reopen(session, job_id)

    def remove_job(self, job_id: int) -> None:
        """Delete a job and its history; refused while a launcher holds it or other jobs depend on it."""
        with self.session() as session:
            job = self._job(session, job_id, lock=True)
            if job.state in HELD_STATES:
                raise BalsamError(f"job {job_id} is {job.state} in a launcher; kill it before removing it")
            children = session.scalars(
                select(JobParent.child_id).where(JobParent.parent_id == job_id).order_by(JobParent.child_id).limit(5)
            ).all()
            if children:
                shown = ", ".join(map(str, children))
                raise BalsamError(f"job {job_id} has children ({shown}{', ...' if len(children) == 5 else ''}); remove them first")
            session.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job_id})


def _spec_of(job: Job) -> JobSpec:
    return JobSpec(
        app=job.app.name, name=job.name, workflow=job.workflow, params=dict(job.parameters), resources=job.resources,
        tags=dict(job.tags), data=dict(job.data), source=f"job {job.id}",
    )  # fmt: skip
