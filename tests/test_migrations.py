"""The schema Alembic builds is the schema the models describe."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from alembic.script import ScriptDirectory

from balsam.site.db.engine import MIGRATIONS, SCHEMA_REVISION
from balsam.site.db.models import Base


def check_schema(engine, migrations, revision, metadata) -> None:
    """The database is at ``revision``, the head of ``migrations``, and its tables are ``metadata``'s."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert revision == ScriptDirectory(str(migrations)).get_current_head()
        assert context.get_current_revision() == revision
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_migrations_reach_head_and_match_the_models(db_url):
    check_schema(create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://")), MIGRATIONS, SCHEMA_REVISION, Base.metadata)


def _coordinator_at(connection, revision: str, downgrade: bool = False) -> None:
    from alembic import command
    from alembic.config import Config

    from balsam.argo.db.engine import MIGRATIONS as ARGO_MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(ARGO_MIGRATIONS))
    cfg.attributes["connection"] = connection
    (command.downgrade if downgrade else command.upgrade)(cfg, revision)


def test_the_coordinators_message_numbers_survive_moving_to_site_counters_and_back(pg_server):
    """Migration 0010 moves each site's last message number out of its row: a site that had been
    sent 7 messages is still at 7 after it (its next message is 8, as the site expects), and after
    going back."""
    import uuid

    from sqlalchemy import text

    name = f"argo_{uuid.uuid4().hex[:12]}"
    admin = pg_server.admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    engine = create_engine(pg_server.url(name).replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.begin() as connection:
            _coordinator_at(connection, "0009")
            connection.execute(text("INSERT INTO sites (name, apps, nodes, scheduler, status, heartbeat, last_seq)"
                                    " VALUES ('s1', '[]', 1, 'local', 'up', '{}', 7), ('s2', '[]', 1, 'local', 'up', '{}', 0)"))  # fmt: skip
            _coordinator_at(connection, "0010")
            assert connection.execute(text("SELECT site, last_seq FROM site_counters ORDER BY site")).all() == [("s1", 7), ("s2", 0)]
            connection.execute(text("UPDATE site_counters SET last_seq = 9 WHERE site = 's2'"))
            _coordinator_at(connection, "0009", downgrade=True)
            assert connection.execute(text("SELECT name, last_seq FROM sites ORDER BY name")).all() == [("s1", 7), ("s2", 9)]
    finally:
        engine.dispose()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()
