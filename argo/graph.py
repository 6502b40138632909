"""The global graph's bookkeeping inside one transaction: events, releases, blocks, kills, endings.

Every transaction that changes tasks already in the graph takes ``lock_graph`` first. The
coordinator's writers (site message batches, placement rounds, kills, additions) are short, and one
lock taken first makes them queue instead of deadlocking on each other's rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from balsam.argo.db.models import FINAL
from balsam.pgcopy import copy_rows
from balsam.protos import argo_pb2 as pb
from balsam.states import JobState

S = JobState
_GRAPH_LOCK = 0xA7601
EVENT_COLUMNS = ("task_id", "workflow_id", "site", "from_state", "to_state", "at", "message")


def lock_graph(session: Session) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _GRAPH_LOCK})


def record_events(session: Session, rows: Iterable[tuple[str, int, str, str, str, datetime | None, str]]) -> None:
    """Event rows ``(task_id, workflow_id, site, from, to, at, message)``; ``at`` None: now."""
    rows = [(*row[:5], row[5].isoformat() if row[5] else "now", row[6]) for row in rows]
    if rows:
        copy_rows(session, "task_events", EVENT_COLUMNS, rows)


def release_children(session: Session, finished: Sequence[str]) -> list[str]:
    """Count finished parents off their children; unplaced children left with none become READY."""
    if not finished:
        return []
    ready = session.execute(
        text(
            "WITH released AS ("
            "  SELECT child_id, count(*) AS n FROM task_parents WHERE parent_id = ANY(:ids) GROUP BY child_id"
            "), updated AS ("
            "  UPDATE tasks SET pending_parents = tasks.pending_parents - released.n"
            "  FROM released WHERE tasks.id = released.child_id"
            "  RETURNING tasks.id, tasks.workflow_id, tasks.state, tasks.pending_parents, tasks.site, tasks.blocked"
            ") SELECT id, workflow_id FROM updated"
            "  WHERE pending_parents = 0 AND state = 'AWAITING_PARENTS' AND site IS NULL AND NOT blocked"
        ),
        {"ids": list(finished)},
    ).all()
    if ready:
        ids = [row.id for row in ready]
        session.execute(text("UPDATE tasks SET state = 'READY', updated_at = now() WHERE id = ANY(:ids)"), {"ids": ids})
        record_events(session, ((row.id, row.workflow_id, "", S.AWAITING_PARENTS, S.READY, None, "all parents finished") for row in ready))
    return [row.id for row in ready]


def block_descendants(session: Session, ended: Sequence[str]) -> int:
    """Tasks downstream of a failed or killed one can never run: mark them blocked."""
    if not ended:
        return 0
    result = session.execute(
        text(
            "WITH RECURSIVE below(id) AS ("
            "  SELECT child_id FROM task_parents WHERE parent_id = ANY(:ids)"
            "  UNION SELECT p.child_id FROM task_parents p JOIN below ON p.parent_id = below.id"
            f") UPDATE tasks SET blocked = true WHERE id IN (SELECT id FROM below) AND NOT blocked AND state NOT IN {FINAL}"
        ),
        {"ids": list(ended)},
    )
    return result.rowcount


def enqueue(session: Session, site: str, bodies: Sequence[pb.CoordinatorMessage]) -> None:
    """Number messages to ``site`` (after the site's last number) and keep them until acknowledged."""
    if not bodies:
        return
    last = session.execute(
        text("UPDATE sites SET last_seq = last_seq + :n WHERE name = :site RETURNING last_seq"),
        {"n": len(bodies), "site": site},
    ).scalar_one()
    first = last - len(bodies) + 1
    rows = []
    for offset, body in enumerate(bodies):
        body.seq = first + offset
        rows.append((site, body.seq, "\\x" + body.SerializeToString().hex()))
    copy_rows(session, "site_outbox", ("site", "seq", "body"), rows)


def kill_orders(session: Session, placed: Iterable[tuple[str, str, int]], reason: str) -> None:
    """Tell each site to kill its copy ``(site, task_id, attempt)`` of a task."""
    by_site: dict[str, list[pb.CoordinatorMessage]] = {}
    for site, task_id, attempt in placed:
        order = pb.CoordinatorMessage(kill=pb.KillOrder(task_id=task_id, attempt=attempt, reason=reason))
        by_site.setdefault(site, []).append(order)
    for site in sorted(by_site):
        enqueue(session, site, by_site[site])


def close_workflows(session: Session, workflow_ids: Iterable[int]) -> list[tuple[int, str]]:
    """End each running workflow in which no task can move any more; returns (id, status) of those ended."""
    ids = sorted(set(workflow_ids))
    if not ids:
        return []
    ended = session.execute(
        text(
            "UPDATE workflows w SET status = CASE WHEN EXISTS ("
            f"    SELECT 1 FROM tasks t WHERE t.workflow_id = w.id AND t.state <> 'JOB_FINISHED') THEN 'failed' ELSE 'finished' END,"
            "  ended_at = now()"
            " WHERE w.id = ANY(:ids) AND w.status = 'running'"
            f"  AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.workflow_id = w.id AND NOT t.blocked AND t.state NOT IN {FINAL})"
            " RETURNING w.id, w.status, w.name"
        ),
        {"ids": ids},
    ).all()
    for row in ended:
        mark_ended(session, row.id, row.status, f"workflow {row.name!r} {row.status}")
    return [(row.id, row.status) for row in ended]


def mark_ended(session: Session, workflow_id: int, status: str, message: str) -> None:
    session.execute(
        text(
            "INSERT INTO task_events (task_id, workflow_id, site, from_state, to_state, message, workflow_status)"
            " VALUES ('', :wf, '', '', '', :msg, :status)"
        ),
        {"wf": workflow_id, "msg": message, "status": status},
    )
