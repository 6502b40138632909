"""each site's message counter in a row of its own (``site_counters``), out of the site's row: a
transaction numbering messages to a site (a placement round) no longer holds the row its events,
acknowledgements and heartbeats are written to

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "site_counters",
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("site"),
    )
    op.execute("INSERT INTO site_counters (site, last_seq) SELECT name, last_seq FROM sites")
    op.drop_column("sites", "last_seq")


def downgrade() -> None:
    op.add_column("sites", sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False))
    op.execute("UPDATE sites SET last_seq = c.last_seq FROM site_counters c WHERE c.site = sites.name")
    op.drop_table("site_counters")
