"""The graph's locks, the numbered orders to sites, and the endings of workflows.

Every transaction that changes tasks already in the graph takes its locks first, before any row:
``lock_workflows`` for the workflows it touches (site message batches, placement rounds, kills,
additions, submissions: nothing a task does reaches outside its workflow, whose parents, children
and ending are its own), or ``lock_graph`` for the whole graph (what acts on every task of a site:
its health, its coming back from another coordinator). A workflow's lock is taken with the graph's
lock shared, in key order, so writers of different workflows run side by side and none deadlock on
each other: each waits only for locks taken in the same order. The tasks themselves are written by
``balsam.argo.db.taskstore`` alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import text
from sqlalchemy.orm import Session

from balsam.argo.database import SENT_TO
from balsam.argo.db.models import FINAL
from balsam.protos import argo_pb2 as pb
from balsam.wire.convert import KillOrder, kill_message
from balsam.wire.outbox import Outbox

_GRAPH_LOCK = 0xA7601  # a bigint key: its space is not the two-int keys' below
_WORKFLOW_LOCKS = 0xA7602  # the first int of a workflow's lock; the second is its id modulo _KEYS
_KEYS = 2**31  # two workflows 2^31 ids apart share a lock: needlessly queued, never wrong
# Messages to each site, numbered by its counter (``site_counters.last_seq``) and kept until acknowledged.
SITE_OUTBOX = Outbox("site_outbox", "site_counters", key_column="site", counter_key="site")

# A site's row is locked FOR NO KEY UPDATE (``with_for_update=SITE_ROW_LOCK``), never FOR UPDATE,
# which would also wait for every transaction writing a row that refers to the site (a message of
# its outbox, a fence, its counter: each holds the site's row FOR KEY SHARE), so that a placement
# round numbering thousands of assignments held the site's events and heartbeats back until it
# committed (docs/scaling.md).
SITE_ROW_LOCK = {"key_share": True}


def lock_graph(session: Session) -> None:
    """The whole graph, for this transaction: no workflow's writer runs beside it."""
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _GRAPH_LOCK})


def lock_workflows(session: Session, workflow_ids: Iterable[int]) -> None:
    """These workflows, for this transaction (the graph's lock shared, then each one's, in key order).

    Take them all in one call, before any row: a second call may only add workflows newer than all
    those held (one just made)."""
    keys = sorted({workflow_id % _KEYS for workflow_id in workflow_ids})
    session.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": _GRAPH_LOCK})
    if keys:  # a scan of the sorted array: taken one row at a time, in its order
        session.execute(text("SELECT count(pg_advisory_xact_lock(:kind, k)) FROM unnest(CAST(:keys AS int[])) AS k"),
                        {"kind": _WORKFLOW_LOCKS, "keys": keys})  # fmt: skip


def send(session: Session, site: str, messages: Sequence[pb.CoordinatorMessage]) -> None:
    """Number ``messages`` to ``site`` in this transaction; they leave once it commits."""
    SITE_OUTBOX.enqueue(session, messages, site)
    session.info.setdefault(SENT_TO, set()).add(site)  # the site's stream looks at its outbox again after the commit


def kill_orders(session: Session, placed: Iterable[tuple[str | None, str, int]], reason: str) -> dict[str, int]:
    """Tell each site to kill its copy ``(site, task_id, attempt)`` of a task (None: not placed, nothing
    to tell); returns the number of each task's kill order."""
    by_site: dict[str, list[tuple[str, pb.CoordinatorMessage]]] = {}
    for site, task_id, attempt in placed:
        if site:
            by_site.setdefault(site, []).append((task_id, kill_message(KillOrder(task_id, attempt, reason))))
    numbers = {}
    for site in sorted(by_site):
        send(session, site, [message for _, message in by_site[site]])
        numbers.update({task_id: message.seq for task_id, message in by_site[site]})
    return numbers


def site_event(session: Session, site: str, message: str) -> None:
    """An event of the site itself (its health), in the watch stream of every workflow (workflow 0)."""
    session.execute(
        text("INSERT INTO task_events (task_id, workflow_id, site, from_state, to_state, message) VALUES ('', 0, :s, '', '', :msg)"),
        {"s": site, "msg": message},
    )


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
    keep_task_counts(session, [row.id for row in ended])
    return [(row.id, row.status) for row in ended]


# The workflows' (``:ids``) tasks by site and state: what listings show, counted live or kept.
TASK_COUNTS = ("SELECT workflow_id, coalesce(site, '') AS site, state, count(*) AS n FROM tasks"
               " WHERE workflow_id = ANY(:ids) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")  # fmt: skip


def keep_task_counts(session: Session, ended_ids: list[int]) -> None:
    """Store each ended workflow's task counts in its row (``Workflow.task_counts``), in the
    transaction that ends it, after its tasks' last change: the trigger drops them at the next one."""
    if ended_ids:
        session.execute(
            text(
                f"WITH c AS ({TASK_COUNTS}) UPDATE workflows w SET task_counts = coalesce(("
                "  SELECT jsonb_agg(jsonb_build_array(c.site, c.state, c.n) ORDER BY c.site, c.state) FROM c WHERE c.workflow_id = w.id"
                "), '[]'::jsonb) WHERE w.id = ANY(:ids)"
            ),
            {"ids": sorted(set(ended_ids))},
        )


def mark_ended(session: Session, workflow_id: int, status: str, message: str) -> None:
    """The one event (task_id '') that records the end of a workflow: watchers stop at it."""
    session.execute(
        text(
            "INSERT INTO task_events (task_id, workflow_id, site, from_state, to_state, message, workflow_status)"
            " VALUES ('', :wf, '', '', '', :msg, :status)"
        ),
        {"wf": workflow_id, "msg": message, "status": status},
    )
