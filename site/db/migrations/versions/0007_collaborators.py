"""collaborators: each job records the database role that created it

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # CURRENT_USER is stable, not volatile: existing rows get the migrating role (the site's own)
    # without a table rewrite. The rights of collaborators on this column are set in
    # balsam.site.access (env.py re-applies them after every migration).
    op.add_column(
        "jobs", sa.Column("created_by", sa.String(length=63), server_default=sa.text("CURRENT_USER"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("jobs", "created_by")
