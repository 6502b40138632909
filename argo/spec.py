"""Argo workflow specs: parsing and validation, with no database, no network, no I/O but reading a file.

A spec is a named list of tasks whose parents form a DAG. ``parse_spec`` checks the shape of each
task (types, names, keys, resources); ``validate`` checks the whole graph against the registered
sites (parents, cycles, apps, pins, input references). Both collect every problem before raising
one ``SpecError``, so a user fixes a file in one pass. The ``argo submit`` CLI runs them before
sending anything; the coordinator runs them again on what it receives.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from balsam.errors import BalsamError
from balsam.inputs import InputError, check_value, has_control, load_json, load_yaml, read_text, yaml_problem
from balsam.transfer.confine import relative_path_problem

# Names end up in ids like "WF/NAME" and in folder names, so no '/' or ':', and not "." or "..".
NAME_PATTERN = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.-]{1,200}")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_TASKS = 1_000_000
MAX_COUNT = 2**31 - 1  # resource counts travel as int32
MAX_SHOWN = 20  # problems listed by str(SpecError)

TOP_KEYS = ("name", "tasks")
TASK_KEYS = ("name", "app", "params", "resources", "parents", "inputs", "outputs", "site", "tags")
TASK_KEY_SET = frozenset(TASK_KEYS)
RESOURCE_ALIASES = {"wall_time": "wall_time_min", "node_packing": "node_packing_count"}
COUNT_MINIMUMS = {"nodes": 1, "ranks_per_node": 1, "threads_per_rank": 1, "gpus_per_rank": 0, "node_packing_count": 1}
URI_PREFIXES = ("file:///", "globus://")


class SpecError(BalsamError):
    """Every problem found, each naming the task it is about."""

    def __init__(self, problems: Sequence[str] | str, source: str | None = None) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        self.source = source  # the file (or "spec") the problems were found in, if any
        super().__init__(self.problems, source)

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return prefix + self.problems[0]
        lines = [f"{prefix}{len(self.problems)} problems:"]
        lines += [f"  {problem}" for problem in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            lines.append(f"  ... and {len(self.problems) - MAX_SHOWN} more")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Resources:
    nodes: int = 1
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    gpus_per_rank: int = 0
    node_packing_count: int = 1
    wall_time_min: float | None = None


RESOURCE_FIELDS = tuple(f.name for f in fields(Resources))
DEFAULT_RESOURCES = Resources()  # shared: most tasks of a big campaign ask for nothing special


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    app: str
    params: dict[str, Any] = field(default_factory=dict)
    resources: Resources = DEFAULT_RESOURCES
    parents: tuple[str, ...] = ()  # names of tasks of the same workflow
    inputs: dict[str, str] = field(default_factory=dict)  # local file -> "TASK/OUTPUT" or a URI
    outputs: tuple[str, ...] = ()  # relative to the task's work folder
    site: str | None = None  # a pin: run only there
    tags: dict[str, str] = field(default_factory=dict)


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
        raise SpecError(f"a workflow spec must be a mapping with `name` and `tasks`, not {_show(doc)}", source)
    problems = [f"unknown top-level key {_show(key)}{_suggest(key, TOP_KEYS)}" for key in doc if key not in TOP_KEYS]
    name = doc.get("name")
    name_problem = _name_problem(name)
    if name_problem:
        problems.append(f"workflow {name_problem}")
    before = len(problems)
    raw_tasks = _sequence(doc.get("tasks"), "tasks", problems)
    tasks: list[TaskSpec] = []
    if not raw_tasks and len(problems) == before:
        problems.append("tasks is required: a non-empty list of tasks")
    elif len(raw_tasks) > MAX_TASKS:
        problems.append(f"tasks has {len(raw_tasks)} entries; at most {MAX_TASKS}")
    else:
        for i, raw in enumerate(raw_tasks):
            task, found = _task_or_problems(raw, f"tasks[{i}]")
            problems += found
            tasks.append(task)
        problems += _same_names(raw.get("name") if isinstance(raw, Mapping) else None for raw in raw_tasks)
    if problems:
        raise SpecError(problems, source)
    return WorkflowSpec(name=name, tasks=tasks)


def task_from_dict(doc: Any, where: str) -> TaskSpec:
    """One task from a mapping; `where` names it in errors while its name is unknown ("tasks[3]")."""
    task, problems = _task_or_problems(doc, where)
    if problems:
        raise SpecError(problems)
    return task


def _task_or_problems(doc: Any, where: str) -> tuple[TaskSpec | None, list[str]]:
    if not isinstance(doc, Mapping):
        return None, [f"{where}: a task must be a mapping of keys, not {_show(doc)}"]
    found: list[str] = []
    name = doc.get("name")
    name_problem = _name_problem(name)
    if name_problem:
        found.append(f"task {name_problem}")
    if not doc.keys() <= TASK_KEY_SET:
        found += [_unknown_task_key(key) for key in doc if key not in TASK_KEY_SET]
    app = doc.get("app")
    if not isinstance(app, str) or not app:
        found.append(f"app is required: the name of an app, got {_show(app)}")
    elif len(app) > 200:
        found.append(f"app name is {len(app)} characters long; at most 200")
    elif has_control(app):
        found.append(f"app name must not hold control characters ({_show(app)})")
    params = _params(doc.get("params"), found)
    resources = _resources(doc.get("resources"), found)
    parents = _parents(doc.get("parents"), name, found)
    inputs = _inputs(doc.get("inputs"), found)
    outputs = _outputs(doc.get("outputs"), found)
    site = doc.get("site")
    if site is not None and (not isinstance(site, str) or not site or has_control(site)):
        found.append(f"site must be the name of a site, got {_show(site)}")
    tags = _tags(doc.get("tags"), found)
    if found:
        label = f"task {name!r}" if not name_problem else where
        return None, [f"{label}: {problem}" for problem in found]
    task = TaskSpec(name, app, params, resources, parents, inputs, outputs, site, tags)
    return task, []


def _unknown_task_key(key: Any) -> str:
    if key in RESOURCE_FIELDS or key in RESOURCE_ALIASES:  # the usual slip: `nodes: 2` beside `app:`
        return f"unknown key {key!r} (a resource: put it under `resources:`)"
    return f"unknown key {_show(key)}{_suggest(key, TASK_KEYS)}"


def _name_problem(name: Any) -> str | None:
    if name is None or name == "":
        return "name is required"
    if not isinstance(name, str):
        return f"name must be a string, got {_show(name)}"
    if len(name) > 200:
        return f"name is {len(name)} characters long; at most 200"
    if not NAME_PATTERN.fullmatch(name):
        return f"name {name!r} may hold only letters, digits, '_', '.' and '-' (and is not '.' or '..')"
    return None


def _params(value: Any, found: list[str]) -> dict[str, Any]:
    params = _mapping(value, "params", found)
    for key, item in params.items():
        if not isinstance(key, str) or not PARAM_NAME.fullmatch(key):
            found.append(f"parameter name {_show(key)} must be letters, digits and '_', not starting with a digit")
        elif isinstance(item, str):
            # Values become program arguments (no shell, so any text is safe), and NUL cannot be in one.
            if "\0" in item:
                found.append(f"parameter {key!r} contains a NUL character (\\0)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                found.append(f"parameter {key!r} must be a finite number, got {item!r}")
        elif not isinstance(item, int):
            found.append(f"parameter {key!r} must be a string, number or boolean, not {_show(item)}")
    return dict(params)


def _resources(value: Any, found: list[str]) -> Resources:
    before = len(found)
    given: dict[str, tuple[Any, Any]] = {}  # field -> (key as written, value)
    for key, item in _mapping(value, "resources", found).items():
        name = RESOURCE_ALIASES.get(key, key) if isinstance(key, str) else key
        if name not in RESOURCE_FIELDS:
            found.append(f"unknown resource {_show(key)}{_suggest(key, RESOURCE_FIELDS + tuple(RESOURCE_ALIASES))}")
        elif name in given:
            found.append(f"resources: {given[name][0]!r} and {key!r} are the same setting; give one")
        elif item is not None:
            given[name] = (key, item)
    for name, (key, item) in given.items():
        low = COUNT_MINIMUMS.get(name)
        if low is not None:
            if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= MAX_COUNT:
                found.append(f"resources.{key} must be a whole number from {low} to {MAX_COUNT}, got {_show(item)}")
        elif isinstance(item, bool) or not isinstance(item, (int, float)) or not 0 < item < math.inf:
            found.append(f"resources.{key} must be a positive number of minutes, got {_show(item)}")
    if len(found) > before or not given:
        return DEFAULT_RESOURCES
    values = {name: item for name, (_key, item) in given.items()}
    if "wall_time_min" in values:
        values["wall_time_min"] = float(values["wall_time_min"])
    return Resources(**values)


def _parents(value: Any, own_name: Any, found: list[str]) -> tuple[str, ...]:
    parents = _sequence(value, "parents", found)
    bad = [parent for parent in parents if not isinstance(parent, str) or not parent]
    if bad:
        found.append(f"parents must be task names, got {_show(bad[0])}")
        return ()
    found += [f"parent {parent!r} is listed more than once" for parent in _repeated(parents)]
    if own_name in parents:
        found.append("a task cannot be its own parent")
    return parents


def _inputs(value: Any, found: list[str]) -> dict[str, str]:
    inputs = _mapping(value, "inputs", found)
    for local, source in inputs.items():
        problem = _relative_path_problem(local)
        if problem:
            found.append(f"input {_show(local)} {problem}")
        problem = _source_problem(source)
        if problem:
            found.append(f"input {_show(local)}: source {_show(source)} {problem}")
    return dict(inputs)


def _outputs(value: Any, found: list[str]) -> tuple[str, ...]:
    outputs = _sequence(value, "outputs", found)
    before = len(found)
    for output in outputs:
        problem = _relative_path_problem(output)
        if problem:
            found.append(f"output {_show(output)} {problem}")
    if len(found) == before:  # only strings can be counted (a stray mapping is unhashable)
        found += [f"output {output!r} is listed more than once" for output in _repeated(outputs)]
    return outputs


def _tags(value: Any, found: list[str]) -> dict[str, str]:
    tags = _mapping(value, "tags", found)
    for key, item in tags.items():
        if not isinstance(key, str) or not key or not isinstance(item, str):
            found.append(f"tag {_show(key)}: {_show(item)} must be a non-empty string key and a string value")
        elif "\0" in key or "\0" in item:
            found.append(f"tag {key!r} contains a NUL character (\\0)")
    return dict(tags)


def _mapping(value: Any, what: str, found: list[str]) -> Mapping[Any, Any]:
    """`value` if a mapping; {} if absent (YAML's empty `params:` is None too) or, with a problem, not one."""
    if value is None or isinstance(value, Mapping):
        return value or {}
    found.append(f"{what} must be a mapping, not {_show(value)}")
    return {}


def _sequence(value: Any, what: str, found: list[str]) -> tuple[Any, ...]:
    """`value` as a tuple if a list; () if absent or, with a problem, not a list (a lone string is not)."""
    if value is None:
        return ()
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return tuple(value)
    found.append(f"{what} must be a list, not {_show(value)}")
    return ()


def _relative_path_problem(path: Any) -> str | None:
    """Why `path` cannot name a file inside a task's work folder, or None if it can."""
    return relative_path_problem(path, "the task's work folder")


def _source_problem(source: Any) -> str | None:
    """Why `source` is neither a file:/// or globus:// URI nor "TASK/OUTPUT", or None."""
    if not isinstance(source, str) or not source:
        return "must be 'TASK/OUTPUT' or a file:/// or globus:// URI"
    if "\0" in source:
        return "contains a NUL character (\\0)"
    if source.startswith("file:///"):
        return None if len(source) > len("file:///") else "names no file"
    if source.startswith("file://"):
        return "must be file:///ABSOLUTE/PATH (no host)"
    if source.startswith("globus://"):
        endpoint, _, path = source[len("globus://") :].partition("/")
        return None if endpoint and path else "must be globus://ENDPOINT/PATH"
    if "://" in source:
        return "uses an unsupported scheme (only file:/// and globus:// URIs can be fetched)"
    reference = split_reference(source)
    if reference is None:
        return "is neither 'TASK/OUTPUT' nor a file:/// or globus:// URI"
    problem = _relative_path_problem(reference[1])
    return f"names an output that {problem}" if problem else None


def split_reference(source: str) -> tuple[str, str] | None:
    """("TASK", "OUTPUT") for an input source of that form; None for a URI or anything else."""
    if source.startswith(URI_PREFIXES):
        return None
    # Task names hold no '/', so the first one ends the task; the output may have folders.
    task, slash, output = source.partition("/")
    if not slash or not output or not NAME_PATTERN.fullmatch(task):
        return None
    return task, output


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
        if len(loop) > MAX_SHOWN:  # a message must stay readable (and fit in a gRPC reply)
            names = [*names[:10], f"... ({len(loop) - 15} more)", *names[-6:]]
        problems.append(f"cycle: {' -> '.join(names)}")
    return problems


# ---------------------------------------------------------------------------------------------
# Small helpers


def _repeated(items: Sequence[Any]) -> list[Any]:
    if len(items) < 2 or len(set(items)) == len(items):  # the common cases, without counting
        return []
    return [item for item, count in Counter(items).items() if count > 1]


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


def _suggest(key: Any, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1) if isinstance(key, str) else []
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


def _listing(names: Collection[str], limit: int = 10) -> str:
    """Sorted names, cut short when there are many: a message stays one readable line."""
    ordered = sorted(names)
    if len(ordered) <= limit:
        return ", ".join(ordered)
    return f"{', '.join(ordered[:limit])}, ... ({len(ordered)} in all)"


def _show(value: Any) -> str:
    """A value's type and a short repr, for "got ..." in messages (a value may be huge)."""
    if value is None:
        return "nothing (null)"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if isinstance(value, str) else f"{type(value).__name__} {text}"
