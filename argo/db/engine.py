"""The coordinator's database: its embedded PostgreSQL (or an external server) and its schema."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from balsam.argo.config import ServerSettings
from balsam.errors import BalsamError
from balsam.migrate import migrate
from balsam.postgres import EmbeddedPostgres

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA_REVISION = "0010"
_MIGRATION_LOCK = 0xA760


def cluster(settings: ServerSettings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.db_dir, settings.logs_dir, settings.database, settings.save, f"the Argo server in {settings.data}")


def database_url(settings: ServerSettings) -> URL:
    db = settings.database
    if db.mode == "external":
        return make_url(db.url).set(drivername="postgresql+psycopg2")
    return URL.create(
        "postgresql+psycopg2", username=db.user, password=cluster(settings).password, host=db.host, port=db.port, database=db.name
    )


def connect(settings: ServerSettings) -> Engine:
    """An engine on the coordinator's database, its server started and its schema current."""
    if settings.database.mode == "embedded":
        pg = cluster(settings)
        if not pg.pgdata.exists():
            pg.create()
            settings.save()  # the port it chose
        else:
            pg.start()
    engine = create_engine(database_url(settings), pool_pre_ping=True, pool_size=10, max_overflow=20)
    try:
        migrate(engine, MIGRATIONS, SCHEMA_REVISION, _MIGRATION_LOCK)
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise BalsamError(f"cannot reach the Argo server's database: {reason}") from None
    return engine
