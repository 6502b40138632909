"""Between the wire types (protobuf) and the coordinator's plain data: specs, rows, timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from balsam.argo import spec as specs
from balsam.inputs import load_json
from balsam.protos import argo_pb2 as pb
from balsam.states import JobState, from_wire

_RESOURCE_FIELDS = ("nodes", "ranks_per_node", "threads_per_rank", "gpus_per_rank", "node_packing_count", "wall_time_min")


def resources_dict(resources: specs.Resources) -> dict[str, Any]:
    return {name: getattr(resources, name) for name in _RESOURCE_FIELDS if getattr(resources, name) is not None}


def task_spec_to_wire(task: specs.TaskSpec) -> pb.TaskSpec:
    return pb.TaskSpec(
        name=task.name, app=task.app, params_json=json.dumps(task.params), resources=pb.Resources(**resources_dict(task.resources)),
        parents=list(task.parents), inputs=dict(task.inputs), outputs=list(task.outputs), site=task.site or "", tags=dict(task.tags),
    )  # fmt: skip


def task_spec_from_wire(message: pb.TaskSpec, where: str) -> specs.TaskSpec:
    """Checked exactly as a spec file is (``SpecError`` naming ``where`` and the task)."""
    try:
        params = load_json(message.params_json, f"{where} (task {message.name!r}): params_json") if message.params_json else {}
    except json.JSONDecodeError as exc:
        raise specs.SpecError([f"{where} (task {message.name!r}): params_json is not JSON: {exc}"]) from None
    doc: dict[str, Any] = {"name": message.name, "app": message.app, "params": params}
    resources = {name: getattr(message.resources, name) for name in _RESOURCE_FIELDS if getattr(message.resources, name)}
    if resources:
        doc["resources"] = resources
    for name in ("parents", "outputs"):
        if getattr(message, name):
            doc[name] = list(getattr(message, name))
    for name in ("inputs", "tags"):
        if getattr(message, name):
            doc[name] = dict(getattr(message, name))
    if message.site:
        doc["site"] = message.site
    return specs.task_from_dict(doc, where)


def timestamp(when: datetime | None) -> Timestamp:
    stamp = Timestamp()
    if when is not None:
        stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC) if (stamp.seconds or stamp.nanos) else datetime.now(UTC)


def state_number(name: str | None) -> int:
    return JobState(name).number if name else 0


def state_name(number: int) -> str:
    return from_wire(number).value
