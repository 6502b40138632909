"""the link to an Argo coordinator: task ids on jobs, the sync state and the outbox of job events

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Copies each statement's new event rows into the raw outbox, only while the site is linked to a
# coordinator; one statement-level trigger costs one query per insert statement, not per row.
FORWARD_FUNCTION = """
CREATE FUNCTION argo_forward_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM argo_link) THEN
        INSERT INTO argo_raw_events (job_id, from_state, to_state, message, at)
        SELECT job_id, from_state, to_state, message, timestamp FROM new_events ORDER BY id;
    END IF;
    RETURN NULL;
END
$$
"""
FORWARD_TRIGGER = """
CREATE TRIGGER job_events_to_argo AFTER INSERT ON job_events
REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION argo_forward_events()
"""


def upgrade() -> None:
    op.add_column("jobs", sa.Column("argo_task_id", sa.String(length=300), nullable=True))
    op.add_column("jobs", sa.Column("argo_attempt", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_argo_task", "jobs", ["argo_task_id", "argo_attempt"], unique=True)
    op.create_table(
        "argo_link",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("last_applied", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("id = 1", name="argo_link_single"),
    )
    op.create_table(
        "argo_raw_events",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=False),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "argo_outbox",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
    )
    op.execute(FORWARD_FUNCTION)
    op.execute(FORWARD_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER job_events_to_argo ON job_events")
    op.execute("DROP FUNCTION argo_forward_events()")
    op.drop_table("argo_outbox")
    op.drop_table("argo_raw_events")
    op.drop_table("argo_link")
    op.drop_index("ix_jobs_argo_task", table_name="jobs")
    op.drop_column("jobs", "argo_attempt")
    op.drop_column("jobs", "argo_task_id")
