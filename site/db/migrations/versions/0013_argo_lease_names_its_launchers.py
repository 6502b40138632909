"""the site's Argo lease names the launchers it holds for

Revision ID: 0013
Revises: 0012

The coordinator places a silent site's tasks elsewhere once its lease is over and every launcher
the site's heartbeat reported has ended. A launcher that started after that heartbeat (a batch job
leaving the queue) was not reported, so it may start Argo tasks only under a lease answering a
heartbeat that counted it: ``lease_launchers`` holds the ids that heartbeat counted.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("argo_link", sa.Column("lease_launchers", postgresql.ARRAY(sa.Integer()), nullable=False, server_default="{}"))


def downgrade() -> None:
    op.drop_column("argo_link", "lease_launchers")
