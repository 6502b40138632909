"""The storage types of a site: one SQLAlchemy model per table, the schema's one definition.

Alembic migrations (``migrations/versions``) create and upgrade the tables these describe; a test
checks that the migrated schema and these models agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from balsam.resources import Resources
from balsam.states import JobState


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class App(Base):
    """A program the site can run: a command template whose ``{placeholders}`` jobs fill in."""

    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    command_template: Mapped[str] = mapped_column(Text)
    # The placeholder names of the template, in order of first appearance.
    parameters: Mapped[list[Any]] = mapped_column(default=list)
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    preprocess: Mapped[str | None] = mapped_column(Text)
    postprocess: Mapped[str | None] = mapped_column(Text)
    on_error: Mapped[str] = mapped_column(String(16), default="fail")  # retry | rescue | fail
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    on_timeout: Mapped[str] = mapped_column(String(16), default="fail")  # retry | fail
    image: Mapped[str | None] = mapped_column(Text)
    # mpi: the launcher starts the ranks (through mpirun/srun for more than one); script: the
    # command starts once on the job's first node and starts its own ranks (`balsam qsub`).
    launch: Mapped[str] = mapped_column(String(16), default="mpi", server_default="mpi")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("on_error IN ('retry', 'rescue', 'fail')", name="app_on_error"),
        CheckConstraint("on_timeout IN ('retry', 'fail')", name="app_on_timeout"),
        CheckConstraint("max_retries >= 0", name="app_max_retries"),
        CheckConstraint("launch IN ('mpi', 'script')", name="app_launch"),
    )


class Job(Base):
    """One run of an app with its parameters, resources, files, dependencies and state."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    workflow: Mapped[str] = mapped_column(String(200), default="default")
    # Names an existing app, checked once per statement by triggers (migration 0012) instead of a
    # foreign key, whose check is a query per row; an app with jobs cannot be removed.
    app_id: Mapped[int] = mapped_column(Integer)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(20), default=JobState.CREATED.value)

    # The resources: the names of balsam.resources, as everywhere (``num_nodes`` until migration 0008).
    nodes: Mapped[int] = mapped_column(Integer, default=1)
    ranks_per_node: Mapped[int] = mapped_column(Integer, default=1)
    threads_per_rank: Mapped[int] = mapped_column(Integer, default=1)
    gpus_per_rank: Mapped[int] = mapped_column(Integer, default=0)
    node_packing_count: Mapped[int] = mapped_column(Integer, default=1)
    wall_time_min: Mapped[float | None] = mapped_column()

    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # {local name: location URI}; stage-in/out specs are lists of {"src": ..., "dest": ...}.
    input_files: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output_files: Mapped[list[Any]] = mapped_column(default=list)
    stage_in: Mapped[list[Any]] = mapped_column(default=list)
    stage_out: Mapped[list[Any]] = mapped_column(default=list)

    return_code: Mapped[int | None] = mapped_column(Integer)
    error_tail: Mapped[str] = mapped_column(Text, default="")
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    # How many parents have not finished yet: readiness is a decrement, not a scan of all parents.
    pending_parents: Mapped[int] = mapped_column(Integer, default=0)

    batch_job_id: Mapped[int | None] = mapped_column(ForeignKey("batch_jobs.id", ondelete="SET NULL"))
    # The launcher holding the job, from acquisition until it lets go; NULL while no one does.
    launcher_id: Mapped[int | None] = mapped_column(ForeignKey("launchers.id", ondelete="SET NULL"))
    # The Argo task this job runs and which attempt of it (NULL for a job of this site alone), the
    # coordinator instance that assigned it and the assignment's number (migration 0009): launchers
    # start it only once the coordinator has confirmed that number, while the site holds its lease.
    argo_task_id: Mapped[str | None] = mapped_column(String(300))
    argo_attempt: Mapped[int | None] = mapped_column(Integer)
    argo_coordinator: Mapped[str | None] = mapped_column(String(64))
    argo_seq: Mapped[int | None] = mapped_column(BigInteger)
    # The database role that added the job (migration 0007). Filled by the server's DEFAULT, which a
    # client cannot forge: collaborators may neither insert nor update this column (balsam.site.access).
    created_by: Mapped[str] = mapped_column(String(63), server_default=text("CURRENT_USER"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    app: Mapped[App] = relationship(lazy="joined", innerjoin=True, primaryjoin="foreign(Job.app_id) == App.id")

    @property
    def resources(self) -> Resources:
        return Resources(self.nodes, self.ranks_per_node, self.threads_per_rank, self.gpus_per_rank, self.node_packing_count,
                         self.wall_time_min)  # fmt: skip

    @resources.setter
    def resources(self, value: Resources) -> None:
        self.nodes, self.ranks_per_node, self.threads_per_rank = value.nodes, value.ranks_per_node, value.threads_per_rank
        self.gpus_per_rank, self.node_packing_count, self.wall_time_min = value.gpus_per_rank, value.node_packing_count, value.wall_time_min

    __table_args__ = (
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_workflow_state", "workflow", "state"),
        Index("ix_jobs_app_id", "app_id"),
        # Only the rows each serves: a new job has neither a launcher nor an Argo task (migration 0011).
        Index("ix_jobs_launcher_id", "launcher_id", postgresql_where=text("launcher_id IS NOT NULL")),
        Index("ix_jobs_tags", "tags", postgresql_using="gin", postgresql_ops={"tags": "jsonb_path_ops"}),
        Index("ix_jobs_argo_task", "argo_coordinator", "argo_task_id", "argo_attempt", unique=True,
              postgresql_where=text("argo_task_id IS NOT NULL")),
        CheckConstraint(
            "nodes > 0 AND ranks_per_node > 0 AND threads_per_rank > 0 AND gpus_per_rank >= 0 "
            "AND node_packing_count > 0 AND (wall_time_min IS NULL OR wall_time_min > 0)",
            name="job_resources",
        ),
        CheckConstraint("pending_parents >= 0", name="job_pending_parents"),
    )


class JobParent(Base):
    """A dependency edge: ``child_id`` may run only after ``parent_id`` has finished."""

    __tablename__ = "job_parents"

    child_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)

    __table_args__ = (Index("ix_job_parents_parent", "parent_id"),)


class JobEvent(Base):
    """One applied state transition: the job's provenance, history and the source of runtimes."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Names an existing job, checked once per statement and removed with its job by triggers
    # (migration 0011) instead of a foreign key, whose check is a query per row.
    job_id: Mapped[int] = mapped_column(BigInteger)
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    timestamp: Mapped[datetime] = _now()
    message: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)


class BatchJob(Base):
    """A launcher allocation requested from the site's batch scheduler.

    ``origin`` says who asked for it: a user (``balsam submit-launch``), which the elastic queue
    never cancels, or the elastic queue. ``message`` holds the last scheduler error or reason.
    """

    __tablename__ = "batch_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scheduler_id: Mapped[str | None] = mapped_column(String(100))
    scheduler: Mapped[str] = mapped_column(String(20), default="local")
    project: Mapped[str] = mapped_column(String(100), default="")
    queue: Mapped[str] = mapped_column(String(100), default="")
    nodes: Mapped[int] = mapped_column(Integer)
    wall_time_min: Mapped[int] = mapped_column(Integer)
    job_mode: Mapped[str] = mapped_column(String(16), default="mpi")  # mpi | serial
    filter_tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(32), default="pending_submission")
    origin: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    status_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("nodes > 0 AND wall_time_min > 0", name="batch_job_resources"),
        CheckConstraint("job_mode IN ('mpi', 'serial')", name="batch_job_mode"),
        CheckConstraint("origin IN ('user', 'elastic')", name="batch_job_origin"),
        CheckConstraint(
            "state IN ('pending_submission', 'queued', 'running', 'finished', 'submit_failed', 'pending_deletion')",
            name="batch_job_state",
        ),
        Index("ix_batch_jobs_state", "state"),
    )


class Launcher(Base):
    """A running (or once running) pilot and its lease on the jobs it holds.

    A launcher renews ``heartbeat_at`` every few seconds. One whose heartbeat is older than its
    own ``lease_seconds`` is lost: its jobs are taken back (see ``balsam.site.db.leases``).
    Times come from the database's clock, so launchers on nodes with skewed clocks agree.
    """

    __tablename__ = "launchers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    job_mode: Mapped[str] = mapped_column(String(16))  # mpi | serial
    node_count: Mapped[int] = mapped_column(Integer)
    batch_job_id: Mapped[int | None] = mapped_column(ForeignKey("batch_jobs.id", ondelete="SET NULL"))
    lease_seconds: Mapped[float] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="running")  # running | exited | lost
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = _now()
    heartbeat_at: Mapped[datetime] = _now()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("state IN ('running', 'exited', 'lost')", name="launcher_state"),
        CheckConstraint("lease_seconds > 0", name="launcher_lease"),
        Index("ix_launchers_state", "state"),
    )


class ArgoLink(Base):
    """The site's link to an Argo coordinator (one row, present only while linked).

    ``last_applied``: the highest coordinator message applied here; ``last_seq``: the highest
    number given to a message of ours (``argo_outbox``); ``coordinator``: the instance both count
    for; ``confirmed``: the highest assignment number launchers may start; ``lease_until``: until
    when they may start Argo tasks at all (the database's clock); ``lease_launchers``: the launchers
    that may, those the heartbeat the lease answers counted (the coordinator bounds how long the
    site's tasks may run by them, docs/argo.md).
    """

    __tablename__ = "argo_link"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(Text)
    last_applied: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    coordinator: Mapped[str] = mapped_column(String(64), default="", server_default="")
    confirmed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_launchers: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list, server_default="{}")

    __table_args__ = (CheckConstraint("id = 1", name="argo_link_single"),)


class ArgoRawEvent(Base):
    """A job event copied by the ``job_events_to_argo`` trigger, waiting to become a message."""

    __tablename__ = "argo_raw_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger)
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ArgoOutbox(Base):
    """A numbered message to the coordinator (a serialized ``SiteMessage``), kept until acknowledged."""

    __tablename__ = "argo_outbox"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    body: Mapped[bytes] = mapped_column(LargeBinary)


class TransferTask(Base):
    """One transfer task handed to a backend (local copies, or one Globus task) for many files."""

    __tablename__ = "transfer_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backend: Mapped[str] = mapped_column(String(16))  # local | globus
    backend_id: Mapped[str] = mapped_column(Text, default="")  # the backend's own id of the task
    source_endpoint: Mapped[str] = mapped_column(Text, default="")
    dest_endpoint: Mapped[str] = mapped_column(Text, default="")
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | done | failed
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _now()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("state IN ('active', 'done', 'failed')", name="transfer_task_state"),
        CheckConstraint("direction IN ('in', 'out')", name="transfer_task_direction"),
        Index("ix_transfer_tasks_state", "state"),
    )


class TransferItem(Base):
    """One file (or folder) a job stages in or out, while its job waits for it.

    Items live only while their job waits: once the job moves on (staged, failed or killed) they
    are deleted in the same transaction, so a reset job stages its files afresh.
    """

    __tablename__ = "transfer_items"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    source: Mapped[str] = mapped_column(Text)  # location URIs, as the backend sees them
    dest: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | active | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("transfer_tasks.id", ondelete="SET NULL"))
    position: Mapped[int] = mapped_column(Integer, default=0)  # index of the item in its task
    error: Mapped[str] = mapped_column(Text, default="")
    not_before: Mapped[datetime] = _now()  # a retried item waits until then

    __table_args__ = (
        CheckConstraint("state IN ('pending', 'active', 'done', 'failed')", name="transfer_item_state"),
        CheckConstraint("direction IN ('in', 'out')", name="transfer_item_direction"),
        Index("ix_transfer_items_state", "state"),
        Index("ix_transfer_items_job", "job_id"),
        Index("ix_transfer_items_task", "task_id"),
    )


# Trigger rules (migration 0006). Imported here rather than at the top so this block stands alone.
from sqlalchemy import Boolean, Float, PrimaryKeyConstraint  # noqa: E402


class TriggerRule(Base):
    """Files appearing in ``folder`` (matching ``patterns``, not ``ignore``) become jobs of ``app``.

    ``params`` are the job's parameters as templates filled from the file (``{path}``, ``{name}``,
    ``{stem}``, ``{parent}``); ``resources`` the JobSpec resource fields. A paused rule is not
    watched; the files that came meanwhile are found by the scan when it is resumed.
    """

    __tablename__ = "trigger_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    folder: Mapped[str] = mapped_column(Text)
    recursive: Mapped[bool] = mapped_column(Boolean, default=False)
    patterns: Mapped[list[Any]] = mapped_column(default=list)
    ignore: Mapped[list[Any]] = mapped_column(default=list)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="RESTRICT"))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    workflow: Mapped[str] = mapped_column(String(200), default="default")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    settle_s: Mapped[float] = mapped_column(Float, default=10.0)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _now()

    app: Mapped[App] = relationship(lazy="joined")

    __table_args__ = (CheckConstraint("settle_s >= 0", name="trigger_settle"),)


class TriggerFile(Base):
    """A file a rule has counted: the key (rule, path below its folder) makes it count once.

    ``job_id`` is the job made for it (NULL for files that were there when the rule was added
    with ``skip_existing``, or whose job was removed since).
    """

    __tablename__ = "trigger_files"

    rule_id: Mapped[int] = mapped_column(ForeignKey("trigger_rules.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    seen_at: Mapped[datetime] = _now()

    __table_args__ = (PrimaryKeyConstraint("rule_id", "path", name="trigger_files_pkey"), Index("ix_trigger_files_job", "job_id"))
