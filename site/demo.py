"""``balsam demo``: a site on embedded defaults, apps, and a small workflow, shown as a user sees it."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from balsam.site.api import Site
from balsam.site.cli.output import console, print_table
from balsam.site.postgres import EmbeddedPostgres


def section(title: str) -> None:
    console.print(f"\n[bold]== {title}[/]")


def _new_folder() -> Path:
    base = Path.cwd() / "balsam-demo-site"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run_demo(path: Path | None) -> None:
    path = path or _new_folder()
    section("1. a site with its own PostgreSQL")
    started = time.perf_counter()
    site = Site.init(path)
    console.print(f"created site {site.settings.name!r} in {path} ({time.perf_counter() - started:.1f} s, "
                  f"PostgreSQL on {site.settings.database.host}:{site.settings.database.port})")  # fmt: skip
    try:
        _fill(site)
    finally:
        site.close()
        EmbeddedPostgres(site.settings).stop()
    section("done")
    console.print(f"the site's database is stopped; any balsam command restarts it. Look around with:\n"
                  f"  export BALSAM_SITE={shlex.quote(str(path))}\n  balsam job ls\n  balsam job history 1")  # fmt: skip


def _fill(site: Site) -> None:
    section("2. apps: command templates")
    site.add_app("greet", "echo Hello, {who}")
    site.add_app("count", "wc -c {file}", on_error="retry", max_retries=2)
    site.add_app("merge", "cat {a} {b}", postprocess="ls -l")
    print_table(["APP", "COMMAND", "PARAMETERS"], [(a.name, a.command_template, ", ".join(a.parameters)) for a in site.apps()])

    section("3. a workflow: two greetings feed a merge, which feeds a count")
    # A hostile-looking value is just text: jobs run without a shell.
    hi = site.add_job("greet", {"who": "world; rm -rf ~"}, name="hello", workflow="demo")
    bye = site.add_job("greet", {"who": "Argo"}, name="goodbye", workflow="demo")
    merged = site.add_job("merge", {"a": "hello.out", "b": "goodbye.out"}, name="merge", workflow="demo",
                          parents=[hi.id, bye.id])  # fmt: skip
    site.add_job("count", {"file": "merged.out"}, name="count", workflow="demo", parents=[merged.id], tags={"kind": "summary"})
    _show(site, "demo")

    section("4. a parameter sweep through the bulk path")
    started = time.perf_counter()
    ids = site.add_jobs(
        {"app": "greet", "params": {"who": f"sample-{i}"}, "workflow": "sweep", "tags": {"batch": str(i // 250)}}
        for i in range(1000)
    )
    console.print(f"added {len(ids)} jobs in {time.perf_counter() - started:.2f} s")
    counts = site.count_jobs()
    console.print("jobs per state: " + ", ".join(f"{n} {s}" for s, n in counts.items()))

    section("5. the event log of the merge job")
    print_table(["FROM", "TO", "MESSAGE"], [(e.from_state, e.to_state, e.message) for e in site.history(merged.id)])
    console.print("(the launcher, which runs these jobs, is the next piece of Balsam-Argo to be built)")


def _show(site: Site, workflow: str) -> None:
    print_table(
        ["ID", "NAME", "APP", "STATE", "PARAMS", "PARENTS"],
        [(j.id, j.name, j.app.name, j.state, " ".join(f"{k}={v!r}" for k, v in j.parameters.items()),
          ", ".join(map(str, site.parents(j.id)))) for j in site.jobs(workflow=workflow)],
    )  # fmt: skip
