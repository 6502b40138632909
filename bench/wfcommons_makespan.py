"""Benchmark: real workflow shapes (WfCommons Montage, Epigenomics, Blast) through Argo and through Parsl.

    python bench/wfcommons_makespan.py [--repeats 1] [--target-s 30] [--parsl htex|threads] [--smoke]

Each instance is made by WfCommons' recipe generator (in memory: ``Instance()`` would fetch its schema
from the internet): Montage of ~196 tasks, Epigenomics ~145, Blast ~98, seeded. Every task runs
bench/wfctask.py, a program of a few lines that checks its inputs are what their producers wrote,
sleeps its drawn runtime and writes its outputs with the instance's sizes. Runtimes are scaled so
that the total work fills the two slots for about ``--target-s`` seconds, file sizes so that a
workflow writes at most ``--megabytes`` (never scaled up).

Argo: a real coordinator and two real sites on this machine as ``argo demo`` builds them (each its
own PostgreSQL and agent, launchers from the elastic queue, one task at a time per site: two slots);
Argo places every task; files between sites move through the local transfer backend (hard links on
this one filesystem). Parsl, in the same run, back to back: the same task program, the same
argument vectors, the same two slots, ``bash_app`` on the HighThroughputExecutor by default (its
executor of separate worker processes, as a launcher's tasks are; ``--parsl threads`` runs the
ThreadPoolExecutor, its lightest path), in one shared folder (Parsl stages nothing).

Both makespans run from the first submit to the moment the workflow is seen finished, and both
start warm: Parsl's side runs one task before its clock starts (its workers up), Argo's a task of no
work at each site (each site's launcher started by its elastic queue, which lingers after it); the
warm-up's time is printed apart. Each task's program logs when it ran, on one clock, so the same
figures are read for both: slot utilisation,
the longest time with nothing running, and the time from a task's last parent's end to its start.
Every task must have run exactly once, every output must be intact, or the bench fails.

wfcommons and Parsl come from the ``bench`` extra of pyproject.toml, installed by this script into a
scratch virtual environment (``BALSAM_BENCH_VENV``, default ~/.cache/balsam-bench/wfcommons). The
``--smoke`` size needs no network: a small built-in shape, Argo only, and Parsl beside it only if that
environment is already there.

Target (issue 20): Argo at most 1.1x Parsl's makespan on each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TASK_PROGRAM = BENCH / "wfctask.py"
SIDE = BENCH / "wfcommons_side.py"
VENV = Path(os.environ.get("BALSAM_BENCH_VENV", Path.home() / ".cache" / "balsam-bench" / "wfcommons"))
SHAPES = (("Montage", 196), ("Epigenomics", 145), ("Blast", 98))
SLOTS = 2  # one task at a time on each of two sites; Parsl gets as many workers
SEED = 20

sys.path.insert(0, str(BENCH))
from wfctask import content  # noqa: E402  (beside this script)
from sigterm import stop_on_sigterm  # noqa: E402


# ---------------------------------------------------------------------------------------------
# The scratch environment (wfcommons, Parsl)


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """The scratch environment's python, made with the bench extra of pyproject.toml the first time."""
    python = venv_python()
    if python.exists():
        return python
    with open(BENCH.parent / "pyproject.toml", "rb") as f:
        wanted = tomllib.load(f)["project"]["optional-dependencies"]["bench"]
    print(f"making the scratch environment {VENV} with {', '.join(wanted)} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    return python


def side(python: Path, *args: str) -> dict:
    # Parsl starts its interchange and workers by their script names: the environment's bin/ first on PATH.
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([str(python), str(SIDE), *args], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"{SIDE.name} {args[0]} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Workflows: an instance, scaled, as tasks with argument vectors


@dataclass
class Task:
    name: str
    seconds: float
    parents: list[str]
    inputs: list[tuple[str, int, str | None]]  # file, size, the task that writes it (None: the workflow's input)
    outputs: list[tuple[str, int]]


@dataclass
class Workflow:
    name: str
    tasks: list[Task]  # parents first
    external: dict[str, int] = field(default_factory=dict)  # the workflow's input files

    def argv(self, task: Task, log: Path, folder: Path, external_dir: Path | None) -> list[str]:
        """The task program's arguments; inputs named in ``folder`` or, for the workflow's own, in ``external_dir``."""
        ins = [f"{external_dir / f if producer is None and external_dir else f}:{size}" for f, size, producer in task.inputs]
        return [sys.executable, "-S", str(TASK_PROGRAM), str(log), task.name, f"{task.seconds:.6f}", str(folder),
                "--in", *ins, "--out", *(f"{f}:{size}" for f, size in task.outputs)]  # fmt: skip


def from_instance(recipe: str, instance: dict, target_s: float, megabytes: float) -> Workflow:
    """The instance's tasks, runtimes scaled to fill SLOTS for ``target_s``, sizes to ``megabytes`` at most."""
    raw = instance["tasks"]
    names = {t["id"]: re.sub(r"[^A-Za-z0-9_.-]", "_", t["id"])[:200] for t in raw}
    producer = {}
    for t in raw:
        for file, _size in t["outputs"]:
            if file in producer:
                raise SystemExit(f"{recipe}: file {file} is written by two tasks ({producer[file]}, {t['id']})")
            producer[file] = t["id"]
    time_scale = target_s * SLOTS / sum(t["runtime"] for t in raw)
    written = sum(size for t in raw for _f, size in t["outputs"]) + sum(size for t in raw for f, size in t["inputs"] if f not in producer)
    byte_scale = min(1.0, megabytes * 1e6 / max(1, written))
    by_id = {t["id"]: t for t in raw}
    ordered, seen = [], set()

    def visit(task_id: str) -> None:  # parents first, whatever order the generator gave
        if task_id in seen:
            return
        seen.add(task_id)
        t = by_id[task_id]
        parents = set(t["parents"]) | {producer[f] for f, _ in t["inputs"] if f in producer}
        for parent in sorted(parents):
            visit(parent)
        ordered.append((t, sorted(parents)))

    for t in raw:
        visit(t["id"])
    workflow = Workflow(recipe.lower(), [])
    for t, parents in ordered:
        inputs = [(f, int(size * byte_scale), names[producer[f]] if f in producer else None) for f, size in t["inputs"]]
        workflow.external.update({f: size for f, size, p in inputs if p is None})
        workflow.tasks.append(Task(names[t["id"]], t["runtime"] * time_scale, [names[p] for p in parents], inputs,
                                   [(f, int(size * byte_scale)) for f, size in t["outputs"]]))  # fmt: skip
    return workflow


def built_in(target_s: float) -> Workflow:
    """The smoke's shape, no wfcommons needed: split, 6 parallel tasks, a merge, two of a second level."""
    tasks = [Task("split", 0.1, [], [("data.in", 4096, None)], [(f"part{i}", 2048) for i in range(6)])]
    tasks += [Task(f"work{i}", 0.2, ["split"], [(f"part{i}", 2048, "split")], [(f"out{i}", 1024)]) for i in range(6)]
    tasks.append(Task("merge", 0.1, [f"work{i}" for i in range(6)], [(f"out{i}", 1024, f"work{i}") for i in range(6)], [("merged", 6144)]))
    tasks += [Task(f"final{i}", 0.1, ["merge"], [("merged", 6144, "merge")], [(f"final{i}", 100)]) for i in range(2)]
    scale = target_s * SLOTS / sum(t.seconds for t in tasks)
    for t in tasks:
        t.seconds *= scale
    return Workflow("builtin", tasks, {"data.in": 4096})


def write_external(workflow: Workflow, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file, size in workflow.external.items():
        (folder / file).write_bytes(content(file, size))


# ---------------------------------------------------------------------------------------------
# What the task programs logged: runs, utilisation, gaps, hops


@dataclass
class Figures:
    makespan: float
    busy: float  # utilisation of SLOTS over the makespan
    idle_max: float  # the longest time with nothing running, within the makespan
    idle_total: float
    hops: list[float]  # last parent's end -> the task's start


def figures(workflow: Workflow, log: Path, t0: float, t1: float) -> Figures:
    runs: dict[str, list[tuple[float, float]]] = {}
    for line in log.read_text().splitlines():
        name, start, end = line.split()
        runs.setdefault(name, []).append((float(start), float(end)))
    names = {t.name for t in workflow.tasks}
    missing = sorted(names - set(runs))
    twice = sorted(n for n, r in runs.items() if len(r) > 1)
    if missing or twice or set(runs) - names:
        raise SystemExit(f"{workflow.name}: tasks not run: {missing[:10]}; run more than once: {twice[:10]}; unknown: {sorted(set(runs) - names)[:10]}")
    spans = sorted(r[0] for r in runs.values())
    idle, idle_max, reach = 0.0, 0.0, t0
    for start, end in spans:
        if start > reach:
            idle += start - reach
            idle_max = max(idle_max, start - reach)
        reach = max(reach, end)
    idle += max(0.0, t1 - reach)
    idle_max = max(idle_max, t1 - reach)
    busy = sum(end - start for start, end in spans) / (SLOTS * (t1 - t0))
    hops = [runs[t.name][0][0] - max(runs[p][0][1] for p in t.parents) for t in workflow.tasks if t.parents]
    return Figures(t1 - t0, busy, idle_max, idle, hops)


def check_outputs(workflow: Workflow, folder_of: dict[str, Path]) -> None:
    """Every output of every task, in the folder it was written to, as the program wrote it."""
    bad = []
    for task in workflow.tasks:
        for file, size in task.outputs:
            path = folder_of[task.name] / file
            if not path.exists() or path.read_bytes() != content(file, size):
                bad.append(str(path))
    if bad:
        raise SystemExit(f"{workflow.name}: {len(bad)} output(s) missing or not intact, e.g. {bad[:3]}")


# ---------------------------------------------------------------------------------------------
# Argo: a coordinator and two sites


class Federation:
    def __init__(self, root: Path) -> None:
        from balsam.argo.config import ServerSettings
        from balsam.postgres import free_port

        self.root = root
        self.address = f"127.0.0.1:{free_port()}"
        self.server = ServerSettings(data=root / "argo", address=self.address)
        self.server.coordinator.site_timeout_s = 30
        self.sites = []
        self.client = None
        self.started = False

    def start(self) -> None:
        """The coordinator, then the sites; what was started is stopped by ``close`` whatever failed."""
        from balsam.argo.client import ArgoClient
        from balsam.argo.demo import make_site
        from balsam.argo.server import start_server

        self.started = True
        start_server(self.server)
        self.owner = (self.server.data / "owner-token").read_text().strip()
        app = f"{sys.executable} -S {TASK_PROGRAM} {{*args}}"
        for name in ("alpha", "beta"):
            with ArgoClient(self.address, token=self.owner) as admin:
                token = admin.enrol_site(name)["token"]
            self.sites.append(make_site(self.root, name, self.address, token, apps={"wftask": app}))
        self.client = ArgoClient(self.address, token=self.owner)
        deadline = time.monotonic() + 60
        while {s["name"] for s in self.client.sites() if s["status"] == "up"} != {"alpha", "beta"}:
            if time.monotonic() > deadline:
                raise SystemExit("the sites did not come up within 60 s")
            time.sleep(0.2)

    def warm(self, label: str, log: Path) -> float:
        """A task of no work at each site, run to the end: each site's launcher started, as Parsl's
        workers are before its clock starts (its side runs one task first). Seconds it took."""
        import shlex

        tasks = [{"name": f"warm-{site}", "app": "wftask", "site": site, "params": {"args": shlex.join([str(log), f"warm-{site}", "0", ".", "--in", "--out"])}}
                 for site in ("alpha", "beta")]  # fmt: skip
        started = time.time()
        workflow_id = self.client.submit({"name": f"{label}-warm", "tasks": tasks})
        status = self.client.wait(workflow_id, timeout_s=120)
        if status != "finished":
            raise SystemExit(f"the warm-up tasks before {label} ended {status}")
        return time.time() - started

    def run(self, workflow: Workflow, label: str, external_dir: Path, log: Path, estimates: bool = False) -> Figures:
        import shlex

        # Launchers linger a while after their last task; a run after Parsl's would find none and pay
        # their start in its makespan, which Parsl's excludes: both start warm, the warm-up is shown.
        warm_s = self.warm(label, log.with_suffix(".warm.log"))
        print(f"           warm-up: a task of no work at each site, {warm_s:.2f} s (launchers started; not in the makespan)", flush=True)
        spec = {"name": label, "tasks": []}
        for task in workflow.tasks:
            inputs = {f: (f"{producer}/{f}" if producer else f"file://{external_dir / f}") for f, _size, producer in task.inputs}
            args = workflow.argv(task, log, Path("."), None)[3:]  # inputs staged into the work folder, read there
            spec["tasks"].append({"name": task.name, "app": "wftask", "params": {"args": shlex.join(args)}, "parents": task.parents,
                                  "inputs": inputs, "outputs": [f for f, _ in task.outputs]})  # fmt: skip
            if estimates:  # the instance's runtime as the user's estimate: placement weighs tasks by it
                spec["tasks"][-1]["resources"] = {"wall_time_min": max(task.seconds, 0.001) / 60}
        t0 = time.time()
        workflow_id = self.client.submit(spec)
        status = self.client.wait(workflow_id, timeout_s=600)
        t1 = time.time()
        tasks = self.client.tasks(workflow_id)
        if status != "finished":
            failed = [f"{t['name']} {t['state']} {t['message']}" for t in tasks if t["state"] != "JOB_FINISHED"]
            raise SystemExit(f"{label} through Argo ended {status}: {failed[:5]}")
        retried = [t["name"] for t in tasks if len(t["attempts"]) != 1]
        if retried:
            raise SystemExit(f"{label} through Argo: tasks with more than one attempt: {retried[:10]}")
        self.check(workflow, label, tasks)
        print(breakdown(tasks, log), flush=True)
        return figures(workflow, log, t0, t1)

    def check(self, workflow: Workflow, label: str, tasks: list[dict]) -> None:
        from balsam.site.workdir import workdir

        name_of = {t["id"]: t["name"] for t in tasks}
        folder_of = {}
        for site in self.sites:
            for job in site.jobs(workflow=label):
                task = name_of.get(job.tags.get("argo_task"))
                if task:
                    folder_of[task] = workdir(site.settings.data_dir, label, job.id)
        check_outputs(workflow, folder_of)
        print(self.site_steps(label), flush=True)

    def site_steps(self, label: str) -> str:
        """Each site's own steps, from its job events: created -> staged in (the transfer service),
        staged in -> RUNNING (a launcher taking it: waiting for the slot, or for a launcher to start)."""
        from sqlalchemy import text

        shown = []
        for site in self.sites:
            with site.session() as session:
                rows = session.execute(text(
                    "SELECT e.job_id, e.to_state, min(e.timestamp) FROM job_events e JOIN jobs j ON j.id = e.job_id"
                    " WHERE j.workflow = :w GROUP BY e.job_id, e.to_state"), {"w": label}).all()  # fmt: skip
            at: dict[int, dict[str, float]] = {}
            for job_id, state, when in rows:
                at.setdefault(job_id, {})[state] = when.timestamp()
            staging = [a["STAGED_IN"] - min(a.get("READY", a["STAGED_IN"]), a.get("CREATED", a["STAGED_IN"])) for a in at.values() if "STAGED_IN" in a]
            taking = [a["RUNNING"] - a.get("STAGED_IN", a.get("READY", a["RUNNING"])) for a in at.values() if "RUNNING" in a]
            part = f"{site.settings.name}:"
            for name, values in (("created->staged in", staging), ("staged in->RUNNING", taking)):
                if values:
                    part += f" {name} median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms, sum {sum(values):.1f} s;"
            shown.append(part)
        return "           site steps: " + "  ".join(shown)

    def close(self) -> None:
        from balsam.argo.demo import stop_site
        from balsam.argo.server import stop_server

        if self.client is not None:
            self.client.close()
        for site in self.sites:
            stop_site(site)
        if self.started:
            stop_server(self.server.data)


def breakdown(tasks: list[dict], log: Path) -> str:
    """Where Argo's hops go, from the attempts' times: last parent's end -> ready (released by the
    coordinator), ready -> placed, placed -> started (assignment, job, stage-in, a launcher taking
    it); how long the launcher counted a task RUNNING before and after the program's own run (as
    the program logged it); and what each site did."""
    from datetime import datetime

    def at(value: str) -> float:
        return datetime.fromisoformat(value.removesuffix("Z") + "+00:00").timestamp()

    by_id = {t["id"]: t["attempts"][-1] for t in tasks}
    steps: dict[str, list[float]] = {"end->ready": [], "ready->placed": [], "placed->started": []}
    for t in tasks:
        a = by_id[t["id"]]
        if t["parents"]:
            steps["end->ready"].append(at(a["ready_at"]) - max(at(by_id[p]["ended_at"]) for p in t["parents"]))
        steps["ready->placed"].append(at(a["placed_at"]) - at(a["ready_at"]))
        steps["placed->started"].append(at(a["started_at"]) - at(a["placed_at"]))
    ran = {line.split()[0]: (float(line.split()[1]), float(line.split()[2])) for line in log.read_text().splitlines()}
    for t in tasks:
        a, (start, end) = by_id[t["id"]], ran[t["name"]]
        steps.setdefault("RUNNING->program start", []).append(start - at(a["started_at"]))
        steps.setdefault("program end->ended", []).append(at(a["ended_at"]) - end)
    first = min(at(a["started_at"]) for a in by_id.values())
    per_site = {}
    for site in sorted({t["site"] for t in tasks}):
        mine = [by_id[t["id"]] for t in tasks if t["site"] == site]
        busy = sum(at(a["ended_at"]) - at(a["started_at"]) for a in mine)
        per_site[site] = f"{len(mine)} tasks, {busy:.1f} s busy, last end +{max(at(a['ended_at']) for a in mine) - first:.1f} s"
    # Each site's lost time on a 10 ms grid: its slot empty while a task placed there waits (assignment,
    # stage-in, a launcher), or empty with nothing placed there while the other site has tasks waiting.
    span = {site: [(at(by_id[t["id"]]["placed_at"]), at(by_id[t["id"]]["started_at"]), at(by_id[t["id"]]["ended_at"]))
                   for t in tasks if t["site"] == site] for site in per_site}  # fmt: skip
    last = max(e for v in span.values() for _p, _s, e in v)
    step, now = 0.01, first
    lost = {site: [0.0, 0.0] for site in span}
    while now < last:
        waiting = {site: any(p <= now < s_ for p, s_, _e in v) for site, v in span.items()}
        for site, v in span.items():
            if not any(s_ <= now < e for _p, s_, e in v):
                if waiting[site]:
                    lost[site][0] += step
                elif any(w for other, w in waiting.items() if other != site):
                    lost[site][1] += step
        now += step
    for site, (own, other) in lost.items():
        per_site[site] += f", empty {own:.1f} s with a task of its own waiting, {other:.1f} s while only the other's waited"
    shown = "   ".join(f"{k} median {statistics.median(v) * 1000:.0f} ms, max {max(v) * 1000:.0f} ms" for k, v in steps.items() if v)
    return f"           argo steps: {shown}\n           per site: " + "; ".join(f"{k} {v}" for k, v in per_site.items())


# ---------------------------------------------------------------------------------------------
# Parsl, in the scratch environment


def run_parsl(python: Path, workflow: Workflow, executor: str, folder: Path, external_dir: Path, log: Path) -> Figures:
    shared = folder / "files"
    shared.mkdir(parents=True)
    plan = {"run_dir": str(folder / "runinfo"),
            "tasks": [{"name": t.name, "parents": t.parents, "argv": workflow.argv(t, log, shared, external_dir)} for t in workflow.tasks]}
    (folder / "plan.json").write_text(json.dumps(plan))
    result = side(python, "parsl", str(folder / "plan.json"), executor, str(SLOTS))
    if result["failed"]:
        raise SystemExit(f"{workflow.name} through Parsl: {len(result['failed'])} task(s) failed: {result['failed'][:3]}")
    check_outputs(workflow, {t.name: shared for t in workflow.tasks})
    return figures(workflow, log, result["t0"], result["t1"])


# ---------------------------------------------------------------------------------------------


def describe(label: str, f: Figures) -> str:
    hops = sorted(f.hops)
    p95 = hops[min(len(hops) - 1, int(round(0.95 * (len(hops) - 1))))] if hops else float("nan")
    median = statistics.median(hops) if hops else float("nan")
    return (f"    {label:6s} makespan {f.makespan:7.2f} s   slots busy {f.busy * 100:5.1f}%   idle longest {f.idle_max:6.2f} s"
            f" (total {f.idle_total:6.2f} s)   parent end -> child start median {median * 1000:7.1f} ms, p95 {p95 * 1000:7.1f} ms")


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="back-to-back pairs (Argo, then Parsl) per shape; medians are printed")
    parser.add_argument("--target-s", type=float, default=30.0, help="seconds the scaled work fills both slots for")
    parser.add_argument("--megabytes", type=float, default=50.0, help="at most this many MB of files per workflow")
    parser.add_argument("--parsl", choices=("htex", "threads"), default="htex", help="Parsl's executor for bash_app")
    parser.add_argument("--estimates", action="store_true", help="give Argo each task's runtime as its wall_time_min estimate")
    parser.add_argument("--shapes", default=",".join(s for s, _ in SHAPES), help="which WfCommons recipes (comma-separated)")
    parser.add_argument("--smoke", action="store_true", help="a built-in shape of 10 tasks, 2 s of work; Parsl only if its scratch environment exists")
    args = parser.parse_args()

    if args.smoke:
        python = venv_python() if venv_python().exists() else None
        workflows = [built_in(2.0)]
        if python is None:
            print(f"Parsl half skipped: no scratch environment at {VENV} (the full run makes it; the smoke uses no network)")
    else:
        python = ensure_venv()
        wanted = {s.strip().lower() for s in args.shapes.split(",")}
        workflows = []
        for recipe, count in SHAPES:
            if recipe.lower() in wanted:
                instance = side(python, "generate", recipe, str(count), str(SEED))
                workflows.append(from_instance(recipe, instance, args.target_s, args.megabytes))
    root = Path(tempfile.mkdtemp(prefix="balsam-wfc-"))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {SLOTS} slots each; Parsl: {args.parsl}", flush=True)
    federation = Federation(root)
    ratios = {}
    try:
        federation.start()
        for workflow in workflows:
            external = root / "inputs" / workflow.name
            write_external(workflow, external)
            work = sum(t.seconds for t in workflow.tasks)
            print(f"{workflow.name}: {len(workflow.tasks)} tasks, {sum(len(t.parents) for t in workflow.tasks)} edges,"
                  f" {work:.1f} s of work, {len(workflow.external)} input files", flush=True)  # fmt: skip
            found: dict[str, list[Figures]] = {"argo": [], "parsl": []}
            for repeat in range(args.repeats):
                label = f"{workflow.name}-{repeat}"
                found["argo"].append(federation.run(workflow, label, external, root / f"{label}.argo.log", args.estimates))
                print(describe("argo", found["argo"][-1]), flush=True)
                if python is not None:
                    found["parsl"].append(run_parsl(python, workflow, args.parsl, root / f"{label}.parsl", external, root / f"{label}.parsl.log"))
                    print(describe("parsl", found["parsl"][-1]), flush=True)
            argo = statistics.median(f.makespan for f in found["argo"])
            if found["parsl"]:
                parsl = statistics.median(f.makespan for f in found["parsl"])
                ratios[workflow.name] = argo / parsl
                print(f"  {workflow.name}: Argo {argo:.2f} s, Parsl {parsl:.2f} s: Argo/Parsl {argo / parsl:.2f}x (target <= 1.1x)", flush=True)
            else:
                print(f"  {workflow.name}: Argo {argo:.2f} s", flush=True)
        print("every task ran exactly once; every output intact")
    finally:
        federation.close()
        shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()
    print(f"load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
