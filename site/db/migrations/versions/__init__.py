"""Alembic revisions of the site schema, applied in order by balsam.site.db.engine.migrate()."""
