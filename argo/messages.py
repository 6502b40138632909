"""The coordinator's API messages: its rows as messages (the server), messages as plain dicts (the client).

The conversions of what both ends of the sync channel share (task specs, resources, states,
timestamps) are in ``balsam.wire.convert``; this module is the rest of the user-facing API.
"""

from __future__ import annotations

import json
from typing import Any

from balsam.protos import argo_pb2 as pb
from balsam.protos import auth_pb2 as apb
from balsam.wire.convert import resources_given, resources_to_wire, state_name, state_number, timestamp
from balsam.resources import Resources

# -- rows to messages (the server) -------------------------------------------------------------------


def workflow_message(workflow: Any, counts: list[tuple[str, str, int]]) -> pb.Workflow:
    return pb.Workflow(
        id=workflow.id, name=workflow.name, status=workflow.status, created_at=timestamp(workflow.created_at), project=workflow.project,
        task_count=sum(n for _, _, n in counts),
        counts=[pb.StateCount(workflow_id=workflow.id, site=site, state=state_number(state), count=n) for site, state, n in counts],
        **_stamps(ended_at=workflow.ended_at),
    )  # fmt: skip


def task_message(task: Any, parents: list[str], attempts: list[Any] = ()) -> pb.Task:
    return pb.Task(
        id=task.id, workflow_id=task.workflow_id, name=task.name, app=task.app, state=state_number(task.state),
        site=task.site or "", attempt=task.attempt, has_return_code=task.return_code is not None,
        return_code=task.return_code or 0, message=task.message, parents=parents, params_json=json.dumps(task.params),
        sites_tried=list(task.sites_tried or []), waiting=task.waiting or "",
        attempts=[pb.Attempt(number=a.number, site=a.site, state=state_number(a.state),
                             **_stamps(ready_at=a.ready_at, placed_at=a.placed_at, started_at=a.started_at, ended_at=a.ended_at))
                  for a in attempts],
    )  # fmt: skip


def _stamps(**times: Any) -> dict[str, Any]:
    """The times that are set, as timestamps (an unset time stays unset on the wire)."""
    return {name: timestamp(when) for name, when in times.items() if when is not None}


def event_message(event: Any) -> pb.Event:
    return pb.Event(
        id=event.id, task_id=event.task_id, workflow_id=event.workflow_id, site=event.site,
        from_state=state_number(event.from_state), to_state=state_number(event.to_state), at=timestamp(event.at),
        message=event.message, workflow_status=event.workflow_status or "", attempt=event.attempt or 0,
    )  # fmt: skip


def site_message(site: Any, assigned: int) -> pb.SiteInfo:
    beat: dict[str, Any] = site.heartbeat or {}
    return pb.SiteInfo(
        name=site.name, apps=site.apps, nodes=site.nodes, scheduler=site.scheduler, transfer_endpoint=site.transfer_endpoint,
        status=site.status, last_seen=timestamp(site.last_seen_at), backlog=int(beat.get("backlog", 0)),
        running=int(beat.get("running", 0)), queue_wait_s=float(beat.get("queue_wait_s", 0.0)), assigned=assigned,
        max_tasks=site.max_tasks, channel_error=site.channel_error or "",
        **({"lease_until": timestamp(site.lease_until)} if site.lease_until else {}),
    )  # fmt: skip


def trigger_message(rule: Any, files: int) -> pb.TriggerRule:
    return pb.TriggerRule(
        id=rule.id, name=rule.name, folder=rule.folder, recursive=rule.recursive, patterns=list(rule.patterns),
        ignore=list(rule.ignore), app=rule.app, params_json=json.dumps(rule.params), resources=resources_to_wire(Resources(**rule.resources)),
        tags=dict(rule.tags), site=rule.pin or "", workflow=rule.workflow, settle_s=rule.settle_s,
        workflow_id=rule.workflow_id or 0, files=files, created_at=timestamp(rule.created_at),
    )  # fmt: skip


# -- messages to dicts (the client) -------------------------------------------------------------------


def workflow_dict(w: pb.Workflow) -> dict[str, Any]:
    by_state: dict[str, int] = {}
    by_site: dict[str, dict[str, int]] = {}
    for c in w.counts:
        state = state_name(c.state)
        by_state[state] = by_state.get(state, 0) + c.count
        by_site.setdefault(c.site or "(unplaced)", {})[state] = c.count
    return {"id": w.id, "name": w.name, "status": w.status, "tasks": w.task_count, "counts": by_state, "by_site": by_site,
            "created_at": _iso(w, "created_at"), "ended_at": _iso(w, "ended_at")}  # fmt: skip


def _iso(message: Any, field: str) -> str | None:
    """A timestamp field as ISO 8601 UTC with microseconds, or None when unset."""
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime().isoformat(timespec="microseconds") + "Z"


def task_dict(t: pb.Task) -> dict[str, Any]:
    return {
        "id": t.id, "workflow_id": t.workflow_id, "name": t.name, "app": t.app, "state": state_name(t.state),
        "site": t.site, "attempt": t.attempt, "return_code": t.return_code if t.has_return_code else None,
        "message": t.message, "waiting": t.waiting, "parents": list(t.parents), "params": json.loads(t.params_json or "{}"),
        "sites_tried": list(t.sites_tried),
        "attempts": [{"number": a.number, "site": a.site, "state": state_name(a.state), "ready_at": _iso(a, "ready_at"),
                      "placed_at": _iso(a, "placed_at"), "started_at": _iso(a, "started_at"), "ended_at": _iso(a, "ended_at")}
                     for a in t.attempts],
    }  # fmt: skip


def site_dict(s: pb.SiteInfo) -> dict[str, Any]:
    return {"name": s.name, "status": s.status, "apps": list(s.apps), "nodes": s.nodes, "scheduler": s.scheduler,
            "backlog": s.backlog, "running": s.running, "assigned": s.assigned, "queue_wait_s": s.queue_wait_s,
            "max_tasks": s.max_tasks, "last_seen": s.last_seen.ToDatetime().isoformat(timespec="seconds") + "Z",
            "channel_error": s.channel_error,
            "lease_until": s.lease_until.ToDatetime().isoformat(timespec="seconds") + "Z" if s.HasField("lease_until") else None}  # fmt: skip


def trigger_dict(r: pb.TriggerRule) -> dict[str, Any]:
    return {
        "id": r.id, "name": r.name, "folder": r.folder, "recursive": r.recursive, "patterns": list(r.patterns),
        "ignore": list(r.ignore), "app": r.app, "params": json.loads(r.params_json or "{}"),
        "resources": resources_given(r.resources), "tags": dict(r.tags), "site": r.site,
        "workflow": r.workflow, "workflow_id": r.workflow_id, "settle_s": r.settle_s, "files": r.files,
    }  # fmt: skip


def token_dict(t: apb.Token) -> dict[str, Any]:
    return {"token": t.token, "kind": t.kind, "name": t.name, "expires_at": t.expires_at.seconds if t.HasField("expires_at") else None}
