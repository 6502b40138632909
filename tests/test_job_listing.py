"""`balsam job ls` reads its table through plain psycopg2 (balsam.site.db.listing): the same jobs,
counts and fields as the Python API's `Site.jobs` and `Site.count_jobs`, for every filter."""

from __future__ import annotations

import dataclasses
import json

from balsam.site.cli.output import job_record
from balsam.site.db.listing import listing
from balsam.site.postgres import free_port


def test_the_quick_listing_matches_the_api_for_every_filter(site, balsam):
    site.add_app("sim", "simulate --n {n}")
    site.add_app("other", "echo {n}")
    for i in range(12):
        site.add_job("sim" if i % 3 else "other", params={"n": i}, workflow="w1" if i < 7 else "w2",
                     tags={"size": "small" if i % 2 else "big", "k": str(i)}, name=f"j{i}", nodes=1 + i % 2)  # fmt: skip
    site.kill_job(4)  # j3, a small one
    cases = [
        {}, {"state": "ready"}, {"state": "USER_KILLED"}, {"workflow": "w2"}, {"tags": {"size": "small"}},
        {"tags": {"size": "big", "k": "4"}}, {"workflow": "w1", "tags": {"size": "small"}, "state": "READY"},
        {"workflow": "none"},
    ]  # fmt: skip
    keys = ("id", "name", "workflow", "app", "state", "nodes", "params", "tags")
    for case in cases:
        for limit in (None, 3):
            quick = listing(site.settings, case.get("state"), case.get("workflow"), case.get("tags"), limit)
            assert quick is not None, case
            counts, rows = quick
            assert counts == site.count_jobs(**case), case
            expected = [{k: job_record(j)[k] for k in keys} for j in site.jobs(**case, limit=limit)]
            assert rows == expected, (case, limit)
    # The table of `job ls` is what it was: rows, the page line and the counts.
    table = balsam("job ls --limit 5 --tag size=small")
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "WORKFLOW", "APP", "STATE", "NODES", "PARAMS", "TAGS"]
    assert lines[1].split()[:5] == ["2", "j1", "w1", "sim", "READY"] and "size=small" in lines[1]
    assert "showing 5 of 6 jobs (--limit 0 shows all)" in table.out and table.out.endswith("6 jobs: 5 READY, 1 USER_KILLED\n")
    # --json is a page too, and says so where a script sees it: the document and stderr.
    page = balsam("job ls --json --limit 5 --tag size=small")
    doc = json.loads(page.out)
    assert (doc["total"], doc["limit"], len(doc["jobs"])) == (6, 5, 5)
    assert "showing 5 of 6 jobs (--limit 0 shows all)" in page.err
    everything = balsam("job ls --json --limit 0 --tag size=small")
    assert len(json.loads(everything.out)["jobs"]) == 6 and "showing" not in everything.err
    bad = balsam("job ls --state nonsense")
    assert bad.code == 1 and "nonsense" in bad.err and "Traceback" not in bad.err


def test_the_quick_listing_gives_way_when_it_cannot_serve(site, balsam):
    unreachable = dataclasses.replace(site.settings)
    unreachable.database = dataclasses.replace(site.settings.database, url=f"postgresql://nobody:x@127.0.0.1:{free_port()}/none")
    assert listing(unreachable, None, None, None, None) is None
    with site.session() as session:
        from sqlalchemy import text

        session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        assert listing(site.settings, None, None, None, None) is None  # an older schema: Site migrates it
    finally:
        with site.session() as session:
            from sqlalchemy import text

            from balsam.site.db.engine import SCHEMA_REVISION

            session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": SCHEMA_REVISION})


_LOADED = """
import sys
sys.argv = [{prog!r}, *{args!r}]
from {module} import main
try:
    main()
except SystemExit:
    pass
print("LOADED", " ".join(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


def _loaded(prog: str, module: str, *args: str, env: dict[str, str] | None = None) -> set[str]:
    import os
    import subprocess
    import sys

    code = _LOADED.format(prog=prog, args=list(args), module=module)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("LOADED ")]
    return set(line.split()[1:])


def test_what_users_wait_for_loads_no_heavy_library(site):
    """bench/cli_speed.py measures the time; this keeps the reasons for it: help loads no database
    library, no rich and no pydantic, and the table of `job ls` no SQLAlchemy, pydantic or rich."""
    for prog, module in (("balsam", "balsam.site.cli.main"), ("argo", "balsam.argo.cli")):
        loaded = _loaded(prog, module, "--help")
        assert not loaded & {"sqlalchemy", "psycopg2", "rich", "pydantic", "yaml", "grpc"}, (prog, loaded)
    site.add_app("sim", "simulate --n {n}")
    site.add_jobs([{"app": "sim", "params": {"n": i}} for i in range(3)])
    listed = _loaded("balsam", "balsam.site.cli.main", "job", "ls", env={"BALSAM_SITE": str(site.settings.path)})
    assert "psycopg2" in listed and not listed & {"sqlalchemy", "pydantic", "yaml", "rich"}, listed
