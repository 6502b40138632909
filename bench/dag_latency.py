"""Benchmark: from a parent task's end to its child's start, through Argo, within one site and across two.

    python bench/dag_latency.py [--tasks 200] [--smoke]

A real coordinator and two real sites on this machine (each its own PostgreSQL and agent, launchers
from the elastic queue, lingering between tasks), exactly as ``argo demo`` builds them. Two chains of
``--tasks`` tasks run ``true``: one pinned to alpha alone, one alternating alpha, beta, alpha, ... A
hop is the time from a task's end to its child's start, as each task's attempt records them (the
sites' events: the same host clock); the first few hops, while launchers start, are left out.

Every step between them is event-driven: the launcher writes the end at once, the database's NOTIFY
wakes the site's sync, the coordinator releases the child and places it at once, the assignment
streams to the child's site, is confirmed on the same stream (fencing), and the NOTIFY it makes wakes
an idle launcher there.

The raw baseline, in the same run: the same chain as bare processes, each ``true`` started by Python
as soon as the one before has ended (a hop with nothing in between but a fork and an exec).

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

WARMUP_HOPS = 3  # while the first launchers start


def chain(name: str, count: int, sites: list[str]) -> dict:
    tasks = []
    for i in range(count):
        task = {"name": f"t{i}", "app": "true", "site": sites[i % len(sites)]}
        if i:
            task["parents"] = [f"t{i - 1}"]
        tasks.append(task)
    return {"name": name, "tasks": tasks}


def hops(client: ArgoClient, workflow_id: int) -> list[float]:
    by_name = {t["name"]: t["attempts"][-1] for t in client.tasks(workflow_id)}
    ordered = [by_name[f"t{i}"] for i in range(len(by_name))]

    def at(value: str) -> float:
        return datetime.fromisoformat(value.removesuffix("Z") + "+00:00").timestamp()

    return [at(child["started_at"]) - at(parent["ended_at"]) for parent, child in zip(ordered, ordered[1:])][WARMUP_HOPS:]


def raw_hops(count: int) -> list[float]:
    found = []
    ended = None
    for _ in range(count):
        started = time.perf_counter()
        if ended is not None:
            found.append(started - ended)
        subprocess.run(["true"], check=True)
        ended = time.perf_counter()
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
            site = make_site(root, name, address, token, apps={"true": "true"})
            sites.append(site)
        with ArgoClient(address, token=owner) as client:
            deadline = time.monotonic() + 60
            while {s["name"] for s in client.sites() if s["status"] == "up"} != {"alpha", "beta"}:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sites did not come up")
                time.sleep(0.2)
            figures = {}
            print(f"a chain of {count} tasks through Argo (coordinator and two sites on this machine):")
            for label, pins in (("within one site (alpha)", ["alpha"]), ("across sites (alpha, beta, ...)", ["alpha", "beta"])):
                workflow_id = client.submit(chain(label.split()[0], count, pins))
                status = client.wait(workflow_id, timeout_s=60 + count * 5)
                if status != "finished":
                    raise RuntimeError(f"the chain {label} ended {status}")
                figures[label] = report(label, hops(client, workflow_id))
            figures["raw"] = report("raw: true after true (no Argo)", raw_hops(count))
        for label in ("within one site (alpha)", "across sites (alpha, beta, ...)"):
            print(f"  {label}: {figures[label] / figures['raw']:.1f}x the raw hop")
        return figures
    finally:
        for site in sites:
            stop_site(site)
        stop_server(server.data)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200, help="tasks per chain")
    parser.add_argument("--smoke", action="store_true", help="chains of 8 tasks (5 hops after the warm-up): checks the bench runs (what the test runs)")
    args = parser.parse_args()
    run(8 if args.smoke else args.tasks)


if __name__ == "__main__":
    main()
