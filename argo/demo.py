"""``argo demo``: a coordinator and two sites on this machine, and a workflow that spans both.

Everything is real: the coordinator and each site's agent run as their own processes, each with its
own PostgreSQL; the sites' elastic queues start launchers (local scheduler) for the tasks Argo
places there; events flow back over the sync channel.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

from rich.text import Text

from balsam.argo.client import ArgoClient
from balsam.argo.config import ServerSettings
from balsam.argo.server import start_server, stop_server
from balsam.wire.convert import state_name
from balsam.postgres import free_port
from balsam.terminal import Console

console = Console()
SITES = ("alpha", "beta")
# Real programs at every site: python itself, with the parameters as its arguments. Each square
# leaves its result in a file; the report reads those files (fetched from whichever site made
# them) and sums them, so its output shows that the data crossed sites.
SQUARE = (
    f"{shlex.quote(sys.executable)} -c 'import sys; x = int(sys.argv[1]); open(\"square.txt\", \"w\").write(str(x * x));"
    f" print(x, \"squared is\", x * x)' {{x}}"
)
REPORT = (
    f"{shlex.quote(sys.executable)} -c 'import sys, glob; values = [int(open(f).read()) for f in sorted(glob.glob(\"squares/*\"))];"
    f" print(\"read\", len(values), \"of\", sys.argv[1], \"square files, sum\", sum(values))' {{count}}"
)


def section(title: str) -> None:
    console.print(Text(f"\n== {title}", style="bold"))


def workflow_spec(count: int = 6) -> dict:
    squares = [{"name": f"square-{x}", "app": "square", "params": {"x": x}, "outputs": ["square.txt"]} for x in range(1, count + 1)]
    report = {
        "name": "report", "app": "report", "site": "beta", "params": {"count": count}, "parents": [t["name"] for t in squares],
        "inputs": {f"squares/{t['name']}.txt": f"{t['name']}/square.txt" for t in squares},
    }  # fmt: skip
    return {"name": "demo", "tasks": [*squares, report]}


def make_site(root: Path, name: str, address: str, enrol_token: str = "", apps: dict[str, str] | None = None):
    """A site with ``apps`` (name -> command template; default: the demo's), an elastic queue of local
    launchers, linked to Argo (enrolled with ``enrol_token``, as an operator would); its agent started."""
    from balsam.site.agent import start_agent
    from balsam.site.api import Site
    from balsam.site.argo_sync import enrol

    site = Site.init(root / name, name=name)
    for app, template in (apps or {"square": SQUARE, "report": REPORT}).items():
        site.add_app(app, template)
    settings = site.settings
    settings.elastic_queue.enabled = True
    settings.elastic_queue.job_mode = "serial"
    settings.elastic_queue.interval_s = 1.0
    settings.elastic_queue.min_wall_min = 5
    settings.elastic_queue.max_wall_min = 10
    settings.argo.address = address
    settings.argo.heartbeat_s = 1.0
    # Both sites share this machine's filesystem: a child reads its parents' files from the other site's data/.
    settings.transfer.read_roots = [str(root)]
    settings.save()
    if enrol_token:
        enrol(settings, enrol_token)
    start_agent(settings, wait_s=30)
    return site


def stop_site(site) -> None:
    """The site's agent, its launchers (their batch jobs cancelled: this site's own), then its database.
    Should cancelling fail, the agent and the database are stopped anyway: the caller stops the
    other sites and the coordinator next."""
    from balsam.site.agent import stop_agent
    from balsam.site.postgres import EmbeddedPostgres
    from balsam.site.stopping import stop_site as stop

    site.close()
    try:
        stop(site.settings, force=True, say=lambda _line: None, warn=console.print)
    except Exception as exc:  # noqa: BLE001 (a scheduler's refusal, a database gone: say it, stop the rest)
        console.print(f"site {site.settings.name}: its batch jobs could not all be cancelled ({exc}); stopping its agent and database")
        stop_agent(site.settings)
        EmbeddedPostgres(site.settings).stop()


def run_demo(path: Path | None = None, count: int = 6) -> dict:
    root = Path(path or tempfile.mkdtemp(prefix="argo-demo-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    section("1. the coordinator, with its own PostgreSQL")
    started = time.perf_counter()
    server = ServerSettings(data=root / "argo", address=address)
    server.coordinator.site_timeout_s = 30
    start_server(server)
    console.print(f"Argo server on {address}, data in {server.data} ({time.perf_counter() - started:.1f} s)")
    sites = []
    try:
        section("2. two sites, each with its own folder, PostgreSQL and agent, joined to Argo")
        owner = (server.data / "owner-token").read_text().strip()  # the operator's, made by the server
        for name in SITES:
            with ArgoClient(address, token=owner) as admin:
                enrolment = admin.enrol_site(name)["token"]
            sites.append(make_site(root, name, address, enrolment))
            console.print(f"site {name!r} in {root / name}: apps square, report; enrolled; agent started")
        with ArgoClient(address, token=owner) as client:
            _wait_for_sites(client)
            section("3. a workflow: squares placed by Argo on either site, then a report pinned to beta that reads their files")
            workflow_id = client.submit(workflow_spec(count))
            console.print(f"workflow {workflow_id} submitted; live events:")
            for event in client.watch(workflow_id):
                if event.workflow_status:
                    console.print(f"  workflow {event.workflow_status}")
                elif event.site and state_name(event.to_state) in ("RUNNING", "JOB_FINISHED", "FAILED"):
                    console.print(f"  {event.task_id:<16} @{event.site:<6} {state_name(event.to_state)}")
            result = _report(client, workflow_id, sites)
    finally:
        section("4. stopping everything")
        for site in sites:
            stop_site(site)
        stop_server(server.data)
        console.print(f"stopped; the folders stay in {root}")
    return result


def _wait_for_sites(client: ArgoClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        up = {s["name"] for s in client.sites() if s["status"] == "up"}
        if up >= set(SITES):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the sites did not register with Argo within {timeout_s} s")


def _report(client: ArgoClient, workflow_id: int, sites) -> dict:
    """Each task's site, state and what its program printed (read from that site's job folder)."""
    outputs = {}
    for site in sites:
        for job in site.jobs(workflow="demo"):
            task = job.tags.get("argo_task")
            out = site.settings.data_dir / "demo" / str(job.id) / "job.out"
            if task and out.exists():
                outputs[task] = out.read_text().strip()
    tasks = client.tasks(workflow_id)
    section("result: where each task ran and what it printed")
    for task in tasks:
        console.print(f"  {task['name']:<10} {task['site']:<6} {task['state']:<13} {outputs.get(task['id'], '')}")
    expected = sum(x * x for x in range(1, sum(1 for t in tasks if t["name"] != "report") + 1))
    moved = sum(1 for t in tasks if t["name"] != "report" and t["site"] != "beta")
    console.print(f"the report read {moved} square file(s) fetched from alpha; the right sum is {expected}")
    status = client.status(workflow_id)
    placement = {site: sum(counts.values()) for site, counts in status["by_site"].items()}
    console.print(f"workflow {workflow_id}: {status['status']}; tasks per site: "
                  + ", ".join(f"{site} {n}" for site, n in sorted(placement.items())))  # fmt: skip
    return {"status": status["status"], "placement": placement, "tasks": tasks, "outputs": outputs, "expected_sum": expected,
            "moved": moved}
