"""fencing and channel health: the coordinator's instance id, each site's lease, acknowledgements,
confirmed assignments, channel error and launchers' end; each task's assignment number; fences

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coordinator",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=64), server_default=sa.text("gen_random_uuid()::text"), nullable=False),
        sa.CheckConstraint("id = 1", name="coordinator_single"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO coordinator (id) VALUES (1)")
    for column in (
        sa.Column("acked", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("launchers_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("channel_error", sa.Text(), server_default="", nullable=False),
    ):
        op.add_column("sites", column)
    op.drop_constraint("site_status", "sites", type_="check")
    op.create_check_constraint("site_status", "sites", "status IN ('up', 'stalled', 'down')")
    op.add_column("tasks", sa.Column("assigned_seq", sa.BigInteger(), nullable=True))
    op.add_column("site_outbox", sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False))
    op.create_table(
        "site_fences",
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("assignment_seq", sa.BigInteger(), nullable=False),
        sa.Column("kill_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("site", "assignment_seq"),
    )


def downgrade() -> None:
    op.drop_table("site_fences")
    op.drop_column("site_outbox", "created_at")
    op.drop_column("tasks", "assigned_seq")
    op.drop_constraint("site_status", "sites", type_="check")
    op.create_check_constraint("site_status", "sites", "status IN ('up', 'down')")
    for name in ("channel_error", "launchers_end", "lease_until", "confirmed", "acked_at", "acked"):
        op.drop_column("sites", name)
    op.drop_table("coordinator")
