"""``balsam job ls`` without SQLAlchemy: the listing users run hundreds of times on a login node.

Importing SQLAlchemy takes longer than the whole listing, so the table of ``balsam job ls`` is read
through plain psycopg2, with the same filters as ``Site.jobs`` and ``Site.count_jobs`` (a test
keeps the two in step). Only the ordinary case is served here: the server answers at once and its
schema is the current one. Otherwise (a stopped server, an older schema, any connection error)
``listing`` returns None and the caller opens ``balsam.site.api.Site``, which starts the server,
migrates, and says what is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from balsam.site import idle_stop
from balsam.site.db.engine import SCHEMA_REVISION, libpq_params
from balsam.site.settings import SiteSettings

# The columns of a row of the table, as ``balsam.site.cli.output.job_record`` names them.
_COLUMNS = "j.id, j.name, j.workflow, a.name, j.state, j.nodes, j.parameters, j.tags"
_KEYS = ("id", "name", "workflow", "app", "state", "nodes", "params", "tags")


def _where(state: str | None, workflow: str | None, tags: dict[str, str] | None) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if state:
        from balsam.states import parse_state

        clauses.append("j.state = %s")
        args.append(parse_state(state).value)
    if workflow:
        clauses.append("j.workflow = %s")
        args.append(workflow)
    if tags:
        clauses.append("j.tags @> %s::jsonb")
        args.append(json.dumps(tags))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def listing(
    settings: SiteSettings, state: str | None, workflow: str | None, tags: dict[str, str] | None, limit: int | None
) -> tuple[dict[str, int], list[dict[str, Any]]] | None:
    """(jobs per state, the first ``limit`` jobs oldest first) of the jobs matching every filter;
    None when this quick path cannot serve (use ``Site`` then)."""
    import psycopg2

    where, args = _where(state, workflow, tags)  # a bad state is refused here, as by Site.jobs
    if settings.database.mode == "embedded" and not settings.db_dir.is_dir():
        return None
    idle_stop.hold_in_use(settings)  # like any Site: the idle watcher leaves the server alone meanwhile
    try:
        dsn, keywords = libpq_params(settings)
        try:
            conn = psycopg2.connect(dsn, connect_timeout=10, **keywords)
        except psycopg2.Error:
            return None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT version_num FROM alembic_version")
                if cur.fetchone() != (SCHEMA_REVISION,):
                    return None
                cur.execute(f"SELECT j.state, count(*) FROM jobs j{where} GROUP BY j.state", args)
                counts = dict(cur.fetchall())
                page = " LIMIT %s" if limit else ""
                cur.execute(f"SELECT {_COLUMNS} FROM jobs j JOIN apps a ON a.id = j.app_id{where} ORDER BY j.id{page}",
                            args + ([limit] if limit else []))  # fmt: skip
                rows = [dict(zip(_KEYS, row, strict=True)) for row in cur.fetchall()]
        except psycopg2.Error:
            return None
        finally:
            conn.close()
    finally:
        idle_stop.release_in_use(settings)
    idle_stop.ensure_watcher(settings)
    return counts, rows
