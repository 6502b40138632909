"""The schema Alembic builds is the schema the models describe."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from alembic.script import ScriptDirectory

from balsam.site.db.engine import MIGRATIONS, SCHEMA_REVISION
from balsam.site.db.models import Base


def test_migrations_reach_head_and_match_the_models(db_url):
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert SCHEMA_REVISION == ScriptDirectory(str(MIGRATIONS)).get_current_head()
        assert context.get_current_revision() == SCHEMA_REVISION
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
