"""The Python client of an Argo coordinator, for scripts and notebooks.

    from balsam.argo.client import ArgoClient

    argo = ArgoClient()                        # --address / $ARGO_ADDRESS / the default
    wf = argo.submit("workflow.yaml")          # a spec file, a dict, or a WorkflowSpec
    for event in argo.watch(wf):               # live events until the workflow ends
        print(event.task_id, event.to_state)
    print(argo.status(wf))                     # {"status": "finished", "counts": {...}, ...}

Security: ``ca_file`` (else ``$ARGO_CA``, else the client config's ``ca``) turns on TLS and is the
authority the server's certificate must be signed by; ``cert_file``/``key_file`` are the client's
own certificate for a server that requires one (``--mtls``). ``token`` (else ``$ARGO_TOKEN``, else
the client config's ``token`` from `argo login`, else the owner token of a server on this machine
in ``$ARGO_DATA``/``~/.argo``) is sent with every call.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from balsam.argo import spec as specs
from balsam.argo.config import CA_ENV, DATA_ENV, TOKEN_ENV, client_address, client_config, default_data_dir, is_loopback, local_server_data
from balsam.argo.messages import site_dict, task_dict, token_dict, trigger_dict, workflow_dict
from balsam.errors import BalsamError
from balsam.private_files import read_private
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.protos import auth_pb2 as apb
from balsam.protos import auth_pb2_grpc as arpc
from balsam.taskspec import TaskSpec, task_from_dict
from balsam.wire import channel as wire_channel
from balsam.wire.channel import open_channel
from balsam.wire.convert import check_task_size, resources_to_wire, state_name, state_number, task_spec_to_wire
from balsam.wire.outbox import ENVELOPE_BYTES
from balsam.resources import resources_from

SUBMIT_CHUNK = 5000  # at most this many tasks per streamed message, and at most ENVELOPE_BYTES of them


class ArgoError(BalsamError):
    """The coordinator refused a request or could not be reached; ``code`` is the gRPC status."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


def resolve_token(address: str, explicit: str | None = None) -> str:
    """The token to send: explicit, else $ARGO_TOKEN, else `argo login`'s, else a local server's owner token."""
    if explicit is not None:
        return explicit
    found = os.environ.get(TOKEN_ENV) or client_config().get("token")
    if found:
        return str(found).strip()
    if not is_loopback(address):
        return ""
    # A server on this machine: the owner token in its folder: $ARGO_DATA when set, else the folder
    # `argo server start --data DIR` last noted for this address, else ~/.argo.
    folders = [default_data_dir()] if os.environ.get(DATA_ENV) else [local_server_data(address), default_data_dir()]
    for folder in folders:
        if folder is not None and (folder / "owner-token").exists():
            return read_private(folder / "owner-token").strip()
    return ""


class ArgoClient:
    def __init__(self, address: str | None = None, timeout_s: float = 60.0, *, ca_file: str | Path | None = None,
                 cert_file: str | Path | None = None, key_file: str | Path | None = None, token: str | None = None) -> None:  # fmt: skip
        self.address = client_address(address)
        self.timeout_s = timeout_s
        config = client_config()
        ca_file = ca_file or os.environ.get(CA_ENV) or config.get("ca") or None
        cert_file = cert_file or os.environ.get("ARGO_CERT") or config.get("cert") or None
        key_file = key_file or os.environ.get("ARGO_KEY") or config.get("key") or None
        self.tls = bool(ca_file)
        self.token = resolve_token(self.address, token)
        try:
            self.channel = open_channel(self.address, ca_file=ca_file, cert_file=cert_file, key_file=key_file, token=self.token)
        except BalsamError as exc:
            raise ArgoError(str(exc)) from None
        self.workflows = rpc.WorkflowsStub(self.channel)
        self.monitor = rpc.MonitorStub(self.channel)
        self.sites_stub = rpc.SitesStub(self.channel)
        self.triggers_stub = rpc.TriggersStub(self.channel)
        self.auth = arpc.AuthStub(self.channel)

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
            raise _error(exc, self.address, self.tls) from None

    # -- workflows -------------------------------------------------------------------------

    def submit(self, workflow: str | Path | dict[str, Any] | specs.WorkflowSpec, project: str = "") -> int:
        """Submit a workflow (a spec file, its parsed document, or a WorkflowSpec) to ``project``
        ('' : the submitter's only project, or none for the owner); its id."""
        if isinstance(workflow, str | Path):
            workflow = specs.load_spec(workflow)
        elif isinstance(workflow, dict):
            workflow = specs.parse_spec(workflow)
        wire = [task_spec_to_wire(task) for task in workflow.tasks]
        for index, message in enumerate(wire):
            check_task_size(message, f"tasks[{index}]")

        def chunks() -> Iterator[pb.SubmitChunk]:
            first, start = True, 0
            while first or start < len(wire):
                end, size = start, 0
                while end < len(wire) and end - start < SUBMIT_CHUNK and (end == start or size + wire[end].ByteSize() <= ENVELOPE_BYTES):
                    size += wire[end].ByteSize()
                    end += 1
                yield pb.SubmitChunk(name=workflow.name if first else "", tasks=wire[start:end], project=project if first else "")
                first, start = False, end

        return self._call(self.workflows.Submit, chunks(), timeout=max(self.timeout_s, len(wire) / 1000)).workflow_id

    def add_tasks(self, workflow_id: int, tasks: Iterable[dict[str, Any] | TaskSpec]) -> int:
        parsed = [t if isinstance(t, TaskSpec) else task_from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
        wire = [task_spec_to_wire(t) for t in parsed]
        for index, message in enumerate(wire):
            check_task_size(message, f"tasks[{index}]")
        request = pb.AddTasksRequest(workflow_id=workflow_id, tasks=wire)
        return self._call(self.workflows.AddTasks, request).added

    def status(self, workflow_id: int) -> dict[str, Any]:
        """The workflow's status and its task counts by state and by site."""
        return workflow_dict(self._call(self.workflows.Get, pb.WorkflowRef(workflow_id=workflow_id)))

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        reply = self._call(self.workflows.List, pb.ListWorkflowsRequest(limit=limit))
        return [workflow_dict(w) for w in reply.workflows]

    def cancel(self, workflow_id: int) -> int:
        return self._call(self.workflows.Cancel, pb.WorkflowRef(workflow_id=workflow_id)).killed

    def tasks(self, workflow_id: int) -> list[dict[str, Any]]:
        reply = self._call(self.workflows.ListTasks, pb.ListTasksRequest(workflow_id=workflow_id))
        return [task_dict(t) for t in reply.tasks]

    def task(self, task_id: str) -> dict[str, Any]:
        return task_dict(self._call(self.workflows.GetTask, pb.TaskRef(task_id=task_id)))

    def kill(self, task_id: str) -> dict[str, Any]:
        return task_dict(self._call(self.workflows.KillTask, pb.TaskRef(task_id=task_id)))

    # -- monitoring ------------------------------------------------------------------------

    def watch(self, workflow_id: int = 0, *, site: str = "", states: Iterable[str] = (), after_id: int = 0, until_done: bool = True,
              timeout_s: float | None = None) -> Iterator[pb.Event]:  # fmt: skip
        """Events as they happen (after replaying those after ``after_id``), until the workflow ends
        (with ``until_done``) or ``timeout_s`` has passed."""
        request = pb.WatchRequest(
            workflow_id=workflow_id, site=site, states=[state_number(s.upper()) for s in states], after_id=after_id, until_done=until_done
        )
        stream = EventStream(self.monitor, request, timeout_s)
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED) or timeout_s is None:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    raise _error(exc, self.address, self.tls) from None
        finally:
            stream.cancel()

    def wait(self, workflow_id: int, timeout_s: float | None = None) -> str:
        """Block until the workflow ends; its final status."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        after = 0
        while True:
            stream = EventStream(self.monitor, pb.WatchRequest(workflow_id=workflow_id, until_done=True, after_id=after),
                                 None if deadline is None else max(0.1, deadline - time.monotonic()))  # fmt: skip
            try:
                for event in stream:
                    after = event.id
                    if event.workflow_status:
                        return event.workflow_status
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ArgoError(f"workflow {workflow_id} did not end within {timeout_s:g} s", exc.code()) from None
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise _error(exc, self.address, self.tls) from None
                time.sleep(1.0)  # the server is restarting: watch again from the last event seen

    def summary(self, workflow_id: int = 0, site: str = "") -> list[dict[str, Any]]:
        reply = self._call(self.monitor.Summary, pb.SummaryRequest(workflow_id=workflow_id, site=site))
        return [{"workflow_id": c.workflow_id, "site": c.site, "state": state_name(c.state), "count": c.count} for c in reply.counts]

    def sites(self) -> list[dict[str, Any]]:
        return [site_dict(s) for s in self._call(self.monitor.ListSites, pb.ListSitesRequest()).sites]

    # -- users and sites -------------------------------------------------------------------

    def add_user(self, name: str, role: str, projects: Iterable[str] = (), ttl_s: float = 0) -> dict[str, Any]:
        """A new token for user ``name`` (owner only); {"token", "expires_at"}: the token is shown once."""
        return token_dict(self._call(self.auth.AddUser, apb.AddUserRequest(name=name, role=role, projects=list(projects), ttl_s=ttl_s)))

    def revoke_user(self, name: str) -> int:
        return self._call(self.auth.RevokeUser, apb.RevokeRequest(name=name)).revoked

    def enrol_site(self, name: str) -> dict[str, Any]:
        """A one-time enrolment token for site ``name`` (owner only)."""
        return token_dict(self._call(self.auth.EnrolSite, apb.EnrolSiteRequest(name=name)))

    def revoke_site(self, name: str) -> int:
        return self._call(self.auth.RevokeSite, apb.RevokeRequest(name=name)).revoked

    def mark_lost(self, name: str) -> int:
        """Nothing runs at the down site ``name`` any more (owner only); how many of its tasks will go elsewhere."""
        return self._call(self.sites_stub.MarkLost, pb.SiteRef(name=name)).held

    def refresh(self) -> dict[str, Any]:
        return token_dict(self._call(self.auth.Refresh, apb.RefreshRequest()))

    def whoami(self) -> dict[str, Any]:
        who = self._call(self.auth.WhoAmI, apb.WhoAmIRequest())
        return {"kind": who.kind, "name": who.name, "role": who.role, "projects": list(who.projects),
                "expires_at": who.expires_at.seconds if who.HasField("expires_at") else None}  # fmt: skip

    # -- filesystem triggers (balsam.argo.triggers) ---------------------------------------

    def add_trigger(
        self, name: str, folder: str | Path, app: str, params: dict[str, Any] | None = None, *, patterns: Iterable[str] = (),
        ignore: Iterable[str] = (), recursive: bool = False, workflow: str = "", site: str = "", tags: dict[str, str] | None = None,
        resources: dict[str, Any] | None = None, settle_s: float = 0.0, skip_existing: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """A rule at the coordinator: each complete file in ``folder`` (on its host) becomes a task of the rule's workflow."""
        request = pb.TriggerRule(
            name=name, folder=str(folder), app=app, params_json=json.dumps(params or {}), patterns=list(patterns), ignore=list(ignore),
            recursive=recursive, workflow=workflow, site=site, tags=dict(tags or {}), resources=_resources(resources or {}),
            settle_s=settle_s, skip_existing=skip_existing,
        )  # fmt: skip
        return trigger_dict(self._call(self.triggers_stub.Add, request))

    def triggers(self) -> list[dict[str, Any]]:
        return [trigger_dict(r) for r in self._call(self.triggers_stub.List, pb.ListTriggersRequest()).rules]

    def remove_trigger(self, name: str) -> int:
        """Remove a rule (its tasks stay); how many files it had counted."""
        return self._call(self.triggers_stub.Remove, pb.TriggerRef(name=name)).files

    def healthy(self, timeout_s: float = 2.0) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _error(exc: grpc.RpcError, address: str, tls: bool) -> ArgoError:
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        details = exc.details() or ""
        return ArgoError(f"cannot reach the Argo server at {address}: {details}{wire_channel.unreachable_hint(details, tls)}", code)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ArgoError(f"not authenticated: {exc.details()} (use `argo login`, $ARGO_TOKEN, or the server's owner token: "
                         "ARGO_DATA=DIR of `argo server start --data DIR`)", code)  # fmt: skip
    return ArgoError(exc.details() or str(code), code)


def _resources(given: dict[str, Any]) -> pb.Resources:
    resources, problems = resources_from(given, "resources.")
    if problems:
        raise ArgoError("; ".join(problems))
    return resources_to_wire(resources)


class EventStream:
    """A Watch call's events one by one, read in batches (``WatchBatches``), or one message per
    event from a server that has no batches yet (it answers UNIMPLEMENTED before any event)."""

    def __init__(self, monitor: rpc.MonitorStub, request: pb.WatchRequest, timeout_s: float | None) -> None:
        self._monitor, self._request, self._timeout_s = monitor, request, timeout_s
        self.call = monitor.WatchBatches(request, timeout=timeout_s)

    def __iter__(self) -> Iterator[pb.Event]:
        try:
            for batch in self.call:
                yield from batch.events
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            self.call = self._monitor.Watch(self._request, timeout=self._timeout_s)
            yield from self.call

    def cancel(self) -> None:
        self.call.cancel()
