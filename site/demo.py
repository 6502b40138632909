"""``balsam demo``: a site on embedded defaults, apps, and a small workflow, shown as a user sees it."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.text import Text

from balsam.site.api import Site
from balsam.site.cli.output import console, print_table
from balsam.site.postgres import EmbeddedPostgres


def section(title: str) -> None:
    console.print(Text(f"\n== {title}", style="bold"))


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
    shared = site.settings.data_dir / "demo-files"
    shared.mkdir()
    section("2. apps: command templates")
    # Parameters reach the program as separate arguments ($1, $2), never as shell text.
    site.add_app("greet", "sh -c 'echo \"Hello, $1\" > \"$2\"' greet {who} {out}")
    site.add_app("merge", "cat {a} {b}", postprocess="ls job.out")
    site.add_app("count", "wc -c {file}", on_error="retry", max_retries=2)
    print_table(["APP", "COMMAND", "PARAMETERS"], [(a.name, a.command_template, ", ".join(a.parameters)) for a in site.apps()])

    section("3. a workflow: two greetings feed a merge, which feeds a count")
    # A hostile-looking value is just text: jobs run without a shell.
    hello, goodbye = shared / "hello.txt", shared / "goodbye.txt"
    hi = site.add_job("greet", {"who": "world; rm -rf ~", "out": str(hello)}, name="hello", workflow="demo")
    bye = site.add_job("greet", {"who": "Argo", "out": str(goodbye)}, name="goodbye", workflow="demo")
    merged = site.add_job("merge", {"a": str(hello), "b": str(goodbye)}, name="merge", workflow="demo",
                          parents=[hi.id, bye.id])  # fmt: skip
    merged_out = site.settings.data_dir / "demo" / str(merged.id) / "job.out"
    count = site.add_job("count", {"file": str(merged_out)}, name="count", workflow="demo", parents=[merged.id],
                         tags={"kind": "summary"})  # fmt: skip
    _show(site, "demo")

    section("4. a parameter sweep through the bulk path")
    started = time.perf_counter()
    ids = site.add_jobs(
        {"app": "greet", "params": {"who": f"sample-{i}", "out": str(shared / f"sample-{i}.txt")}, "workflow": "sweep",
         "tags": {"batch": str(i // 250)}, "node_packing_count": 8}
        for i in range(1000)
    )  # fmt: skip
    console.print(f"added {len(ids)} jobs in {time.perf_counter() - started:.2f} s")
    console.print("jobs per state: " + ", ".join(f"{n} {s}" for s, n in site.count_jobs().items()))

    section("5. a launcher runs them all: balsam launcher --job-mode serial --until-idle")
    started = time.perf_counter()
    env = {**os.environ, "BALSAM_SITE": str(site.settings.path)}
    subprocess.run(
        [sys.executable, "-m", "balsam.site.cli.main", "launcher", "--job-mode", "serial", "--until-idle"],
        env=env, check=True,
    )  # fmt: skip
    console.print(f"ran {len(ids) + 4} jobs in {time.perf_counter() - started:.1f} s")
    console.print("jobs per state: " + ", ".join(f"{n} {s}" for s, n in site.count_jobs().items()))
    _show(site, "demo")
    console.print(f"merge wrote: {merged_out.read_text().strip()!r}")
    counted = site.settings.data_dir / "demo" / str(count.id) / "job.out"
    console.print(f"count wrote: {counted.read_text().strip()!r}")

    section("6. the event log of the merge job")
    print_table(["FROM", "TO", "MESSAGE"], [(e.from_state, e.to_state, e.message) for e in site.history(merged.id)])


def _show(site: Site, workflow: str) -> None:
    print_table(
        ["ID", "NAME", "APP", "STATE", "PARAMS", "PARENTS"],
        [(j.id, j.name, j.app.name, j.state, " ".join(f"{k}={v!r}" for k, v in j.parameters.items()),
          ", ".join(map(str, site.parents(j.id)))) for j in site.jobs(workflow=workflow)],
    )  # fmt: skip
