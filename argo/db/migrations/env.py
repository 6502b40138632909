"""Alembic environment: runs on a connection handed over by balsam.argo.db.engine.connect()."""

from alembic import context

from balsam.argo.db.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
