"""one naming of resources: num_nodes becomes nodes (jobs, batch_jobs); trigger rules' resources renamed alike

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_RENAMED = {"node_packing": "node_packing_count", "wall_time": "wall_time_min"}


def upgrade() -> None:
    op.alter_column("jobs", "num_nodes", new_column_name="nodes")
    op.alter_column("batch_jobs", "num_nodes", new_column_name="nodes")
    for old, new in _RENAMED.items():
        op.execute(
            f"UPDATE trigger_rules SET resources = (resources - '{old}') || jsonb_build_object('{new}', resources -> '{old}')"
            f" WHERE resources ? '{old}'"
        )


def downgrade() -> None:
    for old, new in _RENAMED.items():
        op.execute(
            f"UPDATE trigger_rules SET resources = (resources - '{new}') || jsonb_build_object('{old}', resources -> '{new}')"
            f" WHERE resources ? '{new}'"
        )
    op.alter_column("batch_jobs", "nodes", new_column_name="num_nodes")
    op.alter_column("jobs", "nodes", new_column_name="num_nodes")
