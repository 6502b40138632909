"""The storage types of the Argo coordinator: one SQLAlchemy model per table.

Alembic migrations (``migrations/versions``) create the tables; a test checks they agree.
A task's id is ``WORKFLOW/NAME`` (``WORKFLOW/SITE:JOB`` for one spawned at a site), readable in
``argo kill`` and unique across workflows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from balsam.states import FINAL_STATES, JobState


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


WORKFLOW_STATUSES = ("running", "finished", "failed", "cancelled")
FINAL = tuple(sorted(s.value for s in FINAL_STATES))


class Workflow(Base):
    __tablename__ = "workflows"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # running until no task can move any more; then finished (all JOB_FINISHED), failed or cancelled.
    status: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[datetime] = _now()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who may see it: the owner and the users of this project ('' : the owner only).
    project: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # Who submitted it (the user's name; '' : unknown, or a server without tokens); migration 0008.
    submitted_by: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # Once it has ended: its tasks counted by (site, state), as [[site, state, n], ...], so listing
    # workflows costs the same however many tasks they hold (migration 0009). Any later insert or
    # update of one of its tasks drops it (a trigger, whoever the writer), and it is counted live.
    task_counts: Mapped[list[Any] | None] = mapped_column(JSONB)

    __table_args__ = (CheckConstraint(f"status IN {WORKFLOW_STATUSES}", name="workflow_status"),)


class Task(Base):
    """A node of the global graph, and the state of its current attempt (mirrored from its site).

    Written only by ``balsam.argo.db.taskstore``."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(420), primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(210))
    app: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outputs: Mapped[list[Any]] = mapped_column(default=list)
    # Where the finished attempt left its outputs: name -> {"location": URI, "size": bytes, "site": name}.
    output_locations: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pin: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), default=JobState.CREATED.value)
    pending_parents: Mapped[int] = mapped_column(Integer, default=0)
    # A parent failed or was killed: this task can never run (until the parent is redone).
    blocked: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    site: Mapped[str | None] = mapped_column(String(200))  # where the current attempt is placed
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    site_job_id: Mapped[int | None] = mapped_column(BigInteger)
    sites_tried: Mapped[list[Any]] = mapped_column(default=list)
    return_code: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Why placement cannot place it now ('' : it is not waiting for a site); migration 0005.
    waiting: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The number of the current attempt's assignment in its site's outbox (migration 0006): the site
    # may start it only once the coordinator confirms that number (fencing, docs/argo.md).
    assigned_seq: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        Index("ix_tasks_workflow_state", "workflow_id", "state"),
        Index("ix_tasks_site_state", "site", "state"),
        # The placement loop's query: ready and not placed.
        Index("ix_tasks_placeable", "workflow_id", postgresql_where=text("site IS NULL AND state = 'READY'")),
        # Whether a workflow can still move: one probe of this index instead of a scan of its tasks.
        Index("ix_tasks_active", "workflow_id", postgresql_where=text(f"NOT blocked AND state NOT IN {FINAL}")),
        # The sites' counts of placed tasks that have not ended (ListSites): the work that moves, not all stored.
        Index("ix_tasks_placed_unended", "site", postgresql_where=text(f"site IS NOT NULL AND state NOT IN {FINAL}")),
        CheckConstraint("pending_parents >= 0", name="task_pending_parents"),
    )


class TaskParent(Base):
    """A dependency edge. No foreign keys: both ends are checked by the spec validation in the
    transaction that inserts them, and the two per-row checks were most of a 100,000-task submit."""

    __tablename__ = "task_parents"

    child_id: Mapped[str] = mapped_column(String(420), primary_key=True)
    parent_id: Mapped[str] = mapped_column(String(420), primary_key=True)

    __table_args__ = (Index("ix_task_parents_parent", "parent_id"),)


class TaskEvent(Base):
    """One state change of a task, at the coordinator or reported by its site: the watch stream."""

    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(420))
    workflow_id: Mapped[int] = mapped_column(BigInteger)
    site: Mapped[str] = mapped_column(String(200), default="", server_default="")
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = _now()
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Set on the one event (task_id '') that records the end of its workflow.
    workflow_status: Mapped[str | None] = mapped_column(String(16))
    # The task's attempt the event is about (0: before its first placement), and the kind of move (a
    # balsam.states.TaskMove, or "waiting", "illegal"; '' for a workflow's or a site's own event):
    # the timings of each attempt come from these (balsam.argo.timeline). Migration 0007.
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    move: Mapped[str] = mapped_column(String(16), default="", server_default="")

    __table_args__ = (
        Index("ix_task_events_workflow", "workflow_id", "id"),
        # A task's history (its page, its attempts) without a scan of every event (migration 0008).
        Index("ix_task_events_task", "task_id", "id"),
    )


class Site(Base):
    """A registered site, its health, what it applied of ours and we of its, and its lease.

    ``status``: ``up``; ``stalled`` (it is heard but does not acknowledge what it is sent);
    ``down`` (silent beyond the site timeout). ``acked``: the highest of our messages it applied;
    ``confirmed``: the highest assignment number we told it it may start; ``lease_until``: until
    when its launchers may start Argo tasks; ``launchers_end``: when every launcher it had running
    has surely ended (NULL: not known).
    """

    __tablename__ = "sites"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    apps: Mapped[list[Any]] = mapped_column(default=list)
    nodes: Mapped[int] = mapped_column(Integer, default=1)
    scheduler: Mapped[str] = mapped_column(String(20), default="")
    transfer_endpoint: Mapped[str] = mapped_column(Text, default="", server_default="")
    max_tasks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(8), default="up")
    heartbeat: Mapped[dict[str, Any]] = mapped_column(default=dict)
    registered_at: Mapped[datetime] = _now()
    last_seen_at: Mapped[datetime] = _now()
    # The highest site message applied here (the highest number given to a message to the site is
    # its ``SiteCounter``'s).
    last_applied: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    acked: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    launchers_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    channel_error: Mapped[str] = mapped_column(Text, default="", server_default="")

    __table_args__ = (CheckConstraint("status IN ('up', 'stalled', 'down')", name="site_status"),)


class SiteCounter(Base):
    """The highest number given to a message to the site (migration 0010).

    A row of its own, not a column of the site's: numbering messages locks it until the numbering
    transaction commits (so the numbers leave in order, without gaps), and a placement round
    numbering thousands of assignments held the site's row so long that the site's events and
    heartbeats, written to that row, waited behind it (docs/scaling.md). Made with the site."""

    __tablename__ = "site_counters"

    site: Mapped[str] = mapped_column(ForeignKey("sites.name", ondelete="CASCADE"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class SiteOutbox(Base):
    """A numbered message to a site (a serialized ``CoordinatorMessage``), kept until acknowledged."""

    __tablename__ = "site_outbox"

    site: Mapped[str] = mapped_column(ForeignKey("sites.name", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()


class SiteFence(Base):
    """A task placed again away from this site before the site could start it: until the site has
    applied the kill order (``kill_seq``), no assignment from ``assignment_seq`` on is confirmed."""

    __tablename__ = "site_fences"

    site: Mapped[str] = mapped_column(ForeignKey("sites.name", ondelete="CASCADE"), primary_key=True)
    assignment_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kill_seq: Mapped[int] = mapped_column(BigInteger)


class CoordinatorInstance(Base):
    """This coordinator's identity (one row): task ids are unique per instance, so a site told of
    another instance numbers its sync afresh and keeps its old jobs apart."""

    __tablename__ = "coordinator"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance: Mapped[str] = mapped_column(String(64), server_default=text("gen_random_uuid()::text"))

    __table_args__ = (CheckConstraint("id = 1", name="coordinator_single"),)


class AuthToken(Base):
    """A credential, by the sha256 of its token (the token itself is never stored).

    kind: ``user`` (role owner | collaborator | viewer, with its projects), ``site`` (name: the site
    it may sync as) or ``enrol`` (one-time: exchanged for a site credential, then used up).
    """

    __tablename__ = "auth_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    projects: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None: never
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_auth_tokens_subject", "kind", "name"),
        CheckConstraint("kind IN ('user', 'site', 'enrol')", name="auth_token_kind"),
        CheckConstraint("role IN ('owner', 'collaborator', 'viewer', 'site')", name="auth_token_role"),
    )


# Trigger rules at the coordinator (migration 0003). Imported here so this block stands alone.
from sqlalchemy import Float, PrimaryKeyConstraint  # noqa: E402


class TriggerRule(Base):
    """Files appearing in a folder the coordinator sees become tasks of the rule's workflow.

    ``workflow_id`` is the running workflow the rule adds tasks to; when it has ended (all its
    tasks done), the next file opens a new workflow of the same name (``balsam.argo.triggers``).
    """

    __tablename__ = "trigger_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    folder: Mapped[str] = mapped_column(Text)
    recursive: Mapped[bool] = mapped_column(Boolean, default=False)
    patterns: Mapped[list[Any]] = mapped_column(default=list)
    ignore: Mapped[list[Any]] = mapped_column(default=list)
    app: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # templates filled from the file
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pin: Mapped[str | None] = mapped_column(String(200))
    workflow: Mapped[str] = mapped_column(String(200))
    workflow_id: Mapped[int | None] = mapped_column(ForeignKey("workflows.id", ondelete="SET NULL"))
    settle_s: Mapped[float] = mapped_column(Float, default=10.0)
    created_at: Mapped[datetime] = _now()

    __table_args__ = (CheckConstraint("settle_s >= 0", name="trigger_settle"),)


class TriggerFile(Base):
    """A file a rule has counted, once: the key is (rule, path below its folder)."""

    __tablename__ = "trigger_files"

    rule_id: Mapped[int] = mapped_column(ForeignKey("trigger_rules.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(String(420))  # NULL: there before the rule (skip_existing)
    seen_at: Mapped[datetime] = _now()

    __table_args__ = (PrimaryKeyConstraint("rule_id", "path", name="trigger_files_pkey"),)
