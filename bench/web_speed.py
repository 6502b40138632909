"""Benchmark: the web dashboard's speed. Prints figures only (medians of ``--repeat`` runs).

    python bench/web_speed.py [--tasks 100000] [--rate 5000] [--seconds 10] [--repeat 5] [--smoke]

First paint: a detached coordinator (its own process and PostgreSQL) holds a fan-out/fan-in
workflow of ``--tasks`` tasks (one root, the middles its children, one sink child of every middle);
a real chromium (Debian's, through chromedriver) signs in and opens the workflow's page, and the
page's own Performance timeline gives first contentful paint and DOMContentLoaded, counted from
navigation start. Beside it in the same run: the same browser's first paint of the sign-in page
(a page with no data: the floor of this browser on this machine), the server's time to answer the
workflow page's HTML, and when the grouped DAG has been drawn (fetched after the first paint).

Live feed: a simulated site speaking the real sync protocol (bench/simsite.py) reports its tasks'
events at ``--rate`` events a second for ``--seconds`` seconds (8 events a task: READY ... RUNNING,
then RUN_DONE ... JOB_FINISHED). Two readers follow the same workflow at once: the dashboard's feed
(/api/events, server-sent events) and the raw gRPC Watch stream (the baseline). Each one's rate is
the events it received over the time from its first to its last; its lag, how long after the
coordinator stored an event the reader had it (event time to arrival, per message, median and p99).

Beside them: the rate at which the coordinator stored the events (the site's acknowledgements),
which bounds both readers, and a replay: each reader alone reads the run's stored events again
(its own ceiling, with nothing being written).

Target (issue 21): first paint of the 100,000-task page under 2 s; the feed keeps up with 5,000
events a second.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simsite import END, START, SimulatedSite, site_token  # noqa: E402

from balsam.argo.client import ArgoClient  # noqa: E402
from balsam.argo.config import CoordinatorPolicy, ServerSettings  # noqa: E402
from balsam.argo.server import start_server, stop_server  # noqa: E402
from balsam.postgres import free_port  # noqa: E402
from balsam.protos import argo_pb2 as pb  # noqa: E402
from balsam.protos import argo_pb2_grpc as rpc  # noqa: E402
from balsam.wire.channel import OPTIONS, bearer  # noqa: E402
from sigterm import stop_on_sigterm  # noqa: E402

PAINT_APP, FEED_APP = "paint", "ev"
EVENTS_PER_TASK = 8
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TIMING = """
const done = arguments[arguments.length - 1];
const nav = performance.getEntriesByType('navigation')[0];
const report = (fcp) => done({fcp: fcp, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd});
new PerformanceObserver((list) => {
  const fcp = list.getEntriesByName('first-contentful-paint')[0];
  if (fcp) report(fcp.startTime);
}).observe({type: 'paint', buffered: true});
setTimeout(() => report(null), 5000);
"""


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else (values[0] if values else float("nan"))


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


class PacedSite(SimulatedSite):
    """A simulated site that holds its confirmed tasks and, once ``go`` is set, reports them at
    ``rate`` events a second (each task's whole run: ``EVENTS_PER_TASK`` events)."""

    def __init__(self, *args, rate: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rate = rate
        self.held: list[str] = []
        self.go = threading.Event()
        self.reported = 0
        self.pacing_s = 0.0

    def _confirm(self, confirmed: int) -> None:
        with self._lock:
            self.held.extend(self._take_confirmed(confirmed))

    def pace(self) -> None:
        self.go.wait()
        started = time.monotonic()
        while True:
            with self._lock:
                if not self.held:
                    break
            due = int(self.rate * (time.monotonic() - started)) - self.reported
            count = math.ceil(due / EVENTS_PER_TASK)
            if count > 0:
                with self._lock:
                    batch, self.held = self.held[:count], self.held[count:]
                self._report(batch, START)
                self._report(batch, END)
                self.reported += len(batch) * EVENTS_PER_TASK
            time.sleep(0.02)
        self.pacing_s = time.monotonic() - started


def fan(n: int, name: str) -> dict:
    middles = [f"m{i}" for i in range(n - 2)]
    tasks = [{"name": "root", "app": PAINT_APP}] + [{"name": m, "app": PAINT_APP, "parents": ["root"]} for m in middles]
    tasks.append({"name": "sink", "app": PAINT_APP, "parents": middles})
    return {"name": name, "tasks": tasks}


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def paint_runs(base: str, token: str, workflow_id: int, repeat: int, profile: Path) -> dict[str, list[float]]:
    from selenium.webdriver.common.by import By

    found: dict[str, list[float]] = {"fcp": [], "dcl": [], "signin_fcp": [], "html": [], "dag": []}
    driver = browser(profile)
    driver.set_script_timeout(30)
    try:
        driver.get(f"{base}/signin")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "signin").click()
        wait_for(lambda: driver.find_elements(By.ID, "workflows"), 30, "the overview after sign-in")
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=120) as http:
            for _ in range(repeat):
                started = time.perf_counter()
                assert http.get(f"/workflows/{workflow_id}").status_code == 200
                found["html"].append(time.perf_counter() - started)
                driver.get(f"{base}/signin")
                timing = driver.execute_async_script(TIMING)
                found["signin_fcp"].append((timing["fcp"] or float("nan")) / 1000)
                driver.get(f"{base}/workflows/{workflow_id}")
                timing = driver.execute_async_script(TIMING)
                found["fcp"].append((timing["fcp"] or float("nan")) / 1000)
                found["dcl"].append(timing["dcl"] / 1000)
                wait_for(lambda: driver.find_elements(By.ID, "dag-svg"), 120, "the DAG drawn")
                found["dag"].append(driver.execute_script("return performance.now()") / 1000)
    finally:
        driver.quit()
    return found


def read_feed(base: str, token: str, workflow_id: int, after: int, expect: int, into: dict) -> None:
    """The dashboard's feed: (arrival time, events, newest event's time) per message, until ``expect`` events."""
    got, lags, first, last = 0, [], None, None
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=None) as http:
        with http.stream("GET", "/api/events", params={"workflow": workflow_id, "after": after}) as feed:
            kind = ""
            into["ready"].set()
            for line in feed.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "events":
                    now = time.time()
                    events = json.loads(line[6:])
                    got += len(events)
                    first = first or now
                    last = now
                    lags.append(now - datetime.fromisoformat(events[-1]["at"].replace("Z", "+00:00")).timestamp())
                    if got >= expect:
                        break
    into.update(events=got, first=first, last=last, lags=lags)


def read_watch(address: str, token: str, workflow_id: int, after: int, expect: int, into: dict) -> None:
    """The raw gRPC Watch stream of the same workflow: the baseline."""
    got, lags, first, last = 0, [], None, None
    with grpc.insecure_channel(address, options=OPTIONS) as channel:
        stream = rpc.MonitorStub(channel).Watch(pb.WatchRequest(workflow_id=workflow_id, after_id=after), metadata=bearer(token))
        into["ready"].set()
        for event in stream:
            now = time.time()
            got += 1
            first = first or now
            last = now
            if got % 100 == 0:  # one in a hundred: a message of the feed carries many events
                lags.append(now - event.at.ToDatetime(tzinfo=UTC).timestamp())
            if got >= expect:
                stream.cancel()
                break
    into.update(events=got, first=first, last=last, lags=lags)


def feed_run(settings, base: str, token: str, client: ArgoClient, tasks: int, rate: float, run: int) -> dict:
    enrolment = client.enrol_site(f"feed-{run}")["token"]
    site = PacedSite(settings.address, f"feed-{run}", site_token(settings.address, enrolment, f"feed-{run}"), heartbeat_s=1.0,
                     apps=(f"{FEED_APP}{run}",), rate=rate)  # fmt: skip
    site.start()
    try:
        workflow = client.submit({"name": f"feed-{run}", "tasks": [{"name": f"t{i}", "app": f"{FEED_APP}{run}"} for i in range(tasks)]})
        wait_for(lambda: len(site.held) == tasks, 120, "every task assigned and confirmed", 0.1)
        time.sleep(0.5)  # the coordinator's own events of placing them are stored
        after = _newest(client, workflow)  # every event stored before the run: not counted
        expect = tasks * EVENTS_PER_TASK
        web, watch = {"ready": threading.Event()}, {"ready": threading.Event()}
        readers = [threading.Thread(target=read_feed, args=(base, token, workflow, after, expect, web), daemon=True),
                   threading.Thread(target=read_watch, args=(settings.address, token, workflow, after, expect, watch), daemon=True)]  # fmt: skip
        for reader in readers:
            reader.start()
        web["ready"].wait(30)
        watch["ready"].wait(30)
        time.sleep(0.3)
        pacer = threading.Thread(target=site.pace, daemon=True)
        pacer.start()
        site.go.set()
        for reader in readers:
            reader.join(timeout=max(60, 5 * tasks * EVENTS_PER_TASK / rate))
        pacer.join(timeout=30)
        # The coordinator's own pace: the events it stored (acknowledged to the site) over the time from
        # the first sent to the last acknowledged. Neither reader can go faster than events are stored.
        stored_s = site.last_ack_at - site.first_event_at
        # Each reader alone, reading the same events again once all are stored: its own ceiling.
        replay = {}
        for name, reader, where in (("web", read_feed, base), ("watch", read_watch, settings.address)):
            replay[name] = {"ready": threading.Event()}
            started = time.perf_counter()
            reader(where, token, workflow, after, expect, replay[name])
            replay[name]["rate"] = replay[name]["events"] / (time.perf_counter() - started)  # from asking to the last event
        return {"web": web, "watch": watch, "asked": rate, "sent_rate": site.reported / site.pacing_s if site.pacing_s else float("nan"),
                "stored_rate": site.events_sent / stored_s if stored_s > 0 else float("nan"), "replay": replay}  # fmt: skip
    finally:
        site.stop()


def _newest(client: ArgoClient, workflow: int) -> int:
    newest = 0
    for event in client.watch(workflow, until_done=False, timeout_s=2):
        newest = event.id
    return newest


def rate_of(reader: dict) -> float:
    if not reader.get("first") or reader["last"] == reader["first"]:
        return float("nan")
    return reader["events"] / (reader["last"] - reader["first"])


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a small run that checks the bench works (300 tasks, 500 events/s for 2 s)")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.rate, args.seconds, args.repeat = 300, 500.0, 2.0, 1
    if args.tasks < 3 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--tasks must be at least 3, --rate and --seconds positive")

    tmp = Path(tempfile.mkdtemp(prefix="web-bench-"))
    web_port = free_port()
    settings = ServerSettings(data=tmp / "argo", address=f"127.0.0.1:{free_port()}", web=f"127.0.0.1:{web_port}",
                              coordinator=CoordinatorPolicy(site_timeout_s=3600.0))  # fmt: skip
    base = f"http://127.0.0.1:{web_port}"
    client = None
    try:
        print(f"coordinator at {settings.address}, dashboard at {base}, data in {settings.data}", flush=True)
        start_server(settings, wait_s=120)
        token = (settings.data / "owner-token").read_text().strip()
        client = ArgoClient(settings.address, token=token, timeout_s=600)
        client.sites_stub.Register(pb.RegisterRequest(name="paint-site", apps=[PAINT_APP], nodes=64), timeout=30)
        started = time.perf_counter()
        workflow = client.submit(fan(args.tasks, "paint"))
        print(f"\nfirst paint: a fan-out/fan-in workflow of {args.tasks:,} tasks (submitted in {time.perf_counter() - started:.1f} s),"
              f" {args.repeat} runs", flush=True)  # fmt: skip
        found = paint_runs(base, token, workflow, args.repeat, tmp / "chromium")
        print(f"  workflow page, first contentful paint      median {med(found['fcp']):7.3f} s   runs " + " ".join(f"{v:.3f}" for v in found["fcp"]))
        print(f"  workflow page, DOMContentLoaded            median {med(found['dcl']):7.3f} s")
        print(f"  baseline: sign-in page (no data), its FCP  median {med(found['signin_fcp']):7.3f} s")
        print(f"  the page's HTML answered by the server     median {med(found['html']):7.3f} s")
        print(f"  the DAG drawn (fetched after first paint)  median {med(found['dag']):7.3f} s from navigation start")
        print(f"  ratio: workflow page FCP / sign-in page FCP       {med(found['fcp']) / med(found['signin_fcp']):7.2f}")

        tasks = max(1, int(args.rate * args.seconds / EVENTS_PER_TASK))
        print(f"\nlive feed: {tasks:,} tasks, {tasks * EVENTS_PER_TASK:,} events reported at {args.rate:,.0f} events/s asked,"
              f" {args.repeat} runs; the dashboard's feed and the raw gRPC Watch read them at once", flush=True)  # fmt: skip
        runs = [feed_run(settings, base, token, client, tasks, args.rate, run) for run in range(args.repeat)]
        for name, label in (("web", "dashboard feed (SSE)"), ("watch", "baseline: gRPC Watch")):
            rates = [rate_of(r[name]) for r in runs]
            lags = [lag for r in runs for lag in r[name].get("lags", [])]
            got = [r[name].get("events", 0) for r in runs]
            print(f"  {label:<22} median {med(rates):9,.0f} events/s   lag median {med(lags) * 1000:7.1f} ms, p99 {p99(lags) * 1000:7.1f} ms"
                  f"   events received {min(got):,}..{max(got):,} of {tasks * EVENTS_PER_TASK:,}")  # fmt: skip
        print(f"  the site's reports (asked {args.rate:,.0f}/s)     median {med([r['sent_rate'] for r in runs]):9,.0f} events/s")
        print(f"  baseline: the coordinator stored them  median {med([r['stored_rate'] for r in runs]):9,.0f} events/s   (the site's acknowledgements)")
        print(f"  ratio: feed rate / Watch rate                    {med([rate_of(r['web']) for r in runs]) / med([rate_of(r['watch']) for r in runs]):9.2f}")
        print(f"  ratio: feed rate / stored rate                   {med([rate_of(r['web']) for r in runs]) / med([r['stored_rate'] for r in runs]):9.2f}")
        print("\nreplay: each reader alone reads the run's stored events again (its own ceiling, nothing being written)")
        for name, label in (("web", "dashboard feed (SSE)"), ("watch", "baseline: gRPC Watch")):
            print(f"  {label:<22} median {med([r['replay'][name]['rate'] for r in runs]):9,.0f} events/s   (from the request to the last event)")
    finally:
        if client is not None:
            client.close()
        if settings.file.exists():
            try:
                stop_server(settings.data)
            except Exception as exc:  # noqa: BLE001 (clean up the rest regardless)
                print(f"stopping the coordinator failed: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted (servers stopped, temporary folders removed)")
