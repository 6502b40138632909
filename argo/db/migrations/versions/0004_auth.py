"""authentication: token hashes of users and sites; workflows belong to a project

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflows", sa.Column("project", sa.String(length=200), server_default="", nullable=False))
    op.create_table(
        "auth_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("projects", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('user', 'site', 'enrol')", name="auth_token_kind"),
        sa.CheckConstraint("role IN ('owner', 'collaborator', 'viewer', 'site')", name="auth_token_role"),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_auth_tokens_subject", "auth_tokens", ["kind", "name"])


def downgrade() -> None:
    op.drop_index("ix_auth_tokens_subject", table_name="auth_tokens")
    op.drop_table("auth_tokens")
    op.drop_column("workflows", "project")
