"""lighter inserts of jobs and events: indexes only over the rows they serve, event keys checked per statement

Revision ID: 0011
Revises: 0010

Measured on 100,000 new jobs (the server's CPU time, bench/bulk_create.py's rows): the foreign key
of ``job_events.job_id`` cost 0.6 s, one key lookup per row; the statement-level check below does
the same as one anti-join, 0.3 s. A job is held by a launcher or linked to an Argo task for a small
part of its life, so those two indexes leave out the NULL rows every new job has.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Every event names an existing job. An event and its job are written by one transaction
# (balsam.site.db.jobstore), so the check needs no row lock; a job removed by a transaction that
# commits after this check would leave its events behind only if a client wrote events for it
# without holding its row, which jobstore never does (it locks the rows it moves).
CHECK_FUNCTION = """
CREATE FUNCTION job_events_check_jobs() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    orphan bigint;
BEGIN
    SELECT e.job_id INTO orphan FROM new_events e
    WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id) LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING MESSAGE = format('job_events: there is no job %s', orphan);
    END IF;
    RETURN NULL;
END
$$
"""
CHECK_TRIGGER = """
CREATE TRIGGER job_events_check_jobs AFTER INSERT ON job_events
REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION job_events_check_jobs()
"""
# What ON DELETE CASCADE did: a removed job takes its events with it, one DELETE per statement.
# Both functions run as the schema's owner, as a foreign key's checks and actions do: a
# collaborator may remove jobs but has no DELETE on job_events (balsam.site.access).
CASCADE_FUNCTION = """
CREATE FUNCTION jobs_remove_events() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    DELETE FROM job_events e USING removed_jobs r WHERE e.job_id = r.id;
    RETURN NULL;
END
$$
"""
CASCADE_TRIGGER = """
CREATE TRIGGER jobs_remove_events AFTER DELETE ON jobs
REFERENCING OLD TABLE AS removed_jobs FOR EACH STATEMENT EXECUTE FUNCTION jobs_remove_events()
"""


def upgrade() -> None:
    op.drop_index("ix_jobs_launcher_id", table_name="jobs")
    op.create_index("ix_jobs_launcher_id", "jobs", ["launcher_id"], postgresql_where=sa.text("launcher_id IS NOT NULL"))
    op.drop_index("ix_jobs_argo_task", table_name="jobs")
    op.create_index("ix_jobs_argo_task", "jobs", ["argo_coordinator", "argo_task_id", "argo_attempt"], unique=True,
                    postgresql_where=sa.text("argo_task_id IS NOT NULL"))  # fmt: skip
    op.drop_constraint("job_events_job_id_fkey", "job_events", type_="foreignkey")
    op.execute(CHECK_FUNCTION)
    op.execute(CHECK_TRIGGER)
    op.execute(CASCADE_FUNCTION)
    op.execute(CASCADE_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_remove_events ON jobs")
    op.execute("DROP FUNCTION jobs_remove_events()")
    op.execute("DROP TRIGGER job_events_check_jobs ON job_events")
    op.execute("DROP FUNCTION job_events_check_jobs()")
    op.execute("DELETE FROM job_events e WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)")
    op.create_foreign_key("job_events_job_id_fkey", "job_events", "jobs", ["job_id"], ["id"], ondelete="CASCADE")
    op.drop_index("ix_jobs_argo_task", table_name="jobs")
    op.create_index("ix_jobs_argo_task", "jobs", ["argo_coordinator", "argo_task_id", "argo_attempt"], unique=True)
    op.drop_index("ix_jobs_launcher_id", table_name="jobs")
    op.create_index("ix_jobs_launcher_id", "jobs", ["launcher_id"])
