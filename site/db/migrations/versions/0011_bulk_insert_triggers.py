"""the Argo forwarding trigger fires in every replication role, so bulk job creation may skip the
row-by-row foreign-key checks (site.db.jobstore.insert_jobs) without skipping the forwarding

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE job_events ENABLE ALWAYS TRIGGER job_events_to_argo")


def downgrade() -> None:
    op.execute("ALTER TABLE job_events ENABLE TRIGGER job_events_to_argo")
