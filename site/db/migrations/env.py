"""Alembic environment: runs on a connection handed over by balsam.site.db.engine.migrate()."""

from alembic import context

from balsam.site.db.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
    # New tables and columns get the rights of the site's users (balsam.site.access), if it has any.
    from balsam.site.access import apply_rights

    apply_rights(connection)
