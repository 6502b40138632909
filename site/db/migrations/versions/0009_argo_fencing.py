"""fencing for Argo tasks: the coordinator instance and assignment number of each job, the link's lease

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("argo_coordinator", sa.String(length=64), nullable=True))
    op.add_column("jobs", sa.Column("argo_seq", sa.BigInteger(), nullable=True))
    op.drop_index("ix_jobs_argo_task", table_name="jobs")
    op.create_index("ix_jobs_argo_task", "jobs", ["argo_coordinator", "argo_task_id", "argo_attempt"], unique=True)
    op.add_column("argo_link", sa.Column("coordinator", sa.String(length=64), server_default="", nullable=False))
    op.add_column("argo_link", sa.Column("confirmed", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("argo_link", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("argo_link", "lease_until")
    op.drop_column("argo_link", "confirmed")
    op.drop_column("argo_link", "coordinator")
    op.drop_index("ix_jobs_argo_task", table_name="jobs")
    op.create_index("ix_jobs_argo_task", "jobs", ["argo_task_id", "argo_attempt"], unique=True)
    op.drop_column("jobs", "argo_seq")
    op.drop_column("jobs", "argo_coordinator")
