"""Between protobuf messages and the domain types: the one place that reads and writes them.

Resources, task specs, the sync channel's messages (assignments and kill orders down, job reports
and spawned tasks up), job states and timestamps. Decoding checks what it reads: a task spec as a
spec file would be checked (``balsam.taskspec``), resources by ``balsam.resources``, states by the
enum; a malformed message is a ``BadRequest`` naming the field.

Conventions of the protos: a zero numeric field means "the default", and parameters travel as
JSON text (protobuf's Struct would turn every integer into a float, and a command line would then
read "3.0").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from balsam.errors import BadRequest, BalsamError, SpecError
from balsam.inputs import load_json
from balsam.protos import argo_pb2 as pb
from balsam.resources import DEFAULT, Resources, resources_from
from balsam.states import JobState, from_wire
from balsam.taskspec import TaskSpec, task_from_dict

# A task travels whole in one message, to the coordinator and on to its site: it must fit, with room
# to spare, in an envelope (balsam.wire.outbox.ENVELOPE_BYTES) and a message (MAX_MESSAGE_BYTES).
MAX_TASK_BYTES = 1024 * 1024

# -- scalars -------------------------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(when: datetime | None) -> Timestamp:
    """The stamp of ``when`` (a naive time is local time), exact to the microsecond; unset for None.

    Counted from the epoch by integer arithmetic: protobuf's ``FromDatetime`` is Python code that
    took a third of the time to build each event a watcher is sent."""
    if when is None:
        return Timestamp()
    since = (when if when.tzinfo is not None else when.astimezone(UTC)) - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


# The range a Timestamp may hold (0001-01-01 to 9999-12-31, as protobuf's ToDatetime checks it).
_FIRST_SECOND, _LAST_SECOND = -62_135_596_800, 253_402_300_799


def from_timestamp(stamp: Timestamp) -> datetime | None:
    """The time (to the microsecond below), or None for an unset stamp; BadRequest if out of range.

    By integer arithmetic too: ``ToDatetime`` was a third of the conversion of a site's events."""
    seconds, nanos = stamp.seconds, stamp.nanos
    if not (seconds or nanos):
        return None
    if not (_FIRST_SECOND <= seconds <= _LAST_SECOND and 0 <= nanos < 1_000_000_000):
        raise BadRequest(f"timestamp {seconds}.{nanos:09d} is out of range")
    return _EPOCH + timedelta(0, seconds, nanos // 1000)  # (days, seconds, microseconds): positional is quicker


def state_number(state: str | None) -> int:
    return JobState(state).number if state else 0


def state_name(number: int) -> str:
    """The name of the state numbered ``number`` ('' for 0, the unset state of a workflow's end event)."""
    return from_wire(number).value if number else ""


def state_from_wire(number: int, what: str = "state") -> JobState:
    try:
        return from_wire(number)
    except BalsamError:
        raise BadRequest(f"{what} {number} is not a job state") from None


def params_from_json(text: str, where: str) -> dict[str, Any]:
    if not text or text == "{}":  # most tasks of a big workflow have none: no parser for them
        return {}
    try:
        params = load_json(text, f"{where}: params_json")  # bounded: depth, sizes, numbers (balsam.inputs)
    except json.JSONDecodeError as exc:
        raise SpecError([f"{where}: params_json is not JSON: {exc}"]) from None
    if not isinstance(params, dict):
        raise SpecError([f"{where}: params_json must be a JSON object"])
    return params


# -- resources and task specs -----------------------------------------------------------------------


def resources_to_wire(resources: Resources) -> pb.Resources:
    if resources is DEFAULT:
        return pb.Resources()
    return pb.Resources(**{name: value for name, value in resources.given().items() if value is not None})


def resources_given(message: pb.Resources) -> dict[str, Any]:
    """The fields set in ``message`` (a zero field: the default), by name, unchecked."""
    return {field.name: value for field, value in message.ListFields()}  # proto3 lists only the nonzero ones


def resources_from_wire(message: pb.Resources, where: str) -> Resources:
    resources, problems = resources_from(resources_given(message), "resources.")
    if problems:
        raise SpecError([f"{where}: {problem}" for problem in problems])
    return resources


def task_spec_to_wire(task: TaskSpec) -> pb.TaskSpec:
    # Only the fields a task has: a big workflow's tasks mostly have a name and an app, and an empty
    # field would still cost its conversion here and its check at the coordinator.
    fields: dict[str, Any] = {"name": task.name, "app": task.app}
    if task.params:
        fields["params_json"] = json.dumps(task.params)
    if task.resources is not DEFAULT:
        fields["resources"] = resources_to_wire(task.resources)
    for name in ("parents", "inputs", "outputs", "tags", "site"):
        value = getattr(task, name)
        if value:
            fields[name] = value
    return pb.TaskSpec(**fields)


def check_task_size(message: pb.TaskSpec, where: str) -> None:
    size = message.ByteSize()
    if size > MAX_TASK_BYTES:
        raise SpecError([f"{where} (task {message.name[:60]!r}) takes {size:,} bytes; a task may take at most {MAX_TASK_BYTES:,}"
                         " (its parameters, inputs, outputs and tags together)"])  # fmt: skip


def task_spec_from_wire(message: pb.TaskSpec, where: str) -> TaskSpec:
    """Checked exactly as a spec file is (``SpecError`` naming ``where`` and the task), and for size."""
    check_task_size(message, where)
    doc: dict[str, Any] = {"name": message.name, "app": message.app}  # required: an unset one is refused by name
    for found, value in message.ListFields():  # only the fields set: most tasks have few
        name = found.name
        if name == "params_json":
            doc["params"] = params_from_json(value, f"{where} (task {message.name!r})")
        elif name == "resources":
            doc["resources"] = resources_given(value)
        elif name in ("parents", "outputs"):
            doc[name] = list(value)
        elif name in ("inputs", "tags"):
            doc[name] = dict(value)
        elif name == "site":
            doc[name] = value
    return task_from_dict(doc, where)


# -- the sync channel: down (coordinator -> site) -----------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """Run this task (attempt ``attempt``) here; its inputs are locations (parents' outputs resolved)."""

    task_id: str
    attempt: int
    workflow_id: int
    workflow: str
    spec: TaskSpec
    coordinator: str = ""  # the coordinator instance: task ids are unique only within one
    waits_for: Mapping[str, int] = field(default_factory=dict)  # sent ahead: task id -> attempt of the parents placed there


@dataclass(frozen=True)
class KillOrder:
    task_id: str
    attempt: int
    reason: str


def assignment_message(a: Assignment) -> pb.CoordinatorMessage:
    return pb.CoordinatorMessage(assign=pb.Assignment(
        task_id=a.task_id, attempt=a.attempt, workflow_id=a.workflow_id, workflow=a.workflow, spec=task_spec_to_wire(a.spec),
        coordinator=a.coordinator, waits_for=a.waits_for,
    ))  # fmt: skip


def kill_message(k: KillOrder) -> pb.CoordinatorMessage:
    return pb.CoordinatorMessage(kill=pb.KillOrder(task_id=k.task_id, attempt=k.attempt, reason=k.reason))


def coordinator_message_body(message: pb.CoordinatorMessage) -> Assignment | KillOrder:
    if message.HasField("assign"):
        a = message.assign
        return Assignment(a.task_id, a.attempt, a.workflow_id, a.workflow, task_spec_from_wire(a.spec, f"Argo task {a.task_id}"),
                          a.coordinator, dict(a.waits_for))  # fmt: skip
    if message.HasField("kill"):
        k = message.kill
        return KillOrder(k.task_id, k.attempt, k.reason)
    raise BadRequest(f"coordinator message {message.seq} carries nothing")


# -- the sync channel: up (site -> coordinator) -------------------------------------------------------


@dataclass(frozen=True)
class OutputFile:
    """A file a task made, where other sites can fetch it from."""

    name: str  # as the task declared it, relative to its work folder
    location: str  # file:///abs/path, globus://COLLECTION/path or ssh://HOST/abs/path
    size_bytes: int


class Report(NamedTuple):
    """A move of the job that runs an Argo task at its site. A named tuple, not a frozen dataclass:
    the coordinator makes one of each event every site sends, and it is made in a third of the time."""

    task_id: str
    attempt: int
    job_id: int  # 0: no job (the site refused the assignment)
    from_state: JobState
    to_state: JobState
    at: datetime | None
    message: str
    return_code: int | None = None
    outputs: tuple[OutputFile, ...] = ()  # with JOB_FINISHED: where its declared outputs are


@dataclass(frozen=True)
class Spawned:
    """A job that a running Argo task created at its site, joining the graph already placed there."""

    task_id: str  # "WORKFLOW/SITE:JOB"
    workflow_id: int
    job_id: int
    app: str
    params: dict[str, Any] = field(default_factory=dict)
    resources: Resources = Resources()
    parents: tuple[str, ...] = ()  # task ids
    outputs: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)


def report_message(r: Report) -> pb.SiteMessage:
    return pb.SiteMessage(event=pb.TaskEvent(
        task_id=r.task_id, attempt=r.attempt, job_id=r.job_id, from_state=r.from_state.number, to_state=r.to_state.number,
        at=timestamp(r.at), message=r.message, has_return_code=r.return_code is not None, return_code=r.return_code or 0,
        outputs=[pb.OutputFile(name=o.name, location=o.location, size_bytes=o.size_bytes) for o in r.outputs],
    ))  # fmt: skip


def spawned_message(s: Spawned) -> pb.SiteMessage:
    spec = pb.TaskSpec(name=s.task_id.rpartition("/")[2], app=s.app, params_json=json.dumps(s.params), resources=resources_to_wire(s.resources),
                       parents=list(s.parents), outputs=list(s.outputs), tags=dict(s.tags))  # fmt: skip
    return pb.SiteMessage(spawned=pb.SpawnedTask(task_id=s.task_id, workflow_id=s.workflow_id, job_id=s.job_id, spec=spec))


def site_message_body(message: pb.SiteMessage) -> Report | Spawned:
    if message.HasField("event"):
        e = message.event
        return Report(
            e.task_id, e.attempt, e.job_id, state_from_wire(e.from_state, "from_state"), state_from_wire(e.to_state, "to_state"),
            from_timestamp(e.at), e.message, e.return_code if e.has_return_code else None,
            tuple(OutputFile(o.name, o.location, o.size_bytes) for o in e.outputs) if e.outputs else (),
        )  # fmt: skip
    if message.HasField("spawned"):
        s = message.spawned
        where = f"spawned task {s.task_id!r}"
        return Spawned(
            s.task_id, s.workflow_id, s.job_id, s.spec.app, params_from_json(s.spec.params_json, where),
            resources_from_wire(s.spec.resources, where), tuple(s.spec.parents), tuple(s.spec.outputs), dict(s.spec.tags),
        )  # fmt: skip
    raise BadRequest(f"site message {message.seq} carries nothing")
