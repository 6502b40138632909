"""Bringing a database's schema up to date with Alembic, safely from many processes at once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except ProgrammingError:  # no alembic_version table: a database never migrated
            return None


def migrate(engine: Engine, migrations: Path, head: str, lock_key: int) -> None:
    """Upgrade to ``head`` (the newest revision in ``migrations``) unless the schema is there already.

    Knowing the head without asking Alembic lets every command see that the schema is current
    without importing Alembic. ``lock_key`` is any constant the same for every process migrating
    this kind of database: an advisory lock makes racing processes take turns.
    """
    if current_revision(engine) == head:
        return
    from alembic import command
    from alembic.config import Config

    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
