"""Filesystem triggers at the coordinator: files appearing in a folder become tasks of the graph.

**Workflows.** Each rule owns a running workflow (named by the rule's ``workflow``, default the
rule's name), created with the rule; a file's task is added to it through the one writer of
tasks (``taskstore.insert``, under its workflow's lock), so it is placed like any other task. A
workflow ends when no task can move any more, which happens between bursts when every task
finished: the next file then opens a fresh workflow of the same name and the rule follows it
(``trigger_rules.workflow_id``). ``argo trigger ls`` shows the current one.

**Exactly once.** As at a site (``balsam.site.triggers``): the files are recorded in
``trigger_files`` keyed by (rule id, path below the folder) with ``ON CONFLICT DO NOTHING`` in the
transaction that inserts their tasks, so restarts (the start-up scan) and re-reported files add
nothing twice. A task is named after the file (made safe for a task name) with a hash of its
relative path, so two files never share a task id.

**What is checked** when a rule is added: the folder (absolute, existing, on the coordinator's
host), the globs, the parameter templates (only ``{path}``, ``{name}``, ``{stem}``, ``{parent}``),
the resources, the app (offered by a registered site) and the pin (a registered site that
offers the app). The coordinator does not know the apps' command templates; a parameter the
app does not take fails the task at its site, with the site's reason.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from balsam import fswatch
from balsam.argo import graph
from balsam.argo import spec as specs
from balsam.taskspec import NAME_PATTERN, TaskSpec, task_from_dict
from balsam.argo.db.models import TriggerRule, Workflow
from balsam.argo.db import taskstore
from balsam.argo.workflows import WorkflowStore
from balsam.errors import BadRequest, BalsamError, NotFound

log = logging.getLogger("balsam.argo.triggers")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def task_name(rel: str) -> str:
    """A task name for the file at ``rel``: readable, and unique per path (the hash)."""
    digest = hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    safe = _UNSAFE.sub("_", rel).strip(".")[:180] or "file"
    return f"{safe}-{digest}"


def _check(store: WorkflowStore, session, rule: dict[str, Any]) -> TaskSpec:
    """A sample task of the rule, checked as a submitted one would be; BadRequest / SpecError."""
    try:
        folder = fswatch.check_folder(rule["folder"])
        fswatch.check_globs(rule["patterns"], "pattern")
        fswatch.check_globs(rule["ignore"], "ignore glob")
        params = fswatch.check_templates(rule["params"])
        settle = rule["settle_s"]
        if not 0 <= settle < 86400:
            raise BalsamError(f"settle_s must be a number of seconds from 0 to 86400, got {settle!r}")
    except BalsamError as exc:
        raise BadRequest(str(exc)) from None
    if not NAME_PATTERN.fullmatch(rule["name"] or ""):
        raise BadRequest(f"trigger rule name {rule['name']!r} must be 1-200 letters, digits, '_', '.' or '-'")
    if not NAME_PATTERN.fullmatch(rule["workflow"] or ""):
        raise BadRequest(f"workflow name {rule['workflow']!r} must be 1-200 letters, digits, '_', '.' or '-'")
    doc = {"name": task_name("sample.dat"), "app": rule["app"], "params": fswatch.fill(params, folder / "sample.dat"),
           "tags": rule["tags"], **({"resources": rule["resources"]} if rule["resources"] else {}),
           **({"site": rule["pin"]} if rule["pin"] else {})}  # fmt: skip
    task = task_from_dict(doc, f"trigger rule {rule['name']!r}")
    specs.validate([task], store.apps_by_site(session))
    return task


def add_rule(store: WorkflowStore, rule: dict[str, Any], skip_existing: bool = False) -> TriggerRule:
    """Check and store a rule with its workflow; the server's watcher picks it up within a second."""
    rule = {**rule, "workflow": rule.get("workflow") or rule["name"], "settle_s": rule.get("settle_s") or fswatch.DEFAULT_SETTLE_S}
    with store.session() as session:
        _check(store, session, rule)
        if session.scalar(select(TriggerRule.id).where(TriggerRule.name == rule["name"])) is not None:
            raise BalsamError(f"a trigger rule named {rule['name']!r} already exists")
        workflow = Workflow(name=rule["workflow"], status="running")
        session.add(workflow)
        session.flush()
        row = TriggerRule(
            name=rule["name"], folder=str(fswatch.check_folder(rule["folder"])), recursive=rule["recursive"],
            patterns=list(rule["patterns"]), ignore=list(rule["ignore"]), app=rule["app"], params=rule["params"],
            resources=rule["resources"], tags=rule["tags"], pin=rule["pin"] or None, workflow=rule["workflow"],
            workflow_id=workflow.id, settle_s=float(rule["settle_s"]),
        )  # fmt: skip
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            raise BalsamError(f"a trigger rule named {rule['name']!r} already exists") from None
        if skip_existing:
            fswatch.claim_existing(session, fswatch.WatchRule.of(row))
    store.db.notify()
    return row


def rules(store: WorkflowStore) -> list[tuple[TriggerRule, int]]:
    with store.session() as session:
        counts = dict(session.execute(text("SELECT rule_id, count(*) FROM trigger_files GROUP BY rule_id")).all())
        return [(r, counts.get(r.id, 0)) for r in session.scalars(select(TriggerRule).order_by(TriggerRule.name))]


def remove_rule(store: WorkflowStore, name: str) -> int:
    """Forget the rule and its files (their tasks stay); how many files it had counted."""
    with store.session() as session:
        rule = session.scalar(select(TriggerRule).where(TriggerRule.name == name).with_for_update())
        if rule is None:
            raise NotFound(f"no trigger rule {name!r}")
        files = session.scalar(text("SELECT count(*) FROM trigger_files WHERE rule_id = :r"), {"r": rule.id})
        session.delete(rule)
    return files


class TriggerService:
    """The coordinator's watcher: a thread of the server process (``argo/server.py``)."""

    def __init__(self, store: WorkflowStore, *, tick_s: float = 0.05, reload_s: float = 1.0) -> None:
        self.store = store
        self.watcher = fswatch.FolderWatcher(self.load_rules, self.deliver, tick_s=tick_s, reload_s=reload_s, name="argo-triggers")

    def load_rules(self) -> list[fswatch.WatchRule]:
        with self.store.session() as session:
            return [fswatch.WatchRule.of(r) for r in session.scalars(select(TriggerRule))]

    def deliver(self, watched: fswatch.WatchRule, paths: list[str]) -> int:
        with self.store.session() as session:
            rule = session.scalar(select(TriggerRule).where(TriggerRule.id == watched.id).with_for_update())
            if rule is None:
                return 0  # removed meanwhile
            # Its workflow's lock before its row and its tasks (no writer of the graph waits for a rule's row).
            graph.lock_workflows(session, [rule.workflow_id] if rule.workflow_id else [])
            new = fswatch.claim_files(session, rule.id, paths)
            if not new:
                return 0
            workflow = session.get(Workflow, rule.workflow_id, with_for_update=True) if rule.workflow_id else None
            if workflow is None or workflow.status != "running":
                workflow = Workflow(name=rule.workflow, status="running")
                session.add(workflow)
                session.flush()
                graph.lock_workflows(session, [workflow.id])  # newer than the one held: still in key order
                rule.workflow_id = workflow.id
                log.info("trigger rule %s: workflow %d opened", rule.name, workflow.id)
            folder = Path(rule.folder)
            tasks = []
            for rel in new:
                doc = {"name": task_name(rel), "app": rule.app, "params": fswatch.fill(rule.params, folder / rel),
                       "tags": {**rule.tags, "trigger": rule.name}, **({"resources": rule.resources} if rule.resources else {}),
                       **({"site": rule.pin} if rule.pin else {})}  # fmt: skip
                tasks.append(task_from_dict(doc, f"trigger rule {rule.name!r}, file {rel}"))
            specs.validate(tasks, self.store.apps_by_site(session))
            taskstore.insert(session, workflow.id, tasks, existing={})
            session.execute(
                text("UPDATE trigger_files f SET task_id = v.task FROM unnest(CAST(:paths AS text[]), CAST(:tasks AS text[])) AS v(path, task)"
                     " WHERE f.rule_id = :rule AND f.path = v.path"),
                {"rule": rule.id, "paths": new, "tasks": [f"{workflow.id}/{t.name}" for t in tasks]},
            )  # fmt: skip
        self.store.db.notify(place=True)
        return len(tasks)

    def run(self, stop: threading.Event) -> None:
        self.watcher.run(stop)
