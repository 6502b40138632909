"""the coordinator's workflows, tasks, events, sites and outbox

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("apps", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("scheduler", sa.String(length=20), nullable=False),
        sa.Column("transfer_endpoint", sa.Text(), server_default="", nullable=False),
        sa.Column("max_tasks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("heartbeat", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "registered_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_applied", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("status IN ('up', 'down')", name="site_status"),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "task_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("task_id", sa.String(length=420), nullable=False),
        sa.Column("workflow_id", sa.BigInteger(), nullable=False),
        sa.Column("site", sa.String(length=200), server_default="", nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=False),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("workflow_status", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_task_events_workflow", "task_events", ["workflow_id", "id"], unique=False
    )
    op.create_table(
        "workflows",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'failed', 'cancelled')",
            name="workflow_status",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "site_outbox",
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("site", "seq"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=420), nullable=False),
        sa.Column("workflow_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=210), nullable=False),
        sa.Column("app", sa.String(length=200), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("resources", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("inputs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("outputs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("tags", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("pin", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("pending_parents", sa.Integer(), nullable=False),
        sa.Column("blocked", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("site", sa.String(length=200), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("site_job_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "sites_tried", postgresql.JSONB(astext_type=sa.Text()), nullable=False
        ),
        sa.Column("return_code", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("pending_parents >= 0", name="task_pending_parents"),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_tasks_placeable",
        "tasks",
        ["workflow_id"],
        unique=False,
        postgresql_where=sa.text("site IS NULL AND state = 'READY'"),
    )
    op.create_index(
        "ix_tasks_active",
        "tasks",
        ["workflow_id"],
        unique=False,
        postgresql_where=sa.text("NOT blocked AND state NOT IN ('FAILED', 'JOB_FINISHED', 'USER_KILLED')"),
    )
    op.create_index("ix_tasks_site_state", "tasks", ["site", "state"], unique=False)
    op.create_index(
        "ix_tasks_workflow_state", "tasks", ["workflow_id", "state"], unique=False
    )
    op.create_table(
        "task_parents",
        sa.Column("child_id", sa.String(length=420), nullable=False),
        sa.Column("parent_id", sa.String(length=420), nullable=False),
        sa.PrimaryKeyConstraint("child_id", "parent_id"),
    )
    op.create_index(
        "ix_task_parents_parent", "task_parents", ["parent_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_task_parents_parent", table_name="task_parents")
    op.drop_table("task_parents")
    op.drop_index("ix_tasks_workflow_state", table_name="tasks")
    op.drop_index("ix_tasks_site_state", table_name="tasks")
    op.drop_index("ix_tasks_active", table_name="tasks")
    op.drop_index(
        "ix_tasks_placeable",
        table_name="tasks",
        postgresql_where=sa.text("site IS NULL AND state = 'READY'"),
    )
    op.drop_table("tasks")
    op.drop_table("site_outbox")
    op.drop_table("workflows")
    op.drop_index("ix_task_events_workflow", table_name="task_events")
    op.drop_table("task_events")
    op.drop_table("sites")
