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
from balsam.argo.config import (
    CA_ENV,
    MAX_MESSAGE_BYTES,
    TOKEN_ENV,
    client_address,
    client_config,
    default_data_dir,
    is_loopback,
)
from balsam.argo.wire import state_name, state_number, task_spec_to_wire
from balsam.errors import BalsamError
from balsam.private_files import read_private
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.protos import auth_pb2 as apb
from balsam.protos import auth_pb2_grpc as arpc

SUBMIT_CHUNK = 5000  # tasks per streamed message: well under the server's message size limit


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
    owner = default_data_dir() / "owner-token"
    if is_loopback(address) and owner.exists():
        return read_private(owner).strip()
    return ""


def channel_credentials(ca_file: str | Path | None, cert_file: str | Path | None = None, key_file: str | Path | None = None):
    """TLS credentials trusting ``ca_file`` (with a client certificate when both cert and key are given)."""
    try:
        ca = Path(ca_file).read_bytes()
        cert = Path(cert_file).read_bytes() if cert_file else None
        key = read_private(Path(key_file)).encode() if key_file else None
    except FileNotFoundError as exc:
        raise ArgoError(f"TLS file {exc.filename} not found") from None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor,
              grpc.StreamStreamClientInterceptor):  # fmt: skip
    """Adds ``authorization: Bearer TOKEN`` to every call on the channel, the stubs' and raw ones alike."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _details(self, details):
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self.token}")]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details, metadata) -> None:
        self.method, self.timeout, self.credentials = details.method, details.timeout, details.credentials
        self.wait_for_ready, self.compression, self.metadata = getattr(details, "wait_for_ready", None), getattr(details, "compression", None), metadata


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
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if ca_file:
            self.raw_channel = grpc.secure_channel(self.address, channel_credentials(ca_file, cert_file, key_file), options=options)
        else:
            self.raw_channel = grpc.insecure_channel(self.address, options=options)
        self.token = resolve_token(self.address, token)
        self.channel = grpc.intercept_channel(self.raw_channel, _Bearer(self.token)) if self.token else self.raw_channel
        self.workflows = rpc.WorkflowsStub(self.channel)
        self.monitor = rpc.MonitorStub(self.channel)
        self.sites_stub = rpc.SitesStub(self.channel)
        self.triggers_stub = rpc.TriggersStub(self.channel)
        self.auth = arpc.AuthStub(self.channel)

    def close(self) -> None:
        self.raw_channel.close()

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

    def submit(self, workflow: str | Path | dict[str, Any] | specs.WorkflowSpec, project: str = "") -> int:
        """Submit a workflow (a spec file, its parsed document, or a WorkflowSpec) to ``project``
        ('' : the submitter's only project, or none for the owner); its id."""
        if isinstance(workflow, str | Path):
            workflow = specs.load_spec(workflow)
        elif isinstance(workflow, dict):
            workflow = specs.parse_spec(workflow)
        wire = [task_spec_to_wire(task) for task in workflow.tasks]

        def chunks() -> Iterator[pb.SubmitChunk]:
            for start in range(0, max(1, len(wire)), SUBMIT_CHUNK):
                first = start == 0
                yield pb.SubmitChunk(name=workflow.name if first else "", tasks=wire[start : start + SUBMIT_CHUNK], project=project if first else "")

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

    # -- users and sites -------------------------------------------------------------------

    def add_user(self, name: str, role: str, projects: Iterable[str] = (), ttl_s: float = 0) -> dict[str, Any]:
        """A new token for user ``name`` (owner only); {"token", "expires_at"}: the token is shown once."""
        return _token_dict(self._call(self.auth.AddUser, apb.AddUserRequest(name=name, role=role, projects=list(projects), ttl_s=ttl_s)))

    def revoke_user(self, name: str) -> int:
        return self._call(self.auth.RevokeUser, apb.RevokeRequest(name=name)).revoked

    def enrol_site(self, name: str) -> dict[str, Any]:
        """A one-time enrolment token for site ``name`` (owner only)."""
        return _token_dict(self._call(self.auth.EnrolSite, apb.EnrolSiteRequest(name=name)))

    def revoke_site(self, name: str) -> int:
        return self._call(self.auth.RevokeSite, apb.RevokeRequest(name=name)).revoked

    def refresh(self) -> dict[str, Any]:
        return _token_dict(self._call(self.auth.Refresh, apb.RefreshRequest()))

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
            recursive=recursive, workflow=workflow, site=site, tags=dict(tags or {}), resources=pb.Resources(**(resources or {})),
            settle_s=settle_s, skip_existing=skip_existing,
        )  # fmt: skip
        return _trigger_dict(self._call(self.triggers_stub.Add, request))

    def triggers(self) -> list[dict[str, Any]]:
        return [_trigger_dict(r) for r in self._call(self.triggers_stub.List, pb.ListTriggersRequest()).rules]

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


def _token_dict(t: apb.Token) -> dict[str, Any]:
    return {"token": t.token, "kind": t.kind, "name": t.name, "expires_at": t.expires_at.seconds if t.HasField("expires_at") else None}


def _error(exc: grpc.RpcError, address: str) -> ArgoError:
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        details = exc.details() or ""
        hint = ""
        if "ssl" in details.lower() or "handshake" in details.lower() or "certificate" in details.lower():
            hint = " (a TLS failure: is --ca the authority that signed the server's certificate, is that certificate valid now, and does the server require a client certificate?)"
        return ArgoError(f"cannot reach the Argo server at {address}: {details}{hint}", code)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ArgoError(f"not authenticated: {exc.details()} (use `argo login`, $ARGO_TOKEN, or the server's DATA/owner-token)", code)
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


def _trigger_dict(r: pb.TriggerRule) -> dict[str, Any]:
    return {
        "id": r.id, "name": r.name, "folder": r.folder, "recursive": r.recursive, "patterns": list(r.patterns),
        "ignore": list(r.ignore), "app": r.app, "params": json.loads(r.params_json or "{}"),
        "resources": {f.name: v for f, v in r.resources.ListFields()}, "tags": dict(r.tags), "site": r.site,
        "workflow": r.workflow, "workflow_id": r.workflow_id, "settle_s": r.settle_s, "files": r.files,
    }  # fmt: skip
