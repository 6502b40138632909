"""batch jobs of the elastic queue and of users; apps launched as scripts

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("apps", sa.Column("launch", sa.String(length=16), server_default="mpi", nullable=False))
    op.create_check_constraint("app_launch", "apps", "launch IN ('mpi', 'script')")
    op.add_column("batch_jobs", sa.Column("origin", sa.String(length=16), server_default="user", nullable=False))
    op.add_column("batch_jobs", sa.Column("message", sa.Text(), server_default="", nullable=False))
    op.create_check_constraint("batch_job_origin", "batch_jobs", "origin IN ('user', 'elastic')")
    op.create_check_constraint(
        "batch_job_state", "batch_jobs",
        "state IN ('pending_submission', 'queued', 'running', 'finished', 'submit_failed', 'pending_deletion')",
    )  # fmt: skip
    op.create_index("ix_batch_jobs_state", "batch_jobs", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_batch_jobs_state", table_name="batch_jobs")
    op.drop_constraint("batch_job_state", "batch_jobs", type_="check")
    op.drop_constraint("batch_job_origin", "batch_jobs", type_="check")
    op.drop_column("batch_jobs", "message")
    op.drop_column("batch_jobs", "origin")
    op.drop_constraint("app_launch", "apps", type_="check")
    op.drop_column("apps", "launch")
