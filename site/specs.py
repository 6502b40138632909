"""Job requests as plain data, and their validation: no database, no I/O but reading a file.

A request for many jobs (``balsam job add --from FILE`` or ``Site.add_jobs``) is checked whole:
apps, parameters, resources, parents given by name within the batch, and cycles among them, and
nothing of it is stored if any check fails. A ``Request`` checks its jobs one by one as the writer
draws them, so checking overlaps storing. Each error names the job (and the file line) it is about.
"""

from __future__ import annotations

import difflib
import graphlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from balsam.errors import BalsamError
from balsam.inputs import check_value, check_yaml_size, load_json, load_yaml, read_text, yaml_problem
from balsam.resources import DEFAULT as DEFAULT_RESOURCES
from balsam.resources import FIELDS as RESOURCE_FIELDS
from balsam.resources import Resources, resources_from
from balsam.site.templates import CommandTemplate
from balsam.transfer.base import Location, TransferError
from balsam.paths import relative_path_problem

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")

MAX_NAME = 200  # the width of the name columns


@dataclass
class JobSpec:
    app: str
    name: str = ""
    workflow: str = "default"
    params: dict[str, Any] = field(default_factory=dict)
    # int: the id of an existing job; str: the name of another job of the same request.
    parents: list[int | str] = field(default_factory=list)
    # Given in a job's mapping as its own keys (nodes, ranks_per_node, ..., wall_time_min).
    resources: Resources = DEFAULT_RESOURCES
    tags: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    # Files staged into the work folder before the run: local name -> location URI. ``stage_in`` says
    # the same as a list of {"source": URI, "dest": NAME}; both end up in the stored ``stage_in``.
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # files of the work folder the job makes
    stage_in: list[Any] = field(default_factory=list)
    stage_out: list[Any] = field(default_factory=list)  # [{"source": NAME, "dest": URI}], after the run
    source: str = ""  # where the request came from, for error messages: "line 12"

    @property
    def label(self) -> str:
        who = f"job {self.name!r}" if self.name else "job"
        return f"{who} ({self.source})" if self.source else who


# The keys of a job's mapping: its fields, with the resources as keys of their own.
FIELDS = frozenset({f for f in JobSpec.__dataclass_fields__ if f not in ("source", "resources")} | set(RESOURCE_FIELDS))
_RESOURCE_KEYS = frozenset(RESOURCE_FIELDS)


def spec_from_dict(raw: Any, source: str = "") -> JobSpec:
    """A JobSpec from a mapping as found in a file or given to the API; unknown keys are errors."""
    where = f" ({source})" if source else ""
    if not isinstance(raw, dict):
        raise BalsamError(f"a job must be a mapping of fields{where}, not {type(raw).__name__}")
    for key in () if FIELDS.issuperset(raw) else raw:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1) if isinstance(key, str) else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BalsamError(f"unknown job field {key!r}{where}{hint}; known fields: {', '.join(sorted(FIELDS))}")
    if "app" not in raw:
        raise BalsamError(f"a job needs an app{where}")
    plain = _RESOURCE_KEYS.isdisjoint(raw)  # the common case: no resources given, nothing to pick apart
    values = raw if plain else {key: value for key, value in raw.items() if key not in _RESOURCE_KEYS}
    spec = JobSpec(**values, source=source)
    # First what JSON can hold within the input limits (balsam.inputs): text, numbers, nesting.
    check_value(raw, spec.label)
    if not plain:
        resources, problems = resources_from({key: raw[key] for key in RESOURCE_FIELDS if key in raw})
        if problems:
            raise BalsamError(f"{spec.label}: {problems[0]}")
        spec.resources = resources
    check_shape(spec, values_checked=True)
    return spec


def check_shape(spec: JobSpec, values_checked: bool = False) -> None:
    """Types and ranges of one spec's own fields (what needs no other job and no app);
    ``values_checked``: they passed the input boundary already."""
    if not values_checked:  # first what JSON can hold within the input limits (balsam.inputs)
        check_value({key: value for key, value in vars(spec).items() if key != "resources"}, spec.label)
    if not isinstance(spec.app, str) or not spec.app:
        raise BalsamError(f"{spec.label}: app must be a non-empty name")
    for key in ("name", "workflow"):
        value = getattr(spec, key)
        if not isinstance(value, str):
            raise BalsamError(f"{spec.label}: {key} must be text")
        if len(value) > MAX_NAME:
            raise BalsamError(f"{spec.label}: {key} is {len(value)} characters long; at most {MAX_NAME}")
    if not spec.workflow:
        raise BalsamError(f"{spec.label}: workflow must not be empty")
    if not isinstance(spec.resources, Resources):
        raise BalsamError(f"{spec.label}: resources must be Resources, got {type(spec.resources).__name__}")
    if spec.resources is not DEFAULT_RESOURCES:  # the common case needs no look
        problems = resources_from(spec.resources.given())[1]
        if problems:
            raise BalsamError(f"{spec.label}: {problems[0]}")
    for key in ("params", "tags", "data", "inputs"):
        if not isinstance(getattr(spec, key), dict):
            raise BalsamError(f"{spec.label}: {key} must be a mapping")
    for key in ("parents", "outputs", "stage_in", "stage_out"):
        if not isinstance(getattr(spec, key), list):
            raise BalsamError(f"{spec.label}: {key} must be a list")
    for key, value in spec.params.items():
        if not isinstance(value, (str, int, float, bool)):
            raise BalsamError(f"{spec.label}: parameter {key!r} must be text or a number, got {type(value).__name__}")
    for key, value in spec.tags.items():
        if not isinstance(value, str) or not _KEY.match(str(key)):
            raise BalsamError(f"{spec.label}: tag {key!r}={value!r} must be a name and a text value")
    # PostgreSQL text cannot hold NUL, and no program could receive it in an argument anyway.
    # Joined, the texts are searched once (only text parameters can hold a NUL; numbers cannot).
    texts = "".join((spec.name, spec.workflow, *[v for v in spec.params.values() if isinstance(v, str)], *spec.tags.values()))
    if "\0" in texts or any(
        "\\u0000" in json.dumps(extra) for extra in (spec.data, spec.inputs, spec.outputs, spec.stage_in, spec.stage_out) if extra
    ):
        raise BalsamError(f"{spec.label}: a value contains a NUL character (\\0), which cannot be stored")
    for parent in spec.parents:
        if isinstance(parent, bool) or not isinstance(parent, (int, str)) or parent == "":
            raise BalsamError(f"{spec.label}: a parent must be a job id or the name of a job in the same request, got {parent!r}")
    if spec.outputs or spec.inputs or spec.stage_in or spec.stage_out:
        _check_files(spec)


def _check_files(spec: JobSpec) -> None:
    """Declared files: names inside the work folder, locations that parse, no name staged in twice."""
    for output in spec.outputs:
        problem = relative_path_problem(output)
        if problem:
            raise BalsamError(f"{spec.label}: output {output!r} {problem}")
    seen: set[str] = set()
    for item in stage_in_items(spec):
        if item["dest"] in seen:
            raise BalsamError(f"{spec.label}: {item['dest']!r} is staged in more than once")
        seen.add(item["dest"])
    stage_out_items(spec)


def _location(spec: JobSpec, what: str, uri: Any) -> str:
    try:
        return Location.parse(uri).uri
    except TransferError as exc:
        raise BalsamError(f"{spec.label}: {what}: {exc}") from None


def _local_name(spec: JobSpec, what: str, name: Any) -> str:
    problem = relative_path_problem(name)
    if problem:
        raise BalsamError(f"{spec.label}: {what} {name!r} {problem}")
    return name


def _item(spec: JobSpec, what: str, item: Any) -> tuple[Any, Any]:
    if not isinstance(item, dict) or set(item) != {"source", "dest"}:
        raise BalsamError(f"{spec.label}: each {what} item must be a mapping with exactly 'source' and 'dest', got {item!r}")
    return item["source"], item["dest"]


def stage_in_items(spec: JobSpec) -> list[dict[str, str]]:
    """What to stage in, as stored: ``inputs`` and ``stage_in`` together, each checked."""
    items = [
        {"source": _location(spec, f"input {name!r}", source), "dest": _local_name(spec, "input", name)}
        for name, source in spec.inputs.items()
    ]
    for item in spec.stage_in:
        source, dest = _item(spec, "stage_in", item)
        items.append({"source": _location(spec, f"stage_in of {dest!r}", source), "dest": _local_name(spec, "stage_in dest", dest)})
    return items


def stage_out_items(spec: JobSpec) -> list[dict[str, str]]:
    """What to stage out, as stored, each checked."""
    items = []
    for item in spec.stage_out:
        source, dest = _item(spec, "stage_out", item)
        items.append({"source": _local_name(spec, "stage_out source", source), "dest": _location(spec, f"stage_out of {source!r}", dest)})
    return items


def check_batch(specs: list[JobSpec], templates: dict[str, CommandTemplate]) -> None:
    """Apps, parameters, in-batch parent names and cycles of a whole request."""
    checker = BatchChecker(templates, batch_name_index(specs))
    for i, spec in enumerate(specs):
        checker.check(i, spec)
    checker.finish()


class BatchChecker:
    """The checks of a request that look past one job: its app and parameters against the site's
    templates, parents named within the request, and cycles among those. Jobs are given one at a
    time, in order (so a request can be checked while it is written), then ``finish``."""

    def __init__(self, templates: dict[str, CommandTemplate], names: dict[str, int | None]) -> None:
        self.templates = templates
        self.names = names  # batch_name_index of the whole request
        # A campaign's jobs share a few apps and a few sets of parameter names: each pair is checked
        # once, unless the app splits a value into words ({*name}), which depends on each value.
        self.passed: set[tuple[str, tuple[str, ...]]] = set()
        # Only jobs that name parents of this request can be in a cycle: the graph holds just those.
        self.graph: dict[int, set[int]] = {}
        self.graph_names: dict[int, str] = {}

    def check(self, i: int, spec: JobSpec) -> None:
        shape = (spec.app, tuple(spec.params))
        if shape not in self.passed:
            template = self.templates.get(spec.app)
            if template is None:
                known = ", ".join(sorted(self.templates)) or "none yet; add one with `balsam app add`"
                raise BalsamError(f"{spec.label}: unknown app {spec.app!r} (apps of this site: {known})")
            try:
                template.check_parameters(spec.params, spec.app)
            except BalsamError as exc:
                raise BalsamError(f"{spec.label}: {exc}") from None
            if not template.splats:
                self.passed.add(shape)
        for parent in spec.parents:
            if isinstance(parent, str):
                if parent not in self.names:
                    raise BalsamError(f"{spec.label}: unknown parent {parent!r} (no job of that name in this request)")
                if self.names[parent] is None:
                    raise BalsamError(f"{spec.label}: parent name {parent!r} is ambiguous: several jobs in this request have it")
                self.graph.setdefault(i, set()).add(self.names[parent])  # type: ignore[arg-type]
                self.graph_names[i] = spec.name

    def finish(self) -> None:
        try:
            graphlib.TopologicalSorter(self.graph).prepare()
        except graphlib.CycleError as exc:
            cycle = " -> ".join(self.graph_names.get(i) or f"#{i + 1}" for i in exc.args[1])
            raise BalsamError(f"the jobs' parents form a cycle: {cycle}") from None


PROGRESS_EVERY = 1000  # jobs stored between two calls of a ``Request``'s ``progress``
Progress = Callable[[int, int], None]  # (jobs stored so far, jobs in the request)


def _report_progress(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
        progress(done, total)


class Request:
    """The jobs of one request, checked one by one as the writer draws them.

    ``jobstore.insert_jobs`` formats each job's COPY line as it draws it, and COPY sends as it is
    drawn, so the checks of one job run while the server stores the ones before it (for 100,000
    jobs the checks alone take about 0.7 s). What the writer needs of the whole request before the
    first line is read from the items as given: how many jobs, the names parents may refer to, and
    the existing jobs named as parents (to lock them). An item that fails its checks raises when
    it is drawn; that aborts the COPY, and the transaction stores nothing.
    """

    def __init__(self, items: Sequence[JobSpec | dict[str, Any]], templates: dict[str, CommandTemplate] | None,
                 shapes_checked: bool = False, sources: Sequence[str] | None = None,
                 progress: Progress | None = None) -> None:  # fmt: skip
        self.items = items
        self.shapes_checked = shapes_checked  # the specs' own fields passed spec_from_dict or check_shape
        self.sources = sources  # where each mapping came from, for errors; "item N" when not given
        self.progress = progress  # told (drawn, total) every PROGRESS_EVERY jobs and at the last
        # What is not a mapping, or a field of the wrong type, is left out here; the item's own
        # checks refuse it when it is drawn.
        def given(item: Any, key: str) -> Any:
            return item.get(key) if isinstance(item, dict) else getattr(item, key, None)

        self.names = name_index(given(item, "name") for item in items)
        parent_ids: set[int] = set()
        for item in items:
            parents = given(item, "parents")
            if isinstance(parents, list):
                parent_ids.update(p for p in parents if type(p) is int and _BIGINT_MIN <= p <= _BIGINT_MAX)
        self.parent_ids = sorted(parent_ids)
        self.checker = BatchChecker(templates, self.names) if templates is not None else None

    @classmethod
    def checked(cls, specs: list[JobSpec]) -> Request:
        """Specs that passed check_shape and check_batch already (triggers, Argo assignments)."""
        return cls(specs, None, shapes_checked=True)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[JobSpec]:
        for i, item in enumerate(self.items):
            if isinstance(item, JobSpec):
                if not self.shapes_checked:
                    check_shape(item)  # may have been built by hand, bypassing spec_from_dict
                spec = item
            else:
                spec = spec_from_dict(item, source=self.sources[i] if self.sources is not None else f"item {i + 1}")
            if self.checker is not None:
                self.checker.check(i, spec)
            _report_progress(self.progress, i + 1, len(self.items))
            yield spec

    def finish(self) -> None:
        """The checks that need every job seen (cycles); after the last one was drawn."""
        if self.checker is not None:
            self.checker.finish()


_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


def batch_name_index(specs: list[JobSpec]) -> dict[str, int | None]:
    """Name -> position in the batch; None marks a name that several jobs share."""
    return name_index(spec.name for spec in specs)


def name_index(names: Iterable[Any]) -> dict[str, int | None]:
    """Like ``batch_name_index``, over the names as given (what is not a non-empty text is no name)."""
    index: dict[str, int | None] = {}
    for i, name in enumerate(names):
        if isinstance(name, str) and name:
            index[name] = None if name in index else i
    return index


def parse_assignments(items: list[str], what: str) -> dict[str, str]:
    """``["k=v", ...]`` from the command line into a mapping; a malformed item is an error."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise BalsamError(f"bad {what} {item!r}: expected NAME=VALUE")
        result[key] = value
    return result




def read_job_file(path: Path) -> list[tuple[Any, str]]:
    """The jobs of a YAML file, a JSON document, or JSON lines (one job per line), decoded but not
    checked, each with where it came from for errors ("FILE line 12"): ``Site.add_jobs(items,
    sources=...)`` checks each job as it stores it.

    The suffix decides (.yaml/.yml, .json, .jsonl/.ndjson); otherwise the first character does:
    ``[`` a JSON document, ``{`` JSON lines, anything else YAML. A YAML or JSON document is a list
    of jobs or a mapping with a ``jobs`` list. The file is read through ``balsam.inputs``: a regular
    file, within its size, in UTF-8, decoded within the limits.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    text = read_text(path, yaml_text=suffix in (".yaml", ".yml"))
    first = text.lstrip()[:1]
    if suffix in (".jsonl", ".ndjson") or (suffix not in (".yaml", ".yml", ".json") and first == "{"):
        return _read_json_lines(text, path)
    if suffix == ".json" or (suffix not in (".yaml", ".yml") and first == "["):
        return _read_json_document(text, path)
    check_yaml_size(text, str(path))  # found to be YAML from its text: YAML's own limit applies too
    return _read_yaml(text, path)


def _job_list(data: Any, path: Path) -> list[Any]:
    if isinstance(data, dict) and isinstance(data.get("jobs"), list):
        data = data["jobs"]
    if not isinstance(data, list) or not data:
        raise BalsamError(f"{path}: expected a list of jobs (or a mapping with a `jobs:` list)")
    return data


def _read_json_document(text: str, path: Path) -> list[tuple[Any, str]]:
    try:
        # Each job's values are checked with its label (check_shape), so errors name the job.
        data = load_json(text, str(path), check=False)
    except json.JSONDecodeError as exc:
        raise BalsamError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    return [(raw, f"{path} job {i + 1}") for i, raw in enumerate(_job_list(data, path))]


def _read_json_lines(text: str, path: Path) -> list[tuple[Any, str]]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = load_json(line, f"{path}: line {number}", check=False)
        except json.JSONDecodeError as exc:
            raise BalsamError(f"{path}: line {number}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        items.append((raw, f"{path} line {number}"))
    if not items:
        raise BalsamError(f"{path} holds no jobs")
    return items


def _read_yaml(text: str, path: Path) -> list[tuple[Any, str]]:
    try:
        data, node = load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        line, _column, problem = yaml_problem(exc)
        where = f"line {line}: " if line else ""
        raise BalsamError(f"{path}: {where}not valid YAML: {problem}") from None
    if isinstance(data, dict) and isinstance(data.get("jobs"), list):
        node = next((v for k, v in node.value if k.value == "jobs"), None)  # None: 'jobs' came from a merge
    data = _job_list(data, path)
    lines = [item.start_mark.line + 1 for item in node.value] if isinstance(node, yaml.SequenceNode) else [None] * len(data)
    return [(raw, f"{path} line {line}" if line else f"{path} job {i + 1}") for i, (raw, line) in enumerate(zip(data, lines))]
