"""triggers: rules that turn files appearing in a folder into tasks, and the files they counted

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trigger_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False, unique=True),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("recursive", sa.Boolean(), nullable=False),
        sa.Column("patterns", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("ignore", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("app", sa.String(length=200), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("resources", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("tags", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("pin", sa.String(length=200), nullable=True),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("workflow_id", sa.BigInteger(), sa.ForeignKey("workflows.id", ondelete="SET NULL"), nullable=True),
        sa.Column("settle_s", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("settle_s >= 0", name="trigger_settle"),
    )
    op.create_table(
        "trigger_files",
        sa.Column("rule_id", sa.Integer(), sa.ForeignKey("trigger_rules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("task_id", sa.String(length=420), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "path", name="trigger_files_pkey"),
    )


def downgrade() -> None:
    op.drop_table("trigger_files")
    op.drop_table("trigger_rules")
