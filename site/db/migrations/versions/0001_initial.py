"""initial schema: apps, jobs, parents, events, batch jobs

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 00:31:11.112137
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('apps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('command_template', sa.Text(), nullable=False),
    sa.Column('parameters', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('environment', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('preprocess', sa.Text(), nullable=True),
    sa.Column('postprocess', sa.Text(), nullable=True),
    sa.Column('on_error', sa.String(length=16), nullable=False),
    sa.Column('max_retries', sa.Integer(), nullable=False),
    sa.Column('on_timeout', sa.String(length=16), nullable=False),
    sa.Column('image', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("on_error IN ('retry', 'rescue', 'fail')", name='app_on_error'),
    sa.CheckConstraint("on_timeout IN ('retry', 'fail')", name='app_on_timeout'),
    sa.CheckConstraint('max_retries >= 0', name='app_max_retries'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('batch_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scheduler_id', sa.String(length=100), nullable=True),
    sa.Column('scheduler', sa.String(length=20), nullable=False),
    sa.Column('project', sa.String(length=100), nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('num_nodes', sa.Integer(), nullable=False),
    sa.Column('wall_time_min', sa.Integer(), nullable=False),
    sa.Column('job_mode', sa.String(length=16), nullable=False),
    sa.Column('filter_tags', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('status_info', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("job_mode IN ('mpi', 'serial')", name='batch_job_mode'),
    sa.CheckConstraint('num_nodes > 0 AND wall_time_min > 0', name='batch_job_resources'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('workflow', sa.String(length=200), nullable=False),
    sa.Column('app_id', sa.Integer(), nullable=False),
    sa.Column('parameters', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('num_nodes', sa.Integer(), nullable=False),
    sa.Column('ranks_per_node', sa.Integer(), nullable=False),
    sa.Column('threads_per_rank', sa.Integer(), nullable=False),
    sa.Column('gpus_per_rank', sa.Integer(), nullable=False),
    sa.Column('node_packing_count', sa.Integer(), nullable=False),
    sa.Column('wall_time_min', sa.Double(), nullable=True),
    sa.Column('tags', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('input_files', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('output_files', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('stage_in', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('stage_out', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('return_code', sa.Integer(), nullable=True),
    sa.Column('error_tail', sa.Text(), nullable=False),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('pending_parents', sa.Integer(), nullable=False),
    sa.Column('batch_job_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('num_nodes > 0 AND ranks_per_node > 0 AND threads_per_rank > 0 AND gpus_per_rank >= 0 AND node_packing_count > 0 AND (wall_time_min IS NULL OR wall_time_min > 0)', name='job_resources'),
    sa.CheckConstraint('pending_parents >= 0', name='job_pending_parents'),
    sa.ForeignKeyConstraint(['app_id'], ['apps.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['batch_job_id'], ['batch_jobs.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_jobs_app_id', 'jobs', ['app_id'], unique=False)
    op.create_index('ix_jobs_state', 'jobs', ['state'], unique=False)
    op.create_index('ix_jobs_tags', 'jobs', ['tags'], unique=False, postgresql_using='gin', postgresql_ops={'tags': 'jsonb_path_ops'})
    op.create_index('ix_jobs_workflow_state', 'jobs', ['workflow', 'state'], unique=False)
    op.create_table('job_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('from_state', sa.String(length=20), nullable=False),
    sa.Column('to_state', sa.String(length=20), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_job_events_job_id', 'job_events', ['job_id', 'id'], unique=False)
    op.create_table('job_parents',
    sa.Column('child_id', sa.BigInteger(), nullable=False),
    sa.Column('parent_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['child_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('child_id', 'parent_id')
    )
    op.create_index('ix_job_parents_parent', 'job_parents', ['parent_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_job_parents_parent', table_name='job_parents')
    op.drop_table('job_parents')
    op.drop_index('ix_job_events_job_id', table_name='job_events')
    op.drop_table('job_events')
    op.drop_index('ix_jobs_workflow_state', table_name='jobs')
    op.drop_index('ix_jobs_tags', table_name='jobs', postgresql_using='gin', postgresql_ops={'tags': 'jsonb_path_ops'})
    op.drop_index('ix_jobs_state', table_name='jobs')
    op.drop_index('ix_jobs_app_id', table_name='jobs')
    op.drop_table('jobs')
    op.drop_table('batch_jobs')
    op.drop_table('apps')
