"""Argo workflow specs: parsing and validation, with no database, no network, no I/O but reading a file.

A spec is a named list of tasks whose parents form a DAG. ``parse_spec`` checks the shape of each
task (types, names, keys, resources: ``balsam.taskspec``); ``validate`` checks the whole graph against the registered
sites (parents, cycles, apps, pins, input references). Both collect every problem before raising
one ``SpecError``, so a user fixes a file in one pass. The ``argo submit`` CLI runs them before
sending anything; the coordinator runs them again on what it receives.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from balsam.errors import SpecError, describe
from balsam.inputs import InputError, check_value, load_json, load_yaml, read_text, yaml_problem
from balsam.taskspec import TaskSpec, name_problem, sequence, split_reference, suggest, task_or_problems

MAX_TASKS = 1_000_000
TOP_KEYS = ("name", "tasks")


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    tasks: list[TaskSpec]


# ---------------------------------------------------------------------------------------------
# Reading a file


def load_spec(path: str | Path) -> WorkflowSpec:
    """The workflow in a YAML or JSON file (JSON when it ends in .json); errors name the file.

    Read through ``balsam.inputs``: a regular file within its size, UTF-8, decoded within the limits.
    """
    path = Path(path)
    source = str(path)
    as_json = path.suffix.lower() == ".json"
    try:
        text = read_text(path, yaml_text=not as_json, where="")
    except InputError as exc:
        raise SpecError(exc.reason, source) from None
    return parse_spec(_decode(text, as_json, source), source)


def _decode(text: str, as_json: bool, source: str) -> Any:
    try:
        if as_json:
            return load_json(text, "")
        doc, _node = load_yaml(text, "")
        check_value(doc)
        return doc
    except InputError as exc:
        raise SpecError(str(exc), source) from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}", source) from None
    except yaml.YAMLError as exc:
        line, column, problem = yaml_problem(exc)
        where = f"line {line}, column {column}: " if line else ""
        raise SpecError(f"{where}not valid YAML: {problem}", source) from None


# ---------------------------------------------------------------------------------------------
# Shape: each task on its own


def parse_spec(doc: Any, source: str = "spec") -> WorkflowSpec:
    """A WorkflowSpec from decoded YAML/JSON; checks shapes only (no sites, no graph)."""
    if doc is None:
        raise SpecError("the spec is empty", source)
    if not isinstance(doc, Mapping):
        raise SpecError(f"a workflow spec must be a mapping with `name` and `tasks`, not {describe(doc)}", source)
    problems = [f"unknown top-level key {describe(key)}{suggest(key, TOP_KEYS)}" for key in doc if key not in TOP_KEYS]
    name = doc.get("name")
    problem_of_name = name_problem(name)
    if problem_of_name:
        problems.append(f"workflow {problem_of_name}")
    before = len(problems)
    raw_tasks = sequence(doc.get("tasks"), "tasks", problems)
    tasks: list[TaskSpec] = []
    if not raw_tasks and len(problems) == before:
        problems.append("tasks is required: a non-empty list of tasks")
    elif len(raw_tasks) > MAX_TASKS:
        problems.append(f"tasks has {len(raw_tasks)} entries; at most {MAX_TASKS}")
    else:
        for i, raw in enumerate(raw_tasks):
            task, found = task_or_problems(raw, f"tasks[{i}]")
            problems += found
            tasks.append(task)
        problems += _same_names(raw.get("name") if isinstance(raw, Mapping) else None for raw in raw_tasks)
    if problems:
        raise SpecError(problems, source)
    return WorkflowSpec(name=name, tasks=tasks)


# ---------------------------------------------------------------------------------------------
# The graph and placement: the tasks together, against the registered sites


def validate(
    tasks: Sequence[TaskSpec],
    apps_by_site: Mapping[str, Collection[str]],
    existing: Mapping[str, Collection[str]] | None = None,
) -> list[str]:
    """The task names in a topological order (parents first), or SpecError listing every problem.

    `apps_by_site`: registered site -> the apps it offers. `existing` (AddTasks): the tasks
    already in the workflow -> their declared outputs; new tasks may name them as parents.
    """
    existing = existing or {}
    problems: list[str] = []
    if len(tasks) + len(existing) > MAX_TASKS:
        problems.append(f"the workflow would have {len(tasks) + len(existing)} tasks; at most {MAX_TASKS}")
    index, parents_of = _resolve_parents(tasks, existing, problems)
    problems += _placement_problems(tasks, apps_by_site)
    problems += _input_problems(tasks, index, existing)
    order = _topological_order(tasks, parents_of, problems)
    if problems:
        raise SpecError(problems)
    return [tasks[i].name for i in order]


def _resolve_parents(
    tasks: Sequence[TaskSpec], existing: Mapping[str, Any], problems: list[str]
) -> tuple[dict[str, int], list[list[int]]]:
    """Name -> position, and each task's parents as positions in the batch. Parents among the
    existing tasks need no edge: those cannot depend on new tasks, so no cycle runs through them."""
    problems += _same_names(task.name for task in tasks)
    index: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task.name in existing:
            problems.append(f"task {task.name!r} is already a task of this workflow")
        index.setdefault(task.name, i)
    parents_of: list[list[int]] = []
    for task in tasks:
        positions = []
        for parent in task.parents:
            position = index.get(parent)
            if position is not None:
                positions.append(position)
            elif parent not in existing:
                problems.append(f"task {task.name!r}: parent {parent!r} is not a task of this workflow")
        parents_of.append(positions)
    return index, parents_of


def _placement_problems(tasks: Sequence[TaskSpec], apps_by_site: Mapping[str, Collection[str]]) -> list[str]:
    offered = {site: set(apps) for site, apps in apps_by_site.items()}
    anywhere = set().union(*offered.values())
    sites = f"sites: {_listing(offered)}" if offered else "no site is registered"
    problems = []
    for task in tasks:
        if task.site is None:
            if task.app not in anywhere:
                problems.append(f"task {task.name!r}: app {task.app!r} is offered by no registered site ({sites})")
        elif task.site not in offered:
            problems.append(f"task {task.name!r}: pinned to site {task.site!r}, which is not registered ({sites})")
        elif task.app not in offered[task.site]:
            apps = _listing(offered[task.site]) or "none"
            problems.append(
                f"task {task.name!r}: pinned to site {task.site!r}, which does not offer app {task.app!r} "
                f"(it offers: {apps})"
            )
    return problems


def _input_problems(
    tasks: Sequence[TaskSpec], index: Mapping[str, int], existing: Mapping[str, Collection[str]]
) -> list[str]:
    problems = []
    outputs_of: dict[str, Collection[str]] = {}  # sets, built once per referenced parent
    for task in tasks:
        for local, source in task.inputs.items():
            reference = split_reference(source)
            if reference is None:
                continue
            parent, output = reference
            if parent not in task.parents:
                problems.append(
                    f"task {task.name!r}: input {local!r} comes from {source!r}, "
                    f"but {parent!r} is not a parent of this task"
                )
                continue
            if parent not in outputs_of:
                if parent in index:
                    outputs_of[parent] = set(tasks[index[parent]].outputs)
                elif parent in existing:
                    outputs_of[parent] = set(existing[parent])
                else:
                    continue  # an unknown parent, reported already
            if output not in outputs_of[parent]:
                declared = _listing(outputs_of[parent]) or "none"
                problems.append(
                    f"task {task.name!r}: input {local!r} wants {output!r} from task {parent!r}, "
                    f"which declares no such output (its outputs: {declared})"
                )
    return problems


def _topological_order(tasks: Sequence[TaskSpec], parents_of: list[list[int]], problems: list[str]) -> list[int]:
    """Positions, parents first, by Kahn's algorithm (graphlib is several times slower on 10^5
    tasks); if some tasks cannot be ordered, a problem for each cycle among them."""
    waiting = [len(parents) for parents in parents_of]
    children: list[list[int]] = [[] for _ in parents_of]
    for child, parents in enumerate(parents_of):
        for parent in parents:
            children[parent].append(child)
    order = [i for i, count in enumerate(waiting) if count == 0]
    for i in order:  # the list grows while we walk it: it is its own queue
        for child in children[i]:
            waiting[child] -= 1
            if waiting[child] == 0:
                order.append(child)
    if len(order) < len(tasks):
        problems += _cycles(tasks, parents_of, waiting)
    return order


def _cycles(tasks: Sequence[TaskSpec], parents_of: list[list[int]], waiting: list[int]) -> list[str]:
    """A problem "cycle: a -> b -> a" (each a parent of the next) per cycle among the unordered tasks.

    Each unordered task still waits for an unordered parent, so walking from parent to parent
    among them must come back to a task already on the walk: that loop is a cycle.
    """
    seen = bytearray(len(tasks))
    problems = []
    for start, count in enumerate(waiting):
        if count == 0 or seen[start]:
            continue
        walk: dict[int, int] = {}  # task -> its step on this walk
        node = start
        while not seen[node]:
            seen[node] = 1
            walk[node] = len(walk)
            node = next(parent for parent in parents_of[node] if waiting[parent])
        if node not in walk:
            continue  # joined an earlier walk, whose cycle is reported already
        loop = [n for n, step in walk.items() if step >= walk[node]][::-1]  # parents first
        first = loop.index(min(loop))  # start at the task given first: a stable message
        names = [tasks[n].name for n in loop[first:] + loop[: first + 1]]
        if len(loop) > SpecError.MAX_SHOWN:  # a message must stay readable (and fit in a gRPC reply)
            names = [*names[:10], f"... ({len(loop) - 15} more)", *names[-6:]]
        problems.append(f"cycle: {' -> '.join(names)}")
    return problems


# ---------------------------------------------------------------------------------------------
# Small helpers


def _same_names(names: Iterable[Any]) -> list[str]:
    """A problem for each task named like an earlier one, giving both positions."""
    first_at: dict[str, int] = {}
    problems = []
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            continue  # a missing or wrong name is reported with its task
        if name in first_at:
            problems.append(f"task {name!r} (tasks[{i}]) has the same name as tasks[{first_at[name]}]")
        first_at.setdefault(name, i)
    return problems


def _listing(names: Collection[str], limit: int = 10) -> str:
    """Sorted names, cut short when there are many: a message stays one readable line."""
    ordered = sorted(names)
    if len(ordered) <= limit:
        return ", ".join(ordered)
    return f"{', '.join(ordered[:limit])}, ... ({len(ordered)} in all)"
