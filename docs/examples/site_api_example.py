"""A tour of the Balsam site Python API: create a site, add apps and jobs, query, kill and reset.

Run it with the project's Python: ``python docs/examples/site_api_example.py``. It makes a site in a
temporary folder, with its own PostgreSQL server, and stops that server and removes the folder at
the end. It starts no launcher, so its jobs stay READY or AWAITING_PARENTS (``balsam launcher``,
or the site agent's elastic queue, would run them).
"""

import tempfile
from pathlib import Path

from balsam.errors import BalsamError
from balsam.site import Site
from balsam.site.postgres import EmbeddedPostgres

with tempfile.TemporaryDirectory() as tmp:
    # A new site folder with a private PostgreSQL cluster (its server is left running).
    site = Site.init(Path(tmp) / "example-site", name="example")
    try:
        print(f"site {site.settings.name!r}, database mode {site.settings.database.mode!r}")

        # Apps: command templates. Each {placeholder} is filled per job; runs never use a shell.
        sim = site.add_app("sim", "simulate --size {n} --out {out} {infile}", env={"OMP_NUM_THREADS": "4"})
        site.add_app("merge", "merge --into {out} {a} {b}", on_error="retry", max_retries=2)
        print("app sim has parameters", sim.parameters)

        # Single jobs. Parents are job ids; a job waits until all its parents have finished.
        a = site.add_job(
            "sim", {"n": 8, "out": "a.h5", "infile": "in.dat"}, name="a", workflow="demo", tags={"size": "small"}
        )
        b = site.add_job(
            "sim", {"n": 64, "out": "b.h5", "infile": "in.dat"}, name="b", workflow="demo",
            nodes=4, ranks_per_node=32, wall_time_min=30, tags={"size": "large"},
        )
        m = site.add_job(
            "merge", {"out": "ab.h5", "a": "a.h5", "b": "b.h5"}, name="merge", workflow="demo", parents=[a.id, b.id]
        )
        print(f"job {m.id} ({m.name}) is {m.state}, waiting for {m.pending_parents} parents: {site.parents(m.id)}")

        # Bulk: one request, checked whole, then written with COPY. Parents may also be the
        # names of other jobs in the same request.
        sweep = [
            {
                "app": "sim", "name": f"s{i}", "workflow": "sweep", "tags": {"batch": str(i // 50)},
                "params": {"n": i, "out": f"s{i}.h5", "infile": "in.dat"},
            }
            for i in range(100)
        ]
        sweep.append({
            "app": "merge", "name": "s-merge", "workflow": "sweep", "parents": ["s0", "s1"],
            "params": {"out": "s01.h5", "a": "s0.h5", "b": "s1.h5"},
        })
        ids = site.add_jobs(sweep)
        print(f"bulk: added {len(ids)} jobs, ids {ids[0]}..{ids[-1]}")

        # A bad request writes nothing: here the second job has a parameter the app does not name.
        try:
            site.add_jobs([
                {"app": "sim", "params": {"n": 1, "out": "x.h5", "infile": "in.dat"}},
                {"app": "sim", "params": {"n": 2, "out": "y.h5", "infile": "in.dat", "colour": "red"}},
            ])
        except BalsamError as exc:
            print("refused:", exc)

        # Queries: optional filters by state, workflow and tags; jobs come oldest first.
        print("all jobs:", dict(sorted(site.count_jobs().items())))
        print("sweep batch 1:", site.count_jobs(workflow="sweep", tags={"batch": "1"}))
        for job in site.jobs(state="READY", workflow="demo"):
            print(f"  {job.id} {job.name} {job.app.name} {job.state} nodes={job.nodes} params={job.parameters}")
        print("children of a:", site.children(a.id))

        # Change a job that no launcher holds: parameters are merged, resources replaced.
        m = site.modify_job(m.id, params={"out": "merged.h5"}, nodes=2)
        print(f"merge now has params {m.parameters} and {m.nodes} nodes")

        # Kill and reset. A killed parent does not release its child: merge keeps waiting.
        site.kill_job(a.id)
        print(f"a is {site.job(a.id).state}; merge is {site.job(m.id).state}")
        try:
            site.kill_job(a.id)
        except BalsamError as exc:
            print("refused:", exc)
        print("reset a ->", site.reset_job(a.id))

        # The event log: one row per state transition.
        for event in site.history(a.id):
            print(f"  {event.from_state:>12} -> {event.to_state:<12} {event.message}")
    finally:
        site.close()
        EmbeddedPostgres(site.settings).stop()
