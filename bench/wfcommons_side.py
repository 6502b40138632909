"""The half of bench/wfcommons_makespan.py that runs in its scratch virtual environment (wfcommons, Parsl).

    python wfcommons_side.py generate RECIPE TASKS SEED        -> the instance as JSON on stdout
    python wfcommons_side.py parsl PLAN.json EXECUTOR SLOTS     -> {"t0": ..., "t1": ...} on stdout

``generate`` builds the instance in memory with WfCommons' recipe generator (``Instance()`` would
fetch the WfFormat schema from the internet): each task's id, drawn runtime, parents and files with
their sizes. ``parsl`` runs a plan (each task's argument vector and parents) with Parsl's
``bash_app`` on ``SLOTS`` workers and prints when it started submitting and when the last task ended.
"""

import json
import random
import shlex
import sys
import time


def generate(recipe: str, tasks: int, seed: int) -> dict:
    import numpy
    from wfcommons import WorkflowGenerator
    from wfcommons.wfchef import recipes

    random.seed(seed)
    numpy.random.seed(seed)
    workflow = WorkflowGenerator(getattr(recipes, f"{recipe}Recipe").from_num_tasks(tasks)).build_workflow()
    found = []
    for task_id, task in workflow.tasks.items():
        found.append({
            "id": task_id, "runtime": task.runtime, "parents": sorted(workflow.predecessors(task_id)),
            "inputs": [[f.file_id, f.size] for f in task.input_files], "outputs": [[f.file_id, f.size] for f in task.output_files],
        })  # fmt: skip
    return {"recipe": recipe, "tasks": found}


def run_parsl(plan: dict, executor: str, slots: int) -> dict:
    import parsl
    from parsl.app.app import bash_app
    from parsl.config import Config

    if executor == "htex":
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        chosen = HighThroughputExecutor(label="htex", address="127.0.0.1", max_workers_per_node=slots, cores_per_worker=1 / slots,
                                        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))  # fmt: skip
    else:
        from parsl.executors.threads import ThreadPoolExecutor

        chosen = ThreadPoolExecutor(label="threads", max_threads=slots)
    parsl.load(Config(executors=[chosen], run_dir=plan["run_dir"], strategy="none" if executor == "htex" else "simple"))

    @bash_app
    def task(command: str, inputs=()):
        return command

    try:
        if executor == "htex":  # the workers up before the clock starts, as Argo's sites are before its submit
            task(shlex.join(["true"])).result()
        t0 = time.time()
        futures = {}
        for entry in plan["tasks"]:  # parents first
            futures[entry["name"]] = task(shlex.join(entry["argv"]), inputs=[futures[p] for p in entry["parents"]])
        failed = []
        for name, future in futures.items():
            try:
                future.result()
            except Exception as exc:  # a failed task: named in the result, the bench reports it
                failed.append(f"{name}: {exc}")
        t1 = time.time()
    finally:
        parsl.dfk().cleanup()
    return {"t0": t0, "t1": t1, "failed": failed}


def main() -> None:
    verb = sys.argv[1]
    if verb == "generate":
        result = generate(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        with open(sys.argv[2]) as f:
            plan = json.load(f)
        result = run_parsl(plan, sys.argv[3], int(sys.argv[4]))
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
