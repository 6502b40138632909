"""Connections to a site's database, and bringing its schema up to date with Alembic."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from balsam import migrate as schema
from balsam.errors import BalsamError
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test checks it against Alembic's head): knowing it
# here lets every command see that the schema is current without importing Alembic.
SCHEMA_REVISION = "0010"
# Any constant works: it only has to be the same for every process migrating a site's database.
_MIGRATION_LOCK = 0x6BA15A


def database_url(settings: SiteSettings) -> URL:
    """The site's address, with the site's own login or the user's (``settings.credentials``)."""
    db = settings.database
    creds = settings.credentials
    if creds and creds.url:
        return make_url(creds.url).set(drivername="postgresql+psycopg2")
    if db.mode == "external":
        url = make_url(db.url).set(drivername="postgresql+psycopg2")
        return url.set(username=creds.user, password=creds.password) if creds else url
    if creds:
        # A collaborator's own role: the site's password file is not theirs to read.
        user, password = creds.user, creds.password
    else:
        user, password = db.user, EmbeddedPostgres(settings).password
    return URL.create(
        "postgresql+psycopg2", username=user, password=password, host=db.host, port=db.port, database=db.name
    )


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision; safe when several processes do it at once."""
    schema.migrate(engine, MIGRATIONS, SCHEMA_REVISION, _MIGRATION_LOCK)


def connect(settings: SiteSettings, upgrade: bool = True) -> Engine:
    """An engine on the site's database with its schema current; a stopped embedded server is started."""
    # Connect first: the server is usually up, and checking costs a subprocess or two.
    for attempt in ("first", "after start"):
        engine = create_engine(database_url(settings), pool_pre_ping=True, pool_size=5, max_overflow=5)
        try:
            if upgrade:
                migrate(engine)
            else:
                engine.connect().close()
            return engine
        except OperationalError as exc:
            engine.dispose()
            # A collaborator (own credentials) cannot start the owner's server, nor should a wrong
            # password of theirs make us try.
            if settings.database.mode == "embedded" and attempt == "first" and settings.credentials is None:
                # Start it (or find that a racing process just did), then re-read the settings:
                # the server may have moved to another port.
                if EmbeddedPostgres(settings).start():
                    print(f"started the database of site {settings.name!r}", file=sys.stderr)
                settings.database = SiteSettings.load(settings.path).database
                continue
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if settings.credentials is not None:
                reason += f" (logging in as {database_url(settings).username!r} from {settings.credentials.file})"
            raise BalsamError(f"cannot reach the database of site {settings.name!r}: {reason}") from None
    raise AssertionError("unreachable")
