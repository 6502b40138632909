"""Filesystem triggers at a site: files appearing in a folder become jobs, each exactly once.

    from balsam.site.triggers import add_rule, TriggerWatcher

    add_rule(site, "raw", "/data/incoming", "reduce", {"infile": "{path}", "label": "{stem}"}, patterns=["*.h5"])
    TriggerWatcher(site).run(stop)          # the site agent runs this in a thread (Agent.start_triggers)

**Exactly once.** Each counted file is a row of ``trigger_files`` keyed by (rule id, path relative
to the rule's folder). A batch of complete files is recorded with ``INSERT ... ON CONFLICT DO
NOTHING RETURNING path`` and the jobs of the paths it returns are created (``jobstore.insert_jobs``,
the bulk path of ``Site.add_jobs``) in the same transaction, so a file is recorded if and only if
its job exists. Two watchers on one site (two agents, or an agent and a test) racing on the same
file: the second insert waits on the first's key until it commits, then does nothing. A restart
scans the folders; files already recorded are skipped by the same key. Completeness and ignored
names: ``balsam.fswatch``.

**Pause** stops watching the rule; files that come meanwhile get their jobs when it is resumed
(the scan finds them), as after the agent was down. **Remove** forgets the rule and its files;
the jobs stay.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from balsam import fswatch
from balsam.errors import BalsamError
from balsam.resources import Resources, resources_from
from balsam.site.api import Site
from balsam.site.db import jobstore
from balsam.site.db.models import App, TriggerRule
from balsam.site.specs import MAX_NAME, JobSpec, check_batch, check_shape
from balsam.site.templates import CommandTemplate

def _spec(rule: TriggerRule, app_name: str, params: dict[str, Any], path: Path, source: str) -> JobSpec:
    return JobSpec(
        app=app_name, name=path.name[:MAX_NAME], workflow=rule.workflow, params=fswatch.fill(params, path),
        tags={**rule.tags, "trigger": rule.name}, data={"trigger": {"rule": rule.name, "path": str(path)}},
        resources=Resources(**rule.resources), source=source,
    )  # fmt: skip


def add_rule(
    site: Site,
    name: str,
    folder: str | Path,
    app: str,
    params: dict[str, Any] | None = None,
    *,
    patterns: list[str] | None = None,
    ignore: list[str] | None = None,
    recursive: bool = False,
    workflow: str = "default",
    tags: dict[str, str] | None = None,
    resources: dict[str, Any] | None = None,
    settle_s: float = fswatch.DEFAULT_SETTLE_S,
    skip_existing: bool = False,
) -> TriggerRule:
    """Store a rule after checking all of it; the agent starts watching within a second.

    Files already in the folder get jobs too, unless ``skip_existing``: then they are recorded
    (with no job) in the same transaction as the rule, so they never count.
    """
    if not name or not name.strip() or len(name) > MAX_NAME:
        raise BalsamError(f"a trigger rule needs a name of 1 to {MAX_NAME} characters")
    path = fswatch.check_folder(folder)
    pattern_list = fswatch.check_globs(patterns or [], "pattern")
    ignore_list = fswatch.check_globs(ignore or [], "ignore glob")
    params = fswatch.check_templates(dict(params or {}))
    checked, problems = resources_from(dict(resources or {}))
    if problems:
        raise BalsamError(problems[0])
    resources = checked.given()
    if isinstance(settle_s, bool) or not isinstance(settle_s, int | float) or not 0 <= settle_s < 86400:
        raise BalsamError(f"settle_s must be a number of seconds from 0 to 86400, got {settle_s!r}")
    rule = TriggerRule(
        name=name, folder=str(path), recursive=bool(recursive), patterns=list(pattern_list), ignore=list(ignore_list),
        params=params, workflow=workflow, tags=dict(tags or {}), resources=resources, settle_s=float(settle_s), paused=False,
    )  # fmt: skip
    with site.session() as session:
        found = session.scalar(select(App).where(App.name == app))
        if found is None:
            known = ", ".join(session.scalars(select(App.name).order_by(App.name))) or "none yet"
            raise BalsamError(f"unknown app {app!r} (apps of this site: {known})")
        template = CommandTemplate.parse(found.command_template)
        # A job made from a sample file must pass every check a job added by hand passes.
        sample = _spec(rule, app, params, path / "sample.dat", f"trigger rule {name!r}")
        check_shape(sample)
        template.check_parameters(sample.params, app)
        if session.scalar(select(TriggerRule.id).where(TriggerRule.name == name)) is not None:
            raise BalsamError(f"a trigger rule named {name!r} already exists")
        rule.app_id = found.id
        session.add(rule)
        try:
            session.flush()
        except IntegrityError:
            raise BalsamError(f"a trigger rule named {name!r} already exists") from None
        if skip_existing:
            fswatch.claim_existing(session, fswatch.WatchRule.of(rule))
    return rule


def _rule(session, name: str, lock: bool = False) -> TriggerRule:
    query = select(TriggerRule).where(TriggerRule.name == name)
    rule = session.scalar(query.with_for_update(of=TriggerRule) if lock else query)
    if rule is None:
        raise BalsamError(f"no trigger rule {name!r}")
    return rule


def rules(site: Site) -> list[dict[str, Any]]:
    """Every rule as plain data, with how many files it counted and how many jobs it made."""
    with site.session() as session:
        counts = {row.rule_id: (row.files, row.jobs) for row in session.execute(
            text("SELECT rule_id, count(*) AS files, count(job_id) AS jobs FROM trigger_files GROUP BY rule_id"))}  # fmt: skip
        found = session.scalars(select(TriggerRule).order_by(TriggerRule.name)).all()
        return [
            {"id": r.id, "name": r.name, "folder": r.folder, "recursive": r.recursive, "patterns": r.patterns,
             "ignore": r.ignore, "app": r.app.name, "params": r.params, "workflow": r.workflow, "tags": r.tags,
             "resources": r.resources, "settle_s": r.settle_s, "paused": r.paused, "files": counts.get(r.id, (0, 0))[0],
             "jobs": counts.get(r.id, (0, 0))[1], "created_at": r.created_at}
            for r in found
        ]  # fmt: skip


def remove_rule(site: Site, name: str) -> None:
    with site.session() as session:
        session.delete(_rule(session, name, lock=True))


def set_paused(site: Site, name: str, paused: bool) -> None:
    with site.session() as session:
        _rule(session, name, lock=True).paused = paused


# -- the watcher -----------------------------------------------------------------------------


class TriggerWatcher:
    """Watches the site's active rules and creates one job per complete file.

    Any number may run on one site (each agent runs one): the database key decides who makes
    each job.
    """

    def __init__(self, site: Site, *, tick_s: float = 0.05, reload_s: float = 1.0) -> None:
        self.site = site
        self.watcher = fswatch.FolderWatcher(self.load_rules, self.deliver, tick_s=tick_s, reload_s=reload_s, name="triggers")
        self.status = self.watcher.status

    def load_rules(self) -> list[fswatch.WatchRule]:
        with self.site.session() as session:
            return [fswatch.WatchRule.of(r) for r in session.scalars(select(TriggerRule).where(TriggerRule.paused.is_(False)))]

    def deliver(self, watched: fswatch.WatchRule, paths: list[str]) -> int:
        """Record the files and create their jobs in one transaction; how many jobs were made."""
        with self.site.session() as session:
            # Shared lock: a rule removed or paused meanwhile is not used (its files wait for the scan).
            rule = session.scalar(
                select(TriggerRule).where(TriggerRule.id == watched.id, TriggerRule.paused.is_(False)).with_for_update(read=True, of=TriggerRule)
            )
            if rule is None:
                return 0
            new = fswatch.claim_files(session, rule.id, paths)
            if not new:
                return 0
            app = rule.app
            folder = Path(rule.folder)
            specs = [_spec(rule, app.name, rule.params, folder / rel, f"trigger rule {rule.name!r}, file {rel}") for rel in new]
            check_batch(specs, {app.name: CommandTemplate.parse(app.command_template)})
            ids = jobstore.insert_jobs(session, specs, {app.name: app.id})
            session.execute(
                text("UPDATE trigger_files f SET job_id = v.job FROM unnest(CAST(:paths AS text[]), CAST(:ids AS bigint[])) AS v(path, job)"
                     " WHERE f.rule_id = :rule AND f.path = v.path"),
                {"rule": rule.id, "paths": new, "ids": ids},
            )  # fmt: skip
            return len(ids)

    def run(self, stop: threading.Event) -> None:
        self.watcher.run(stop)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        return self.watcher.start()
