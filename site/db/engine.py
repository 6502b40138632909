"""Connections to a site's database, and bringing its schema up to date with Alembic.

SQLAlchemy is imported by the functions that use it, not with this module: ``libpq_params`` and
``SCHEMA_REVISION`` also serve the plain-psycopg2 listing of ``balsam job ls``
(``balsam.site.db.listing``), which must not wait for SQLAlchemy's import.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from balsam.errors import BalsamError
from balsam.postgres import is_local_address
from balsam.site import idle_stop
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import URL

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test checks it against Alembic's head): knowing it
# here lets every command see that the schema is current without importing Alembic.
SCHEMA_REVISION = "0013"
# Any constant works: it only has to be the same for every process migrating a site's database.
_MIGRATION_LOCK = 0x6BA15A


def libpq_params(settings: SiteSettings) -> tuple[str, dict[str, Any]]:
    """How libpq reaches the site's database, with the site's own login or the user's
    (``settings.credentials``): a connection URI ("" for none) and keywords that override it."""
    db = settings.database
    creds = settings.credentials
    if creds and creds.url:
        return _plain_scheme(creds.url), {}
    if db.mode == "external":
        return _plain_scheme(db.url), ({"user": creds.user, "password": creds.password} if creds else {})
    if creds:
        # A collaborator's own role: the site's password file is not theirs to read.
        user, password = creds.user, creds.password
    else:
        user, password = db.user, EmbeddedPostgres(settings).password
    return "", {"host": db.host, "port": db.port, "user": user, "password": password, "dbname": db.name,
                **db.ssl_params(settings.db_dir)}  # fmt: skip


def _plain_scheme(url: str) -> str:
    """``postgresql+psycopg2://...`` as libpq reads it (``postgresql://...``)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}" if sep else url


def database_url(settings: SiteSettings) -> URL:
    """``libpq_params`` as SQLAlchemy's URL."""
    from sqlalchemy.engine import URL, make_url

    dsn, keywords = libpq_params(settings)
    if dsn:
        url = make_url(dsn).set(drivername="postgresql+psycopg2")
        return url.set(username=keywords["user"], password=keywords["password"]) if keywords else url
    query = {key: keywords.pop(key) for key in ("sslmode", "sslrootcert") if key in keywords}
    return URL.create("postgresql+psycopg2", username=keywords["user"], password=keywords["password"], host=keywords["host"],
                      port=keywords["port"], database=keywords["dbname"], query=query)  # fmt: skip


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision; safe when several processes do it at once."""
    from balsam import migrate as schema

    schema.migrate(engine, MIGRATIONS, SCHEMA_REVISION, _MIGRATION_LOCK)


# How PostgreSQL says every connection slot is taken ("sorry, too many clients already", or only
# reserved ones are left): a launcher waits for one instead of failing.
_NO_SLOT = ("too many clients", "remaining connection slots are reserved")
SLOT_WAIT_S = (1.0, 10.0)  # first and longest pause between tries while the database is full


def connect(settings: SiteSettings, upgrade: bool = True, launcher: bool = False) -> Engine:
    """An engine on the site's database with its schema current; a stopped embedded server is started.

    A launcher's engine holds one pooled connection (its LISTEN connection is the second, and the
    last: the connection budget of docs/cluster.md), and a launcher that finds the database full
    waits for a free connection, saying so, instead of failing.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    local = settings.database.mode == "embedded" and is_local_address(settings.database.host)
    pool = {"pool_size": 1, "max_overflow": 0} if launcher else {"pool_size": 5, "max_overflow": 5}
    pause, waited = SLOT_WAIT_S[0], False
    attempt = "first"
    while True:
        # Connect first: the server is usually up, and checking costs a subprocess or two.
        engine = create_engine(database_url(settings), pool_pre_ping=True, **pool)
        try:
            if upgrade:
                migrate(engine)
            else:
                engine.connect().close()
            if waited:
                print(f"got a connection to the database of site {settings.name!r}", file=sys.stderr)
            if local:
                idle_stop.ensure_watcher(settings)  # one watches every server, whoever started it
            return engine
        except OperationalError as exc:
            engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if launcher and any(text in reason for text in _NO_SLOT):
                db = settings.database
                print(
                    f"the database of site {settings.name!r} has no free connection ({reason}); waiting {pause:.0f} s and "
                    f"trying again. It allows {db.max_connections} = 2 x database.max_launchers ({db.max_launchers}) + "
                    f"database.reserved_connections ({db.reserved_connections}): raise them in {settings.settings_file} "
                    "and restart the database if this lasts", file=sys.stderr,
                )  # fmt: skip
                time.sleep(pause)
                pause, waited = min(2 * pause, SLOT_WAIT_S[1]), True
                continue
            # A collaborator (own credentials) cannot start the owner's server, nor should a wrong
            # password of theirs make us try; nor can a host without the server's address (a compute node).
            if local and attempt == "first" and settings.credentials is None:
                # Start it (or find that a racing process just did), then re-read the settings:
                # the server may have moved to another port.
                if EmbeddedPostgres(settings).start():
                    print(f"started the database of site {settings.name!r}; {idle_stop.started_note(settings)}", file=sys.stderr)
                settings.database = SiteSettings.load(settings.path).database
                attempt = "after start"
                continue
            if settings.credentials is not None:
                reason += f" (logging in as {database_url(settings).username!r} from {settings.credentials.file})"
            elif not is_local_address(settings.database.host):
                reason += f" (the database runs on the host with address {settings.database.host}; is it started there?)"
            raise BalsamError(f"cannot reach the database of site {settings.name!r}: {reason}") from None
