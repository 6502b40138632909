"""Dynamic workflows: what a running job's own code may do to the site it runs in.

The launcher gives every job ``BALSAM_JOB_ID`` and ``BALSAM_SITE``, so a Python program run as a
job can grow its workflow while it runs:

    from balsam.site import current_job, spawn_child

    me = current_job()
    for n in range(me.parameters["fanout"]):
        spawn_child("analyse", params={"part": n})   # runs after this job finishes

Everything done this way is in the event log, naming the job that did it.
"""

from __future__ import annotations

import os
from typing import Any

from balsam.errors import BalsamError
from balsam.site.api import Site
from balsam.site.db import jobstore
from balsam.site.db.models import Job

JOB_ID_VARIABLE = "BALSAM_JOB_ID"


def current_job_id() -> int:
    """The id of the job this process runs as (from ``BALSAM_JOB_ID``, set by the launcher)."""
    value = os.environ.get(JOB_ID_VARIABLE)
    if not value:
        raise BalsamError(f"not running inside a Balsam job: {JOB_ID_VARIABLE} is not set")
    try:
        return int(value)
    except ValueError:
        raise BalsamError(f"{JOB_ID_VARIABLE} must be a job id, got {value!r}") from None


def _site(site: Site | None) -> Site:
    return site if site is not None else Site.open()


def current_job(site: Site | None = None) -> Job:
    """This job's row: its parameters, tags, data and state."""
    return _site(site).job(current_job_id())


def spawn_child(app: str, params: dict[str, Any] | None = None, *, depends: bool = True, site: Site | None = None, **fields: Any) -> Job:
    """A new job; with ``depends`` (the default) it waits for this job to finish, else it is independent.

    ``fields`` are those of ``Site.add_job`` (name, workflow, nodes, tags, ...); the workflow
    defaults to this job's own.
    """
    me = current_job_id()
    opened = _site(site)
    parent = opened.job(me)
    spec = {"app": app, "params": dict(params or {}), "workflow": parent.workflow, **fields}
    if depends:
        spec["parents"] = [*spec.get("parents", []), me]
    (child_id,) = opened.add_jobs([spec])
    relation = "child" if depends else "independent job"
    with opened.session() as session:
        jobstore.note(session, [me], f"spawned {relation} {child_id}")
        jobstore.note(session, [child_id], f"spawned by job {me}")
    return opened.job(child_id)


def kill(job_id: int, site: Site | None = None) -> None:
    """Kill another job (or this one) from inside a running job; the event names the killer."""
    _site(site).kill_job(job_id, message=f"killed by job {current_job_id()}")
