"""The launcher's side of the site database: leases, acquisition, batched writes, kills.

Thin SQL over the jobstore. Every function takes a session (one transaction) and the launcher's
id; a write for a job this launcher no longer holds is skipped, never applied. Leases
(register, renew, reap, end) live in ``balsam.site.db.leases``: the site agent reaps them too.

Acquisition is one statement: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks unheld runnable jobs
that fit this launcher, and the same statement marks them held (``launcher_id``), so two
launchers never take one job. A launcher renews its lease (``launchers.heartbeat_at``) every few
seconds; any launcher finding another's lease expired marks it lost and takes its jobs back.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from balsam.errors import BalsamError
from balsam.launcher.lifecycle import HeldJob
from balsam.site.db import jobstore
from balsam.site.db.jobstore import Change
from balsam.site.templates import CommandTemplate
from balsam.states import JobState
from sqlalchemy import text
from sqlalchemy.orm import Session

S = JobState

# States a launcher takes jobs in. READY only with nothing to stage in; the post-run states are
# jobs a lost launcher left half-done, finished by whoever takes them.
PRE_RUN = (S.READY, S.STAGED_IN, S.PREPROCESSED, S.RESTART_READY)
POST_RUN = (S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT)


@dataclass(frozen=True)
class Fit:
    """What this launcher can run: its filters and the size of its largest job."""

    serial: bool
    max_nodes: int
    max_cores_per_node: int
    max_gpus_per_node: int
    workflow: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    minutes_left: float | None = None  # jobs estimated to need longer are not taken

    def size_sql(self) -> str:
        """Jobs small enough for this launcher's nodes (and single-rank, in serial mode)."""
        size = [
            "j.nodes <= :max_nodes",
            "j.ranks_per_node * j.threads_per_rank <= :max_cores",
            "j.ranks_per_node * j.gpus_per_rank <= :max_gpus",
        ]
        if self.serial:
            size.append("j.nodes = 1 AND j.ranks_per_node = 1")
        return "(" + " AND ".join(size) + ")"

    def filter_sql(self) -> str:
        """Unheld jobs in a state a launcher takes, matching the user's filters (and, for an Argo task
        still to start, the fence: ``ARGO_FENCE``)."""
        clauses = [
            "j.launcher_id IS NULL",
            (
                f"((j.state = ANY(:pre_run) AND (j.state <> 'READY' OR j.stage_in = '[]'::jsonb) AND {ARGO_FENCE})"
                " OR (j.state = ANY(:post_run) AND (j.state <> 'POSTPROCESSED' OR j.stage_out = '[]'::jsonb)))"
            ),
        ]
        if self.workflow:
            clauses.append("j.workflow = :workflow")
        if self.tags:
            clauses.append("j.tags @> CAST(:tags AS jsonb)")
        return " AND ".join(clauses)

    def sql(self) -> str:
        """The WHERE clause (on ``j``) for jobs this launcher takes; post-run jobs need no room."""
        fits = self.size_sql()
        if self.minutes_left is not None:
            fits = f"({fits} AND (j.wall_time_min IS NULL OR j.wall_time_min <= :minutes_left))"
        return f"{self.filter_sql()} AND (j.state = ANY(:post_run) OR {fits})"

    def params(self) -> dict[str, Any]:
        return {
            "pre_run": [s.value for s in PRE_RUN],
            "post_run": [s.value for s in POST_RUN],
            "max_nodes": self.max_nodes,
            "max_cores": self.max_cores_per_node,
            "max_gpus": self.max_gpus_per_node,
            "minutes_left": self.minutes_left,
            "workflow": self.workflow,
            "tags": json.dumps(self.tags),
        }


# An Argo task starts only while the site holds the coordinator's lease, only at a launcher the
# heartbeat that earned the lease counted, only once the coordinator has confirmed its assignment,
# and only if it is of the coordinator the site syncs with now: what the coordinator never confirmed
# surely never started, and what it did ends with the launchers it was told of, so it may place
# either elsewhere (docs/argo.md).
ARGO_LEASE = "l.lease_until > now() AND :me = ANY(l.lease_launchers)"
ARGO_FENCE = (
    f"(j.argo_task_id IS NULL OR EXISTS (SELECT 1 FROM argo_link l WHERE {ARGO_LEASE}"
    " AND l.coordinator = j.argo_coordinator AND (j.argo_seq IS NULL OR j.argo_seq <= l.confirmed)))"
)


def argo_lease_left(session: Session, launcher_id: int) -> float | None:
    """Seconds left of the site's Argo lease for this launcher by the database's clock (None: none). The
    caller counts them from before it asked, so its own view of the lease ends a little early, never late."""
    return session.execute(
        text(f"SELECT extract(epoch FROM lease_until - now()) FROM argo_link l WHERE {ARGO_LEASE}"), {"me": launcher_id}
    ).scalar()


def release(session: Session, launcher_id: int, job_ids: list[int], why: str) -> None:
    """Let go of held jobs without moving them (they wait for another launcher, or for later)."""
    released = session.execute(
        text("UPDATE jobs SET launcher_id = NULL WHERE id = ANY(:ids) AND launcher_id = :me RETURNING id"), {"ids": job_ids, "me": launcher_id}
    ).scalars().all()
    if released:
        jobstore.note(session, released, f"released by launcher {launcher_id}: {why}")


# -- jobs --------------------------------------------------------------------------------------


_ACQUIRE = """
WITH picked AS (
    SELECT j.id FROM jobs j WHERE {where} ORDER BY j.id LIMIT :limit FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET launcher_id = :me FROM picked, apps
WHERE jobs.id = picked.id AND apps.id = jobs.app_id
RETURNING jobs.id, jobs.name, jobs.workflow, jobs.state, jobs.parameters, jobs.nodes, jobs.ranks_per_node,
    jobs.threads_per_rank, jobs.gpus_per_rank, jobs.node_packing_count, jobs.wall_time_min, jobs.stage_out,
    jobs.data, jobs.retry_count, apps.name AS app_name, apps.command_template, apps.environment,
    apps.preprocess, apps.postprocess, apps.on_error, apps.max_retries, apps.on_timeout, apps.image, apps.launch,
    jobs.argo_task_id IS NOT NULL AS argo
"""


def acquire(session: Session, launcher_id: int, fit: Fit, limit: int) -> tuple[list[HeldJob], list[tuple[int, str]]]:
    """Take up to ``limit`` jobs; returns them, and (id, reason) for any whose command cannot be built."""
    if limit <= 0:
        return [], []
    rows = session.execute(text(_ACQUIRE.format(where=fit.sql())), {**fit.params(), "limit": limit, "me": launcher_id}).all()
    jobs, broken = [], []
    for row in sorted(rows, key=lambda r: r.id):
        try:
            jobs.append(_held(row))
        except BalsamError as exc:
            broken.append((row.id, str(exc)))
    return jobs, broken


def _held(row: Any) -> HeldJob:
    params = dict(row.parameters)
    return HeldJob(
        id=row.id, name=row.name, workflow=row.workflow, state=JobState(row.state), app_name=row.app_name,
        command=_render(row.command_template, params, "command"), environment={k: str(v) for k, v in row.environment.items()},
        preprocess=_render(row.preprocess, params, "preprocess step") if row.preprocess else None,
        postprocess=_render(row.postprocess, params, "postprocess step") if row.postprocess else None,
        on_error=row.on_error, max_retries=row.max_retries, on_timeout=row.on_timeout, image=row.image,
        retry_count=row.retry_count, nodes=row.nodes, ranks_per_node=row.ranks_per_node,
        threads_per_rank=row.threads_per_rank, gpus_per_rank=row.gpus_per_rank,
        node_packing_count=row.node_packing_count, wall_time_min=row.wall_time_min,
        stage_out=list(row.stage_out), data=dict(row.data), params=params, launch=row.launch, argo=row.argo,
    )  # fmt: skip


# A batch of jobs mostly shares a few apps: each template is split and checked once, not once a job.
_parse = functools.lru_cache(maxsize=256)(CommandTemplate.parse)


def _render(template: str, params: dict[str, Any], what: str) -> list[str]:
    parsed = _parse(template)
    missing = [name for name in parsed.placeholders if name not in params]
    if missing:
        raise BalsamError(f"the app's {what} names {{{missing[0]}}}, which the job has no parameter for")
    return parsed.render(params)


def write(
    session: Session, launcher_id: int, changes: list[Change], rescues: dict[int, dict[str, Any]] | None = None
) -> list[int]:
    """Write a batch of changes to held jobs, and create rescue jobs for those that asked for one.

    Returns the ids skipped because the launcher no longer holds them (or a user killed them).
    """
    return jobstore.apply_changes(session, changes, owner=launcher_id, rescues=rescues)[1]


def killed(session: Session, launcher_id: int) -> list[int]:
    """Held jobs a user killed meanwhile; they are let go, and the launcher stops their processes."""
    return list(
        session.execute(
            text("UPDATE jobs SET launcher_id = NULL WHERE launcher_id = :id AND state = :killed RETURNING id"),
            {"id": launcher_id, "killed": S.USER_KILLED.value},
        ).scalars().all()
    )


def note_too_big(session: Session, launcher_id: int, fit: Fit, already: set[int], limit: int = 100) -> list[int]:
    """Note (once per launcher) runnable jobs matching its filters that are too big for it."""
    rows = session.execute(
        text(
            "SELECT j.id, j.nodes, j.ranks_per_node, j.threads_per_rank, j.gpus_per_rank FROM jobs j "
            f"WHERE {fit.filter_sql()} AND j.state = ANY(:pre_run) AND NOT {fit.size_sql()} "
            "AND NOT (j.id = ANY(:seen)) ORDER BY j.id LIMIT :limit"
        ),
        {**fit.params(), "seen": sorted(already), "limit": limit, "me": launcher_id},
    ).all()
    for row in rows:
        needs = (
            f"{row.nodes} node(s) of {row.ranks_per_node * row.threads_per_rank} core(s)"
            f" and {row.ranks_per_node * row.gpus_per_rank} GPU(s)"
        )
        has = f"{fit.max_nodes} node(s) of at most {fit.max_cores_per_node} core(s) and {fit.max_gpus_per_node} GPU(s)"
        if fit.serial and (row.nodes > 1 or row.ranks_per_node > 1):
            reason = "it is an MPI job and this launcher runs in serial mode"
        else:
            reason = f"it needs {needs}; this launcher has {has}"
        jobstore.note(session, [row.id], f"left for another launcher: {reason}")
    return [row.id for row in rows]
