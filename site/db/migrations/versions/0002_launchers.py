"""launchers and their leases on jobs

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "launchers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("job_mode", sa.String(length=16), nullable=False),
        sa.Column("node_count", sa.Integer(), nullable=False),
        sa.Column("batch_job_id", sa.Integer(), nullable=True),
        sa.Column("lease_seconds", sa.Double(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('running', 'exited', 'lost')", name="launcher_state"),
        sa.CheckConstraint("lease_seconds > 0", name="launcher_lease"),
        sa.ForeignKeyConstraint(["batch_job_id"], ["batch_jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_launchers_state", "launchers", ["state"], unique=False)
    op.add_column("jobs", sa.Column("launcher_id", sa.Integer(), nullable=True))
    op.create_foreign_key("jobs_launcher_id_fkey", "jobs", "launchers", ["launcher_id"], ["id"], ondelete="SET NULL")
    op.create_index("ix_jobs_launcher_id", "jobs", ["launcher_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_launcher_id", table_name="jobs")
    op.drop_constraint("jobs_launcher_id_fkey", "jobs", type_="foreignkey")
    op.drop_column("jobs", "launcher_id")
    op.drop_index("ix_launchers_state", table_name="launchers")
    op.drop_table("launchers")
