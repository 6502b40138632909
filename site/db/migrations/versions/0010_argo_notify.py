"""job events waiting for the Argo sync wake it: the trigger that keeps them also NOTIFYs balsam_argo

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

FORWARD_FUNCTION = """
CREATE OR REPLACE FUNCTION argo_forward_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM argo_link) THEN
        INSERT INTO argo_raw_events (job_id, from_state, to_state, message, at)
        SELECT job_id, from_state, to_state, message, timestamp FROM new_events ORDER BY id;
        PERFORM pg_notify('{notify}', '');
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(FORWARD_FUNCTION.replace("{notify}", "balsam_argo"))


def downgrade() -> None:
    op.execute(FORWARD_FUNCTION.replace("        PERFORM pg_notify('{notify}', '');\n", ""))
