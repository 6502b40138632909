"""Writing jobs and moving them through the state machine, set-based.

Everything here runs inside the caller's transaction, so a request is all or nothing. Creation
uses COPY (100,000 jobs in a few seconds); a transition locks its rows, checks every move against
``balsam.states``, updates the rows and writes one event-log row per job in the same transaction.
When jobs finish, their children's counts of unfinished parents drop, and those reaching zero
become READY: one UPDATE per batch of finished parents, for any fan-in or fan-out.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from balsam.errors import BalsamError
from balsam.site.specs import JobSpec, batch_name_index
from balsam.states import JobState, check_transition

S = JobState

_JOB_COPY_COLUMNS = (
    "id", "name", "workflow", "app_id", "parameters", "state", "num_nodes", "ranks_per_node",
    "threads_per_rank", "gpus_per_rank", "node_packing_count", "wall_time_min", "tags", "data",
    "input_files", "output_files", "stage_in", "stage_out", "error_tail", "retry_count", "pending_parents",
)  # fmt: skip


_UPDATABLE = frozenset({"return_code", "error_tail", "retry_count", "data", "batch_job_id"})


def _copy_field(value: Any) -> str:
    """One field of PostgreSQL's COPY text format."""
    if value is None:
        return r"\N"
    text_value = value if isinstance(value, str) else str(value)
    if "\\" in text_value or "\t" in text_value or "\n" in text_value or "\r" in text_value:
        text_value = text_value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text_value


def _json(value: Any, empty: str) -> str:
    return json.dumps(value, separators=(",", ":")) if value else empty


def _copy(session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    buffer.writelines("\t".join(map(_copy_field, row)) + "\n" for row in rows)
    buffer.seek(0)
    cursor = session.connection().connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)
    finally:
        cursor.close()


def lock_existing_parents(session: Session, specs: list[JobSpec]) -> dict[int, str]:
    """State of every existing job named as a parent, locked until commit; unknown ids are errors.

    The share lock keeps a parent from finishing between this read and our commit: either it
    finished before (we see JOB_FINISHED and do not count it) or it finishes after, when its
    release of children sees our committed links.
    """
    wanted = sorted({p for spec in specs for p in spec.parents if isinstance(p, int)})
    if not wanted:
        return {}
    rows = session.execute(
        text("SELECT id, state FROM jobs WHERE id = ANY(:ids) ORDER BY id FOR SHARE"), {"ids": wanted}
    ).all()
    states = {row.id: row.state for row in rows}
    for spec in specs:
        for parent in spec.parents:
            if isinstance(parent, int) and parent not in states:
                raise BalsamError(f"{spec.label}: unknown parent job {parent}")
    return states


def insert_jobs(session: Session, specs: list[JobSpec], app_ids: dict[str, int]) -> list[int]:
    """Create the (already validated) jobs with their parent links and first events; their ids."""
    if not specs:
        return []
    parent_states = lock_existing_parents(session, specs)
    ids = session.execute(
        text("SELECT nextval(pg_get_serial_sequence('jobs', 'id')) FROM generate_series(1, :n)"), {"n": len(specs)}
    ).scalars().all()
    index = batch_name_index(specs)
    links: list[tuple[int, int]] = []
    rows = []
    events = []
    for job_id, spec in zip(ids, specs):
        parents = {ids[index[p]] if isinstance(p, str) else p for p in spec.parents}  # type: ignore[index]
        pending = sum(1 for p in parents if parent_states.get(p) != S.JOB_FINISHED)
        links.extend((job_id, p) for p in parents)
        state = S.AWAITING_PARENTS if pending else S.READY
        events.append((job_id, S.CREATED.value, state.value, f"created; waiting for {pending} parent(s)" if pending else "created"))
        rows.append((
            job_id, spec.name, spec.workflow, app_ids[spec.app], _json(spec.params, "{}"), state.value,
            spec.nodes, spec.ranks_per_node, spec.threads_per_rank, spec.gpus_per_rank, spec.node_packing,
            spec.wall_time, _json(spec.tags, "{}"), _json(spec.data, "{}"), _json(spec.inputs, "{}"),
            _json(spec.outputs, "[]"), _json(spec.stage_in, "[]"), _json(spec.stage_out, "[]"), "", 0, pending,
        ))  # fmt: skip
    _copy(session, "jobs", _JOB_COPY_COLUMNS, rows)
    if links:
        _copy(session, "job_parents", ("child_id", "parent_id"), links)
    _copy(session, "job_events", ("job_id", "from_state", "to_state", "message"), events)
    return list(ids)


def transition(
    session: Session,
    job_ids: Iterable[int],
    to_state: JobState,
    message: str = "",
    **fields: Any,
) -> list[int]:
    """Move every job to ``to_state`` (setting ``fields`` too), with one event each.

    Refuses the whole batch, naming the job and both states, if any move is not in the table.
    """
    ids = sorted(set(job_ids))
    if not ids:
        return []
    to_state = JobState(to_state)
    rows = session.execute(
        text("SELECT id, state FROM jobs WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"), {"ids": ids}
    ).all()
    found = {row.id: row.state for row in rows}
    for job_id in ids:
        if job_id not in found:
            raise BalsamError(f"no job {job_id}")
        check_transition(JobState(found[job_id]), to_state, job_id)
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not an updatable job column: {sorted(unknown)}")
    assignments = "".join(f", {name} = :f_{name}" for name in fields)
    session.execute(
        text(f"UPDATE jobs SET state = :to, updated_at = now(){assignments} WHERE id = ANY(:ids)"),
        {"to": to_state.value, "ids": ids, **{f"f_{k}": v for k, v in fields.items()}},
    )
    session.execute(
        text(
            "INSERT INTO job_events (job_id, from_state, to_state, message) "
            "SELECT unnest(CAST(:ids AS bigint[])), unnest(CAST(:froms AS text[])), :to, :msg"
        ),
        {"ids": ids, "froms": [found[i] for i in ids], "to": to_state.value, "msg": message},
    )
    if to_state == S.JOB_FINISHED:
        release_children(session, ids)
    return ids


def release_children(session: Session, finished_ids: list[int]) -> list[int]:
    """Count the finished parents off their children; those left with none become READY."""
    # Lock the children in id order first, so transactions finishing different parents of the
    # same children queue up behind each other instead of deadlocking.
    session.execute(
        text(
            "SELECT id FROM jobs WHERE id IN (SELECT child_id FROM job_parents WHERE parent_id = ANY(:ids)) "
            "ORDER BY id FOR UPDATE"
        ),
        {"ids": finished_ids},
    )
    ready = session.execute(
        text(
            "WITH released AS ("
            "  SELECT child_id, count(*) AS n FROM job_parents WHERE parent_id = ANY(:ids) GROUP BY child_id"
            "), updated AS ("
            "  UPDATE jobs SET pending_parents = jobs.pending_parents - released.n"
            "  FROM released WHERE jobs.id = released.child_id"
            "  RETURNING jobs.id, jobs.state, jobs.pending_parents"
            ") SELECT id FROM updated WHERE pending_parents = 0 AND state = :waiting"
        ),
        {"ids": finished_ids, "waiting": S.AWAITING_PARENTS.value},
    ).scalars().all()
    if ready:
        transition(session, ready, S.READY, "all parents finished")
    return list(ready)


def reopen(session: Session, job_id: int) -> JobState:
    """Reset a FAILED or USER_KILLED job: back to CREATED, then READY or AWAITING_PARENTS."""
    transition(session, [job_id], S.CREATED, "reset by user", retry_count=0, return_code=None, error_tail="")
    pending = session.execute(
        text(
            "SELECT count(*) FROM job_parents p JOIN jobs j ON j.id = p.parent_id "
            "WHERE p.child_id = :id AND j.state <> :done"
        ),
        {"id": job_id, "done": S.JOB_FINISHED.value},
    ).scalar_one()
    session.execute(text("UPDATE jobs SET pending_parents = :n WHERE id = :id"), {"n": pending, "id": job_id})
    target = S.AWAITING_PARENTS if pending else S.READY
    transition(session, [job_id], target, f"waiting for {pending} parent(s)" if pending else "")
    return target


