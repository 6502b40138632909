"""transfers: the files jobs stage in and out, and the transfer tasks that move them

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transfer_tasks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("backend_id", sa.Text(), nullable=False),
        sa.Column("source_endpoint", sa.Text(), nullable=False),
        sa.Column("dest_endpoint", sa.Text(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("files_done", sa.Integer(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('active', 'done', 'failed')", name="transfer_task_state"),
        sa.CheckConstraint("direction IN ('in', 'out')", name="transfer_task_direction"),
    )
    op.create_index("ix_transfer_tasks_state", "transfer_tasks", ["state"])
    op.create_table(
        "transfer_items",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("job_id", sa.BigInteger(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("dest", sa.Text(), nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("transfer_tasks.id", ondelete="SET NULL"), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'active', 'done', 'failed')", name="transfer_item_state"),
        sa.CheckConstraint("direction IN ('in', 'out')", name="transfer_item_direction"),
    )
    op.create_index("ix_transfer_items_state", "transfer_items", ["state"])
    op.create_index("ix_transfer_items_job", "transfer_items", ["job_id"])
    op.create_index("ix_transfer_items_task", "transfer_items", ["task_id"])


def downgrade() -> None:
    op.drop_table("transfer_items")
    op.drop_table("transfer_tasks")
