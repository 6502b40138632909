"""The Python client of an Argo coordinator, for scripts and notebooks.

    from balsam.argo.client import ArgoClient

    argo = ArgoClient()                        # --address / $ARGO_ADDRESS / the default
    wf = argo.submit("workflow.yaml")          # a spec file, a dict, or a WorkflowSpec
    for event in argo.watch(wf):               # live events until the workflow ends
        print(event.task_id, event.to_state)
    print(argo.status(wf))                     # {"status": "finished", "counts": {...}, ...}
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from balsam.argo import spec as specs
from balsam.argo.config import MAX_MESSAGE_BYTES, client_address
from balsam.argo.wire import state_name, state_number, task_spec_to_wire
from balsam.errors import BalsamError
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc

SUBMIT_CHUNK = 5000  # tasks per streamed message: well under the server's message size limit


class ArgoError(BalsamError):
    """The coordinator refused a request or could not be reached; ``code`` is the gRPC status."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class ArgoClient:
    def __init__(self, address: str | None = None, timeout_s: float = 60.0) -> None:
        self.address = client_address(address)
        self.timeout_s = timeout_s
        self.channel = grpc.insecure_channel(
            self.address,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)],
        )
        self.workflows = rpc.WorkflowsStub(self.channel)
        self.monitor = rpc.MonitorStub(self.channel)
        self.sites_stub = rpc.SitesStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ArgoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method, request, **kwargs):
        try:
            return method(request, timeout=kwargs.pop("timeout", self.timeout_s), **kwargs)
        except grpc.RpcError as exc:
            raise _error(exc, self.address) from None

    # -- workflows -------------------------------------------------------------------------

    def submit(self, workflow: str | Path | dict[str, Any] | specs.WorkflowSpec) -> int:
        """Submit a workflow (a spec file, its parsed document, or a WorkflowSpec); its id."""
        if isinstance(workflow, str | Path):
            workflow = specs.load_spec(workflow)
        elif isinstance(workflow, dict):
            workflow = specs.parse_spec(workflow)
        wire = [task_spec_to_wire(task) for task in workflow.tasks]

        def chunks() -> Iterator[pb.SubmitChunk]:
            for start in range(0, max(1, len(wire)), SUBMIT_CHUNK):
                yield pb.SubmitChunk(name=workflow.name if start == 0 else "", tasks=wire[start : start + SUBMIT_CHUNK])

        return self._call(self.workflows.Submit, chunks(), timeout=max(self.timeout_s, len(wire) / 1000)).workflow_id

    def add_tasks(self, workflow_id: int, tasks: Iterable[dict[str, Any] | specs.TaskSpec]) -> int:
        parsed = [t if isinstance(t, specs.TaskSpec) else specs.task_from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
        request = pb.AddTasksRequest(workflow_id=workflow_id, tasks=[task_spec_to_wire(t) for t in parsed])
        return self._call(self.workflows.AddTasks, request).added

    def status(self, workflow_id: int) -> dict[str, Any]:
        """The workflow's status and its task counts by state and by site."""
        return _workflow_dict(self._call(self.workflows.Get, pb.WorkflowRef(workflow_id=workflow_id)))

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        reply = self._call(self.workflows.List, pb.ListWorkflowsRequest(limit=limit))
        return [_workflow_dict(w) for w in reply.workflows]

    def cancel(self, workflow_id: int) -> int:
        return self._call(self.workflows.Cancel, pb.WorkflowRef(workflow_id=workflow_id)).killed

    def tasks(self, workflow_id: int) -> list[dict[str, Any]]:
        reply = self._call(self.workflows.ListTasks, pb.ListTasksRequest(workflow_id=workflow_id))
        return [_task_dict(t) for t in reply.tasks]

    def task(self, task_id: str) -> dict[str, Any]:
        return _task_dict(self._call(self.workflows.GetTask, pb.TaskRef(task_id=task_id)))

    def kill(self, task_id: str) -> dict[str, Any]:
        return _task_dict(self._call(self.workflows.KillTask, pb.TaskRef(task_id=task_id)))

    # -- monitoring ------------------------------------------------------------------------

    def watch(self, workflow_id: int = 0, *, site: str = "", states: Iterable[str] = (), after_id: int = 0, until_done: bool = True) -> Iterator[pb.Event]:
        """Events as they happen (after replaying those after ``after_id``), until the workflow ends."""
        request = pb.WatchRequest(
            workflow_id=workflow_id, site=site, states=[state_number(s.upper()) for s in states], after_id=after_id, until_done=until_done
        )
        stream = self.monitor.Watch(request)
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise _error(exc, self.address) from None
        finally:
            stream.cancel()

    def wait(self, workflow_id: int, timeout_s: float | None = None) -> str:
        """Block until the workflow ends; its final status."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        after = 0
        while True:
            stream = self.monitor.Watch(pb.WatchRequest(workflow_id=workflow_id, until_done=True, after_id=after),
                                        timeout=None if deadline is None else max(0.1, deadline - time.monotonic()))  # fmt: skip
            try:
                for event in stream:
                    after = event.id
                    if event.workflow_status:
                        return event.workflow_status
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ArgoError(f"workflow {workflow_id} did not end within {timeout_s:g} s", exc.code()) from None
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise _error(exc, self.address) from None
                time.sleep(1.0)  # the server is restarting: watch again from the last event seen

    def summary(self, workflow_id: int = 0, site: str = "") -> list[dict[str, Any]]:
        reply = self._call(self.monitor.Summary, pb.SummaryRequest(workflow_id=workflow_id, site=site))
        return [{"workflow_id": c.workflow_id, "site": c.site, "state": state_name(c.state), "count": c.count} for c in reply.counts]

    def sites(self) -> list[dict[str, Any]]:
        reply = self._call(self.monitor.ListSites, pb.ListSitesRequest())
        return [
            {"name": s.name, "status": s.status, "apps": list(s.apps), "nodes": s.nodes, "scheduler": s.scheduler,
             "backlog": s.backlog, "running": s.running, "assigned": s.assigned, "queue_wait_s": s.queue_wait_s,
             "max_tasks": s.max_tasks, "last_seen": s.last_seen.ToDatetime().isoformat(timespec="seconds") + "Z"}
            for s in reply.sites
        ]  # fmt: skip

    def healthy(self, timeout_s: float = 2.0) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _error(exc: grpc.RpcError, address: str) -> ArgoError:
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return ArgoError(f"cannot reach the Argo server at {address}: {exc.details()}", code)
    return ArgoError(exc.details() or str(code), code)


def _workflow_dict(w: pb.Workflow) -> dict[str, Any]:
    by_state: dict[str, int] = {}
    by_site: dict[str, dict[str, int]] = {}
    for c in w.counts:
        state = state_name(c.state)
        by_state[state] = by_state.get(state, 0) + c.count
        by_site.setdefault(c.site or "(unplaced)", {})[state] = c.count
    return {"id": w.id, "name": w.name, "status": w.status, "tasks": w.task_count, "counts": by_state, "by_site": by_site,
            "created_at": w.created_at.ToDatetime().isoformat(timespec="seconds") + "Z"}  # fmt: skip


def _task_dict(t: pb.Task) -> dict[str, Any]:
    return {
        "id": t.id, "workflow_id": t.workflow_id, "name": t.name, "app": t.app, "state": state_name(t.state),
        "site": t.site, "attempt": t.attempt, "return_code": t.return_code if t.has_return_code else None,
        "message": t.message, "parents": list(t.parents), "params": json.loads(t.params_json or "{}"),
        "sites_tried": list(t.sites_tried),
    }  # fmt: skip
