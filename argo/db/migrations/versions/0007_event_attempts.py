"""each task event names the attempt it is about and its kind of move: timings per attempt

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
    op.add_column("task_events", sa.Column("attempt", sa.Integer(), server_default="0", nullable=False))
    op.add_column("task_events", sa.Column("move", sa.String(length=16), server_default="", nullable=False))


def downgrade() -> None:
    op.drop_column("task_events", "move")
    op.drop_column("task_events", "attempt")
