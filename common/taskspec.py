"""One task of an Argo workflow, and the checks of its shape: shared by every reader of task specs.

A task comes from a spec file (``argo submit``), a Python dict (``ArgoClient.add_tasks``), the wire
(``balsam.wire.convert``, on the coordinator) or a trigger rule; each is checked here, the same way.
The checks collect every problem (``SpecError``), each naming the task, so a user fixes a file in one
pass. What needs the whole workflow (parents, cycles, apps of the sites) is in ``balsam.argo.spec``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from balsam.errors import SpecError, describe
from balsam.inputs import has_control
from balsam.resources import DEFAULT, FIELDS as RESOURCE_FIELDS
from balsam.resources import Resources, resources_from
from balsam.paths import relative_path_problem

# Names end up in ids like "WF/NAME" and in folder names, so no '/' or ':', and not "." or "..".
NAME_PATTERN = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.-]{1,200}")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TASK_KEYS = ("name", "app", "params", "resources", "parents", "inputs", "outputs", "site", "tags")
TASK_KEY_SET = frozenset(TASK_KEYS)
URI_PREFIXES = ("file:///", "globus://", "ssh://")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    app: str
    params: dict[str, Any] = field(default_factory=dict)
    resources: Resources = DEFAULT
    parents: tuple[str, ...] = ()  # names of tasks of the same workflow
    inputs: dict[str, str] = field(default_factory=dict)  # local file -> "TASK/OUTPUT" or a URI
    outputs: tuple[str, ...] = ()  # relative to the task's work folder
    site: str | None = None  # a pin: run only there
    tags: dict[str, str] = field(default_factory=dict)


def task_from_dict(doc: Any, where: str) -> TaskSpec:
    """One task from a mapping; `where` names it in errors while its name is unknown ("tasks[3]")."""
    task, problems = task_or_problems(doc, where)
    if problems:
        raise SpecError(problems)
    return task


def task_or_problems(doc: Any, where: str) -> tuple[TaskSpec | None, list[str]]:
    """The task, or None and every problem found in it."""
    if type(doc) is not dict and not isinstance(doc, Mapping):  # a dict, nearly always: no ABC check
        return None, [f"{where}: a task must be a mapping of keys, not {describe(doc)}"]
    found: list[str] = []
    name = doc.get("name")
    problem_of_name = name_problem(name)
    if problem_of_name:
        found.append(f"task {problem_of_name}")
    if not doc.keys() <= TASK_KEY_SET:
        found += [_unknown_task_key(key) for key in doc if key not in TASK_KEY_SET]
    app = doc.get("app")
    if not isinstance(app, str) or not app:
        found.append(f"app is required: the name of an app, got {describe(app)}")
    elif len(app) > 200:
        found.append(f"app name is {len(app)} characters long; at most 200")
    elif has_control(app):
        found.append(f"app name must not hold control characters ({describe(app)})")
    params = _params(doc.get("params"), found)
    resources = _resources(doc.get("resources"), found)
    parents = _parents(doc.get("parents"), name, found)
    inputs = _inputs(doc.get("inputs"), found)
    outputs = _outputs(doc.get("outputs"), found)
    site = doc.get("site")
    if site is not None and (not isinstance(site, str) or not site or has_control(site)):
        found.append(f"site must be the name of a site, got {describe(site)}")
    tags = _tags(doc.get("tags"), found)
    if found:
        label = f"task {name!r}" if not problem_of_name else where
        return None, [f"{label}: {problem}" for problem in found]
    task = TaskSpec(name, app, params, resources, parents, inputs, outputs, site, tags)
    return task, []


def _unknown_task_key(key: Any) -> str:
    if key in RESOURCE_FIELDS:  # the usual slip: `nodes: 2` beside `app:`
        return f"unknown key {key!r} (a resource: put it under `resources:`)"
    return f"unknown key {describe(key)}{suggest(key, TASK_KEYS)}"


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a task or a workflow, or None."""
    if name is None or name == "":
        return "name is required"
    if not isinstance(name, str):
        return f"name must be a string, got {describe(name)}"
    if len(name) > 200:
        return f"name is {len(name)} characters long; at most 200"
    if not NAME_PATTERN.fullmatch(name):
        return f"name {name!r} may hold only letters, digits, '_', '.' and '-' (and is not '.' or '..')"
    return None


def _params(value: Any, found: list[str]) -> dict[str, Any]:
    params = _mapping(value, "params", found)
    for key, item in params.items():
        if not isinstance(key, str) or not PARAM_NAME.fullmatch(key):
            found.append(f"parameter name {describe(key)} must be letters, digits and '_', not starting with a digit")
        elif isinstance(item, str):
            # Values become program arguments (no shell, so any text is safe), and NUL cannot be in one.
            if "\0" in item:
                found.append(f"parameter {key!r} contains a NUL character (\\0)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                found.append(f"parameter {key!r} must be a finite number, got {item!r}")
        elif not isinstance(item, int):
            found.append(f"parameter {key!r} must be a string, number or boolean, not {describe(item)}")
    return dict(params)


def _resources(value: Any, found: list[str]) -> Resources:
    resources, problems = resources_from(_mapping(value, "resources", found), "resources.")
    found += problems
    return resources


def _parents(value: Any, own_name: Any, found: list[str]) -> tuple[str, ...]:
    parents = sequence(value, "parents", found)
    bad = [parent for parent in parents if not isinstance(parent, str) or not parent]
    if bad:
        found.append(f"parents must be task names, got {describe(bad[0])}")
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
            found.append(f"input {describe(local)} {problem}")
        problem = _source_problem(source)
        if problem:
            found.append(f"input {describe(local)}: source {describe(source)} {problem}")
    return dict(inputs)


def _outputs(value: Any, found: list[str]) -> tuple[str, ...]:
    outputs = sequence(value, "outputs", found)
    before = len(found)
    for output in outputs:
        problem = _relative_path_problem(output)
        if problem:
            found.append(f"output {describe(output)} {problem}")
    if len(found) == before:  # only strings can be counted (a stray mapping is unhashable)
        found += [f"output {output!r} is listed more than once" for output in _repeated(outputs)]
    return outputs


def _tags(value: Any, found: list[str]) -> dict[str, str]:
    tags = _mapping(value, "tags", found)
    for key, item in tags.items():
        if not isinstance(key, str) or not key or not isinstance(item, str):
            found.append(f"tag {describe(key)}: {describe(item)} must be a non-empty string key and a string value")
        elif "\0" in key or "\0" in item:
            found.append(f"tag {key!r} contains a NUL character (\\0)")
    return dict(tags)


def _mapping(value: Any, what: str, found: list[str]) -> Mapping[Any, Any]:
    """`value` if a mapping; {} if absent (YAML's empty `params:` is None too) or, with a problem, not one."""
    if value is None or isinstance(value, Mapping):
        return value or {}
    found.append(f"{what} must be a mapping, not {describe(value)}")
    return {}


def sequence(value: Any, what: str, found: list[str]) -> tuple[Any, ...]:
    """`value` as a tuple if a list; () if absent or, with a problem, not a list (a lone string is not)."""
    if value is None:
        return ()
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return tuple(value)
    found.append(f"{what} must be a list, not {describe(value)}")
    return ()


def _relative_path_problem(path: Any) -> str | None:
    """Why `path` cannot name a file inside a task's work folder, or None if it can."""
    return relative_path_problem(path, "the task's work folder")


def _source_problem(source: Any) -> str | None:
    """Why `source` is neither a file:///, globus:// or ssh:// URI nor "TASK/OUTPUT", or None."""
    if not isinstance(source, str) or not source:
        return "must be 'TASK/OUTPUT' or a file:///, globus:// or ssh:// URI"
    if "\0" in source:
        return "contains a NUL character (\\0)"
    if source.startswith("file:///"):
        return None if len(source) > len("file:///") else "names no file"
    if source.startswith("file://"):
        return "must be file:///ABSOLUTE/PATH (no host)"
    if source.startswith("globus://"):
        endpoint, _, path = source[len("globus://") :].partition("/")
        return None if endpoint and path else "must be globus://ENDPOINT/PATH"
    if source.startswith("ssh://"):
        host, _, path = source[len("ssh://") :].partition("/")
        return None if host and path else "must be ssh://HOST/ABSOLUTE/PATH"
    if "://" in source:
        return "uses an unsupported scheme (only file:///, globus:// and ssh:// URIs can be fetched)"
    reference = split_reference(source)
    if reference is None:
        return "is neither 'TASK/OUTPUT' nor a file:///, globus:// or ssh:// URI"
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


def _repeated(items: Sequence[Any]) -> list[Any]:
    if len(items) < 2 or len(set(items)) == len(items):  # the common cases, without counting
        return []
    return [item for item, count in Counter(items).items() if count > 1]


def suggest(key: Any, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1) if isinstance(key, str) else []
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"

