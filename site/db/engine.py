"""Connections to a site's database, and bringing its schema up to date with Alembic."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError


from balsam.errors import BalsamError
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same for every process migrating a site's database.
_MIGRATION_LOCK = 0x6BA15A


def database_url(settings: SiteSettings) -> URL:
    db = settings.database
    if db.mode == "external":
        url = make_url(db.url)
        return url.set(drivername="postgresql+psycopg2")
    password = EmbeddedPostgres(settings).password
    return URL.create(
        "postgresql+psycopg2", username=db.user, password=password, host=db.host, port=db.port, database=db.name
    )


def _alembic_config(connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@cache
def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision; safe when several processes do it at once."""
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head_revision():
            return
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        command.upgrade(_alembic_config(conn), "head")


def connect(settings: SiteSettings, start_server: bool = True, upgrade: bool = True) -> Engine:
    """An engine on the site's database; an embedded server that is down is started first."""
    if settings.database.mode == "embedded" and start_server:
        if EmbeddedPostgres(settings).start():
            print(f"started the database of site {settings.name!r}", file=sys.stderr)
    engine = create_engine(database_url(settings), pool_pre_ping=True, pool_size=5, max_overflow=5)
    try:
        if upgrade:
            migrate(engine)
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise BalsamError(f"cannot reach the database of site {settings.name!r}: {reason}") from None
    return engine
