"""Several processes writing one site at once lose nothing."""

import subprocess
import sys
import textwrap


def test_two_processes_adding_jobs_at_once_lose_nothing(site, tmp_path):
    site.add_app("work", "work {i}")
    (root,) = site.add_jobs([{"app": "work", "params": {"i": -1}}])
    script = tmp_path / "adder.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from balsam.site import Site
        who = sys.argv[1]
        with Site.open({str(site.settings.path)!r}) as site:
            for batch in range(20):
                site.add_jobs(
                    {{"app": "work", "params": {{"i": f"{{who}}-{{batch}}-{{k}}"}}, "parents": [{root}] if k % 10 == 0 else []}}
                    for k in range(50)
                )
                site.add_job("work", {{"i": f"{{who}}-{{batch}}-single"}})
    """))
    procs = [subprocess.Popen([sys.executable, str(script), who]) for who in ("p", "q")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    jobs = site.jobs()
    values = sorted(str(j.parameters["i"]) for j in jobs)
    expected = sorted(
        [f"{who}-{b}-{k}" for who in "pq" for b in range(20) for k in range(50)]
        + [f"{who}-{b}-single" for who in "pq" for b in range(20)]
        + ["-1"]
    )
    assert values == expected
    assert len({j.id for j in jobs}) == len(jobs)
    assert site.count_jobs() == {"READY": 1 + 2 * 20 * 46, "AWAITING_PARENTS": 2 * 20 * 5}
    assert len(site.children(root)) == 2 * 20 * 5


def test_an_app_removed_while_its_jobs_are_being_added_keeps_them(site):
    """A removal that races a bulk creation waits for it (the key-share lock its checks hold on the
    app), then counts its jobs and refuses; no job is left without its app, and every event and
    parent link points at a job."""
    import threading
    import time

    from balsam.errors import BalsamError
    from balsam.site.db import jobstore
    from balsam.site.specs import spec_from_dict
    from sqlalchemy import text

    site.add_app("work", "work {i}")
    (parent,) = site.add_jobs([{"app": "work", "params": {"i": 0}}])
    app_id = site.app("work").id
    outcome: list[object] = []

    def remove() -> None:
        try:
            site.remove_app("work")
            outcome.append("removed")
        except BalsamError as exc:
            outcome.append(exc)

    with site.session() as session:
        specs = [spec_from_dict({"app": "work", "params": {"i": k}, "parents": [parent]}) for k in range(1, 201)]
        ids = jobstore.insert_jobs(session, specs, {"work": app_id})
        remover = threading.Thread(target=remove)
        remover.start()
        time.sleep(1.0)
        assert remover.is_alive(), "the removal did not wait for the jobs being added"
    remover.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], BalsamError), outcome
    assert "still has 201 job(s)" in str(outcome[0])
    assert [job.id for job in site.jobs()] == [parent, *ids]
    with site.session() as session:
        orphans = session.execute(text(
            "SELECT (SELECT count(*) FROM jobs WHERE app_id NOT IN (SELECT id FROM apps)),"
            " (SELECT count(*) FROM job_events WHERE job_id NOT IN (SELECT id FROM jobs)),"
            " (SELECT count(*) FROM job_parents WHERE child_id NOT IN (SELECT id FROM jobs)"
            "  OR parent_id NOT IN (SELECT id FROM jobs))"
        )).one()  # fmt: skip
    assert tuple(orphans) == (0, 0, 0)
    assert len(site.children(parent)) == 200


def test_a_bulk_copy_that_fails_while_streaming_stores_nothing(site):
    """COPY draws its lines as it sends (balsam.pgcopy.copy_lines): a failure half-way, after
    thousands of rows reached the server, must leave the table as it was."""
    import pytest
    from sqlalchemy import text

    from balsam.pgcopy import copy_lines

    site.add_app("work", "work {i}")
    before = site.jobs()

    def lines():
        for k in range(50_000):
            if k == 40_000:
                raise RuntimeError("the line maker failed")
            yield f"{10_000_000 + k}\tCREATED\tREADY\tcreated\n"

    with pytest.raises(RuntimeError, match="line maker failed"):
        with site.session() as session:
            copy_lines(session, "job_events", ("job_id", "from_state", "to_state", "message"), lines())
    with site.session() as session:
        assert session.scalar(text("SELECT count(*) FROM job_events WHERE job_id >= 10000000")) == 0
    assert site.jobs() == before


def test_every_event_names_a_job_and_leaves_with_it(site):
    """The job_events key is kept by triggers checking once per statement (migration 0011): an
    event for a job that does not exist is refused by name and nothing of its statement is kept,
    and removing a job removes its history, as the foreign key's cascade did."""
    import psycopg2.errors
    import pytest
    from sqlalchemy import text

    from balsam.pgcopy import copy_lines

    site.add_app("work", "work {i}")
    kept, removed = site.add_jobs([{"app": "work", "params": {"i": 1}}, {"app": "work", "params": {"i": 2}}])
    with pytest.raises(psycopg2.errors.ForeignKeyViolation, match="987654321"):
        with site.session() as session:
            copy_lines(session, "job_events", ("job_id", "from_state", "to_state", "message"),
                       iter([f"{kept}\tREADY\tREADY\tnote\n", "987654321\tCREATED\tREADY\tcreated\n"]))  # fmt: skip

    def events_of(job_id):
        with site.session() as session:
            return session.scalar(text("SELECT count(*) FROM job_events WHERE job_id = :id"), {"id": job_id})

    assert events_of(kept) == 1  # its "created" event only: the refused statement left nothing
    assert events_of(removed) >= 1
    site.remove_job(removed)
    assert events_of(removed) == 0
    assert events_of(kept) == 1 and [job.id for job in site.jobs()] == [kept]


def test_a_request_refused_by_a_job_far_into_it_stores_nothing(site):
    """Each job of a request is checked as COPY sends it (balsam.site.specs.Request): a job refused
    after tens of thousands were sent, or a cycle found once every job was seen, leaves the site as
    it was, and the error names the job."""
    import pytest
    from sqlalchemy import text

    from balsam.errors import BalsamError

    site.add_app("work", "work {i}")
    (existing,) = site.add_jobs([{"app": "work", "params": {"i": 0}}])
    jobs = [{"app": "work", "name": f"j{k}", "params": {"i": k}} for k in range(30_000)]

    def stored():
        with site.session() as session:
            return session.execute(text("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_events),"
                                        " (SELECT count(*) FROM job_parents)")).one()  # fmt: skip

    before = stored()
    refusals = {
        "a wrong parameter": ([*jobs[:25_000], {"app": "work", "params": {"x": 1}}, *jobs[25_000:]],
                              r"job \(item 25001\): parameter 'x' is not in the command template"),
        "an unknown parent id": ([*jobs, {"app": "work", "params": {"i": 1}, "parents": [existing, 10**12]}], "unknown parent job 1000000000000"),
        "a cycle": ([*jobs, {"app": "work", "name": "a", "params": {"i": 1}, "parents": ["b"]},
                     {"app": "work", "name": "b", "params": {"i": 2}, "parents": ["a", "j7"]}], "the jobs. parents form a cycle: (a -> b -> a|b -> a -> b)"),
    }  # fmt: skip
    for what, (request, message) in refusals.items():
        with pytest.raises(BalsamError, match=message):
            site.add_jobs(request)
        assert stored() == before, what
    assert len(site.add_jobs(jobs)) == 30_000


def test_a_jobs_app_is_checked_once_per_statement_and_kept_while_it_has_jobs(site):
    """The jobs' app key is kept by triggers (migration 0012), not a foreign key: a job naming no app
    is refused by name with nothing of its statement stored, an app with jobs cannot be deleted even
    by SQL that skips `remove_app`'s count, and a creation that races a removal holding the app waits
    for it and then stores nothing, with an error that says why."""
    import threading
    import time

    import psycopg2.errors
    import pytest
    from sqlalchemy import text

    from balsam.errors import BalsamError
    from balsam.pgcopy import copy_lines
    from balsam.site.db.jobstore import _JOB_COPY_COLUMNS

    site.add_app("work", "work {i}")
    site.add_app("other", "other {i}")
    (kept,) = site.add_jobs([{"app": "work", "params": {"i": 1}}])
    work = site.app("work").id

    def count_jobs():
        with site.session() as session:
            return session.scalar(text("SELECT count(*) FROM jobs"))

    # Through COPY, as insert_jobs writes: one bad row among good ones refuses the statement.
    line = "{id}\tx\tdefault\t{app}\t{{}}\tREADY\t1\t1\t1\t0\t1\t\\N\t{{}}\t{{}}\t{{}}\t[]\t[]\t[]\t\t0\t0\n"
    with pytest.raises(psycopg2.errors.ForeignKeyViolation, match="there is no app 424242"):
        with site.session() as session:
            copy_lines(session, "jobs", _JOB_COPY_COLUMNS, iter([line.format(id=10**9, app=work), line.format(id=10**9 + 1, app=424242)]))
    assert count_jobs() == 1
    with pytest.raises(Exception, match="there is no app 424242"):  # and by an UPDATE of one job
        with site.session() as session:
            session.execute(text("UPDATE jobs SET app_id = 424242 WHERE id = :id"), {"id": kept})
    assert site.job(kept).app.name == "work"

    with pytest.raises(Exception, match=f"app {work} still has jobs"):
        with site.session() as session:
            session.execute(text("DELETE FROM apps WHERE id = :id"), {"id": work})
    assert [app.name for app in site.apps()] == ["other", "work"]

    # A removal holds the app (deleted, not yet committed) while a creation reads the apps and writes.
    outcome: list[object] = []

    def add() -> None:
        try:
            outcome.append(site.add_jobs([{"app": "other", "params": {"i": k}} for k in range(500)]))
        except BalsamError as exc:
            outcome.append(exc)

    adder = None
    with site.session() as session:
        session.execute(text("DELETE FROM apps WHERE name = 'other'"))
        adder = threading.Thread(target=add)
        adder.start()
        time.sleep(1.0)
        assert adder.is_alive(), "the creation did not wait for the app's removal"
    adder.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], BalsamError), outcome
    assert "removed while they were being added; none was stored" in str(outcome[0])
    assert count_jobs() == 1 and [app.name for app in site.apps()] == ["work"]
