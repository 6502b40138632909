"""Benchmark: from a parent task's end to its child's start, through Argo, within one site and across two.

    python bench/dag_latency.py [--tasks 200] [--smoke]

A real coordinator and two real sites on this machine (each its own PostgreSQL and agent, launchers
from the elastic queue, lingering between tasks), exactly as ``argo demo`` builds them. Three chains of
``--tasks`` tasks: two run ``true``, one pinned to alpha alone, one alternating alpha, beta, alpha, ...;
the third is pinned to alpha, each task writing a file its child stages in (``touch out``). A
hop is the time from a task's end to its child's start, as each task's attempt records them (the
sites' events: the same host clock); the first few hops, while launchers start, are left out.

Within one site each child is sent ahead (``balsam.argo.ahead``): it is a job there, waiting for its
parent's, long before the parent ends; the launcher's commit of the end releases it and the next
launcher look starts it. With a file, the release's NOTIFY wakes the site's transfer service, which
hard-links the parent's output into the child's folder in the round that finds it. Across sites
every step is event-driven: the launcher writes the end at once, the database's NOTIFY wakes the
site's sync, the coordinator releases the child and places it at once, the assignment streams to
the child's site, is confirmed on the same stream (fencing), and the NOTIFY it makes wakes an idle
launcher there.

The raw baseline, in the same run: the same chain as bare processes, each started by Python as soon
as the one before has ended, its start the time it reads itself (``date``: a hop with nothing in
between but a fork and an exec).

Targets (issue 20): median hop under 50 ms within a site, under 250 ms across sites.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from balsam.argo.client import ArgoClient
from balsam.argo.config import ServerSettings
from balsam.argo.demo import make_site, stop_site
from balsam.argo.server import start_server, stop_server
from balsam.postgres import free_port
from sigterm import stop_on_sigterm  # noqa: E402

WARMUP_HOPS = 3  # while the first launchers start
CHAINS = (  # label, the sites in turn, whether each task hands a file to the next
    ("within one site (alpha)", ["alpha"], False),
    ("within one site, a file each", ["alpha"], True),
    ("across sites (alpha, beta, ...)", ["alpha", "beta"], False),
)


def chain(name: str, count: int, sites: list[str], files: bool = False) -> dict:
    """``files``: each task writes a file (``touch out``), which its child stages in (a hard link)."""
    tasks = []
    for i in range(count):
        task = {"name": f"t{i}", "app": "touch" if files else "true", "site": sites[i % len(sites)]}
        if files:
            task["outputs"] = ["out"]
        if i:
            task["parents"] = [f"t{i - 1}"]
            if files:
                task["inputs"] = {"in": f"t{i - 1}/out"}
        tasks.append(task)
    return {"name": name, "tasks": tasks}


def _at(value: str) -> float:
    return datetime.fromisoformat(value.removesuffix("Z") + "+00:00").timestamp()


def hops(tasks: list[dict]) -> list[float]:
    by_name = {t["name"]: t["attempts"][-1] for t in tasks}
    ordered = [by_name[f"t{i}"] for i in range(len(by_name))]
    return [_at(child["started_at"]) - _at(parent["ended_at"]) for parent, child in zip(ordered, ordered[1:])][WARMUP_HOPS:]


# A hop's steps, in order: each is the time from the step before it (the parent's end first).
STEPS = ("end->released", "released->placed", "placed->job at site", "job->staged in", "staged in->RUNNING")
# ... and those of a hop whose child was sent ahead (a job at the site waiting for its parent's).
AHEAD_STEPS = ("end->released at site", "released->staged in", "staged in->RUNNING")


def hop_steps(listed: list[dict], sites: list) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Where each hop's time goes: the coordinator's release and placement (its attempt times), the
    site's job made from the assignment, staged in and taken by a launcher (the site's job events);
    for a child sent ahead, its release at the site, staged in and taken. One host's clock for all of them."""
    from sqlalchemy import text

    tasks = {t["name"]: t for t in listed}
    at_site: dict[str, dict[str, float]] = {}
    for site in sites:
        with site.session() as session:
            rows = session.execute(text(
                "SELECT j.argo_task_id, e.to_state, min(e.timestamp) FROM job_events e JOIN jobs j ON j.id = e.job_id"
                " WHERE j.argo_task_id = ANY(:ids) GROUP BY j.argo_task_id, e.to_state"),
                {"ids": [t["id"] for t in tasks.values()]}).all()  # fmt: skip
        for task_id, state, when in rows:
            at_site.setdefault(task_id, {})[state] = when.timestamp()
    steps: dict[str, list[float]] = {step: [] for step in STEPS}
    ahead: dict[str, list[float]] = {step: [] for step in AHEAD_STEPS}
    for i in range(1 + WARMUP_HOPS, len(tasks)):
        parent, child = tasks[f"t{i - 1}"]["attempts"][-1], tasks[f"t{i}"]
        attempt, events = child["attempts"][-1], at_site.get(child["id"], {})
        if "RUNNING" not in events:
            continue
        made = min(events.values())  # its first event: made READY (or waiting for its inputs)
        staged = events.get("STAGED_IN", events.get("READY", made))
        if "AWAITING_PARENTS" in events:
            times = (_at(parent["ended_at"]), events["READY"], staged, events["RUNNING"])
            for step, before, after in zip(AHEAD_STEPS, times, times[1:]):
                ahead[step].append(after - before)
            continue
        times = (_at(parent["ended_at"]), _at(attempt["ready_at"]), _at(attempt["placed_at"]), made, staged, events["RUNNING"])
        for step, before, after in zip(STEPS, times, times[1:]):
            steps[step].append(after - before)
    return steps, ahead


def report_steps(found: tuple[dict[str, list[float]], dict[str, list[float]]]) -> None:
    for label, steps in zip(("", "sent ahead "), found):
        shown = [f"{step} {statistics.median(values) * 1000:.1f}" for step, values in steps.items() if values]
        if shown:
            hops = len(next(iter(steps.values())))
            print(f"    {f'its steps, {label}median ms:':32s} " + ", ".join(shown) + f" ({hops} hops)")


def raw_hops(count: int) -> list[float]:
    """From one process's end (its wait returned) to the next one's start as that process reads the
    clock: a fork and an exec, nothing else."""
    found = []
    ended = None
    for _ in range(count):
        started = float(subprocess.run(["date", "+%s.%N"], check=True, capture_output=True, text=True).stdout)
        if ended is not None:
            found.append(started - ended)
        ended = time.time()
    return found


def report(label: str, values: list[float]) -> float:
    ordered = sorted(values)
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    print(f"  {label:34s} median {median * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms   max {ordered[-1] * 1000:8.1f} ms   ({len(ordered)} hops)")
    return median


def run(count: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="balsam-dag-"))
    address = f"127.0.0.1:{free_port()}"
    server = ServerSettings(data=root / "argo", address=address)
    server.coordinator.site_timeout_s = 30
    start_server(server)
    sites = []
    try:
        owner = (server.data / "owner-token").read_text().strip()
        for name in ("alpha", "beta"):
            with ArgoClient(address, token=owner) as admin:
                token = admin.enrol_site(name)["token"]
            site = make_site(root, name, address, token, apps={"true": "true", "touch": "touch out"})
            sites.append(site)
        with ArgoClient(address, token=owner) as client:
            deadline = time.monotonic() + 60
            while {s["name"] for s in client.sites() if s["status"] == "up"} != {"alpha", "beta"}:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sites did not come up")
                time.sleep(0.2)
            figures = {}
            print(f"a chain of {count} tasks through Argo (coordinator and two sites on this machine):")
            for label, pins, files in CHAINS:
                workflow_id = client.submit(chain(label.split()[0] + ("-files" if files else ""), count, pins, files))
                status = client.wait(workflow_id, timeout_s=60 + count * 5)
                if status != "finished":
                    raise RuntimeError(f"the chain {label} ended {status}")
                tasks = client.tasks(workflow_id)
                figures[label] = report(label, hops(tasks))
                report_steps(hop_steps(tasks, sites))
            figures["raw"] = report("raw: process after process (no Argo)", raw_hops(count))
        for label, _pins, _files in CHAINS:
            print(f"  {label}: {figures[label] / figures['raw']:.1f}x the raw hop")
        return figures
    finally:
        for site in sites:
            stop_site(site)
        stop_server(server.data)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200, help="tasks per chain")
    parser.add_argument("--smoke", action="store_true", help="chains of 8 tasks (5 hops after the warm-up): checks the bench runs (what the test runs)")
    args = parser.parse_args()
    run(8 if args.smoke else args.tasks)


if __name__ == "__main__":
    main()
