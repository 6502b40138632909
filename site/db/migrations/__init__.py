"""Alembic migrations of a site's schema (env.py, versions/)."""
