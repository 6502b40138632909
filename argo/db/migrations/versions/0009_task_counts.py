"""an ended workflow's task counts kept in its row, dropped by any later change to its tasks; the
placed tasks that have not ended found by an index

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FINAL = "('FAILED', 'JOB_FINISHED', 'USER_KILLED')"

# One statement-level trigger per kind of write, whoever the writer: a workflow whose counts were
# kept loses them as soon as any of its tasks is inserted or changed, and is counted live again.
FORGET = """
CREATE FUNCTION forget_task_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workflows SET task_counts = NULL
     WHERE task_counts IS NOT NULL AND id IN (SELECT DISTINCT workflow_id FROM changed_tasks);
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_updated_forget_counts AFTER UPDATE ON tasks REFERENCING NEW TABLE AS changed_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION forget_task_counts();
CREATE TRIGGER tasks_inserted_forget_counts AFTER INSERT ON tasks REFERENCING NEW TABLE AS changed_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION forget_task_counts();
"""


def upgrade() -> None:
    op.add_column("workflows", sa.Column("task_counts", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.execute(FORGET)
    op.create_index("ix_tasks_placed_unended", "tasks", ["site"], postgresql_where=sa.text(f"site IS NOT NULL AND state NOT IN {FINAL}"))


def downgrade() -> None:
    op.drop_index("ix_tasks_placed_unended", table_name="tasks")
    op.execute("DROP TRIGGER tasks_inserted_forget_counts ON tasks; DROP TRIGGER tasks_updated_forget_counts ON tasks; DROP FUNCTION forget_task_counts()")
    op.drop_column("workflows", "task_counts")
