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
