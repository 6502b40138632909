"""The gRPC services of the coordinator: thin shells that turn messages into calls on the store."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from balsam.argo import spec as specs
from balsam.argo.auth import Principal, bearer
from balsam.argo.db.models import Task, TaskEvent, Workflow
from balsam.argo.sites import ArgoCoordinator
from balsam.argo.store import BadRequest
from balsam.argo.wire import state_name, state_number, task_spec_from_wire, timestamp
from balsam.errors import BalsamError
from balsam.inputs import has_control, load_json, preview
from balsam.protos import argo_pb2 as pb

log = logging.getLogger("balsam.argo.servicers")
WATCH_BATCH = 1000
SYNC_BATCH = 500


def workflow_message(workflow: Workflow, counts: list[tuple[str, str, int]]) -> pb.Workflow:
    return pb.Workflow(
        id=workflow.id, name=workflow.name, status=workflow.status, created_at=timestamp(workflow.created_at), project=workflow.project,
        task_count=sum(n for _, _, n in counts),
        counts=[pb.StateCount(workflow_id=workflow.id, site=site, state=state_number(state), count=n) for site, state, n in counts],
    )  # fmt: skip


def task_message(task: Task, parents: list[str]) -> pb.Task:
    return pb.Task(
        id=task.id, workflow_id=task.workflow_id, name=task.name, app=task.app, state=state_number(task.state),
        site=task.site or "", attempt=task.attempt, has_return_code=task.return_code is not None,
        return_code=task.return_code or 0, message=task.message, parents=parents, params_json=json.dumps(task.params),
        sites_tried=list(task.sites_tried or []),
    )  # fmt: skip


def event_message(event: TaskEvent) -> pb.Event:
    return pb.Event(
        id=event.id, task_id=event.task_id, workflow_id=event.workflow_id, site=event.site,
        from_state=state_number(event.from_state), to_state=state_number(event.to_state), at=timestamp(event.at),
        message=event.message, workflow_status=event.workflow_status or "",
    )  # fmt: skip


def _decode(messages) -> list[specs.TaskSpec]:
    """Every task checked as a spec file's would be; one error listing the problems of all of them."""
    tasks, problems = [], []
    for index, message in enumerate(messages):
        try:
            tasks.append(task_spec_from_wire(message, f"tasks[{index}]"))
        except specs.SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise specs.SpecError(problems)
    return tasks


def _state(number: int, where: str) -> str:
    try:
        return state_name(number)
    except BalsamError:
        raise BadRequest(f"{where}: {number} is not a job state") from None


def _check_registration(request: pb.RegisterRequest) -> None:
    """What a site may be called and claim (site names are shown by every listing and end up in task ids)."""
    if not request.name.strip():
        raise BadRequest("a site needs a name")
    if len(request.name) > 200 or has_control(request.name):
        raise BadRequest(f"a site name must not hold control characters and is at most 200 characters long, got {preview(request.name)}")
    for field in ("nodes", "max_tasks"):
        if getattr(request, field) < 0:
            raise BadRequest(f"{field} must be >= 0, got {getattr(request, field)}")


def _check_heartbeat(heartbeat: pb.Heartbeat) -> None:
    """Counts and times a site reports (finite numbers, known enums: checked at the boundary already)."""
    for field in ("backlog", "running", "queue_wait_s", "nodes"):
        if getattr(heartbeat, field) < 0:
            raise BadRequest(f"heartbeat.{field} must be >= 0, got {getattr(heartbeat, field)}")


def _caller(context: grpc.ServicerContext) -> Principal | None:
    """The authenticated caller (None when the server runs without authentication)."""
    return getattr(context, "argo_principal", None)


class Workflows:
    def __init__(self, coordinator: ArgoCoordinator) -> None:
        self.coordinator = coordinator

    def _check(self, context: grpc.ServicerContext, workflow_id: int, what: str, write: bool = False) -> None:
        caller = _caller(context)
        if caller is None:
            return
        project = self.coordinator.workflow_project(workflow_id)
        (caller.require_write if write else caller.require_see)(project, what)

    def _check_task(self, context: grpc.ServicerContext, task_id: str, what: str, write: bool = False) -> None:
        if _caller(context) is not None:
            self._check(context, self.coordinator.task(task_id)[0].workflow_id, what, write)

    def Submit(self, chunks: Iterator[pb.SubmitChunk], context: grpc.ServicerContext) -> pb.SubmitReply:
        caller = _caller(context)
        name, messages, project = "", [], None
        for chunk in chunks:
            if project is None and caller is not None:
                project = caller.project_for_submit(chunk.project)  # refused before the rest is read
            elif project is None:
                project = chunk.project
            name = name or chunk.name
            messages.extend(chunk.tasks)
            if len(messages) > specs.MAX_TASKS:
                raise specs.SpecError([f"a workflow may hold at most {specs.MAX_TASKS} tasks"])
        workflow_id, count = self.coordinator.submit(name, _decode(messages), project=project or "")
        log.info("workflow %d (%s) submitted by %s: %d tasks", workflow_id, name, caller or "anyone", count)
        return pb.SubmitReply(workflow_id=workflow_id, task_count=count)

    def Get(self, request: pb.WorkflowRef, context: grpc.ServicerContext) -> pb.Workflow:
        self._check(context, request.workflow_id, "see this workflow")
        return workflow_message(*self.coordinator.workflow(request.workflow_id))

    def List(self, request: pb.ListWorkflowsRequest, context: grpc.ServicerContext) -> pb.ListWorkflowsReply:
        if request.limit < 0:
            raise BadRequest("limit must not be negative")
        caller = _caller(context)
        if caller is not None:
            caller.require_user("list workflows")
        projects = caller.visible_projects() if caller else None
        return pb.ListWorkflowsReply(workflows=[workflow_message(w, c) for w, c in self.coordinator.workflows(request.limit, projects)])

    def Cancel(self, request: pb.WorkflowRef, context: grpc.ServicerContext) -> pb.CancelReply:
        self._check(context, request.workflow_id, "cancel this workflow", write=True)
        return pb.CancelReply(killed=self.coordinator.cancel(request.workflow_id))

    def AddTasks(self, request: pb.AddTasksRequest, context: grpc.ServicerContext) -> pb.AddTasksReply:
        self._check(context, request.workflow_id, "add tasks to this workflow", write=True)
        return pb.AddTasksReply(added=self.coordinator.add_tasks(request.workflow_id, _decode(request.tasks)))

    def GetTask(self, request: pb.TaskRef, context: grpc.ServicerContext) -> pb.Task:
        self._check_task(context, request.task_id, "see this task")
        return task_message(*self.coordinator.task(request.task_id))

    def ListTasks(self, request: pb.ListTasksRequest, context: grpc.ServicerContext) -> pb.ListTasksReply:
        self._check(context, request.workflow_id, "see this workflow")
        return pb.ListTasksReply(tasks=[task_message(t, p) for t, p in self.coordinator.tasks(request.workflow_id)])

    def KillTask(self, request: pb.TaskRef, context: grpc.ServicerContext) -> pb.Task:
        self._check_task(context, request.task_id, "kill this task", write=True)
        task = self.coordinator.kill_task(request.task_id)
        return task_message(task, [])


class Monitor:
    def __init__(self, coordinator: ArgoCoordinator) -> None:
        self.coordinator = coordinator

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.Event]:
        states = [_state(number, f"states[{i}]") for i, number in enumerate(request.states)]
        caller = _caller(context)
        projects = None
        if caller is not None:
            caller.require_user("watch events")
            projects = caller.visible_projects()
        if request.workflow_id:
            project = self.coordinator.workflow_project(request.workflow_id)  # NOT_FOUND at once for an unknown one
            if caller is not None:
                caller.require_see(project, "watch this workflow")
            projects = None
        after, version = request.after_id, self.coordinator.version
        while context.is_active():
            events = self.coordinator.events_after(after, request.workflow_id, request.site, states, WATCH_BATCH, projects)
            for event in events:
                after = event.id
                yield event_message(event)
                if request.until_done and request.workflow_id and event.workflow_status:
                    return
            if len(events) < WATCH_BATCH:
                version = self.coordinator.wait_for_change(version, 1.0)

    def Summary(self, request: pb.SummaryRequest, context: grpc.ServicerContext) -> pb.SummaryReply:
        caller = _caller(context)
        projects = None
        if caller is not None:
            caller.require_user("see summaries")
            projects = caller.visible_projects()
        if request.workflow_id and caller is not None:
            caller.require_see(self.coordinator.workflow_project(request.workflow_id), "see this workflow")
        rows = self.coordinator.summary(request.workflow_id, request.site, projects)
        return pb.SummaryReply(counts=[pb.StateCount(workflow_id=w, site=s, state=state_number(st), count=n) for w, s, st, n in rows])

    def ListSites(self, request: pb.ListSitesRequest, context: grpc.ServicerContext) -> pb.ListSitesReply:
        if (caller := _caller(context)) is not None:
            caller.require_user("list sites")
        sites = []
        for site, assigned in self.coordinator.sites():
            beat: dict[str, Any] = site.heartbeat or {}
            sites.append(pb.SiteInfo(
                name=site.name, apps=site.apps, nodes=site.nodes, scheduler=site.scheduler, transfer_endpoint=site.transfer_endpoint,
                status=site.status, last_seen=timestamp(site.last_seen_at), backlog=int(beat.get("backlog", 0)),
                running=int(beat.get("running", 0)), queue_wait_s=float(beat.get("queue_wait_s", 0.0)), assigned=assigned,
                max_tasks=site.max_tasks,
            ))  # fmt: skip
        return pb.ListSitesReply(sites=sites)


class Sites:
    def __init__(self, coordinator: ArgoCoordinator) -> None:
        self.coordinator = coordinator
        self._streams: dict[str, object] = {}  # site -> the token of its newest stream

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.RegisterReply:
        _check_registration(request)
        if (caller := _caller(context)) is not None:
            caller.require_site(request.name)
        created = self.coordinator.register(request)
        log.info("site %s %s: apps %s", request.name, "registered" if created else "re-registered", ", ".join(request.apps))
        return pb.RegisterReply(created=created)

    def Sync(self, envelopes: Iterator[pb.SiteEnvelope], context: grpc.ServicerContext) -> Iterator[pb.CoordinatorEnvelope]:
        first = next(envelopes, None)
        if first is None:
            return
        if not first.HasField("hello") or not first.hello.site:
            raise BadRequest("the first envelope of a sync stream must carry Hello with the site's name")
        site = first.hello.site
        caller = _caller(context)
        if caller is not None:
            caller.require_site(site)
        auth = getattr(self.coordinator, "auth", None)
        token = bearer(context)
        # A site cannot have applied what was never sent to it: check before acknowledging (deleting) anything.
        applied_here, last_seq = self.coordinator.hello(site, 0)
        if first.hello.last_applied > last_seq:
            raise BadRequest(f"Hello.last_applied {first.hello.last_applied} is above the highest message sent to site {site!r} ({last_seq})")
        if first.hello.last_applied:
            self.coordinator.acknowledge(site, first.hello.last_applied)
        stream = object()
        self._streams[site] = stream
        log.info("site %s connected (it applied %d, we applied %d)", site, first.hello.last_applied, applied_here)
        yield pb.CoordinatorEnvelope(welcome=pb.Welcome(last_applied=applied_here, last_seq=last_seq))

        inbox: queue.Queue[Any] = queue.Queue()
        wake = threading.Event()
        inbox.put(first)

        def read() -> None:
            try:
                for envelope in envelopes:
                    inbox.put(envelope)
                    wake.set()
            except Exception as exc:  # noqa: BLE001 (a malformed envelope or a cut connection ends the stream)
                inbox.put(exc)
            inbox.put(None)
            wake.set()

        threading.Thread(target=read, name=f"sync-{site}", daemon=True).start()
        self.coordinator.wakers.add(wake)
        sent = first.hello.last_applied
        try:
            while context.is_active() and self._streams.get(site) is stream:
                if caller is not None and auth is not None:
                    # A stream lasts: its token is checked again (cached) so that a revoked or
                    # expired one ends it; the agent reconnects with its refreshed credential.
                    auth.authenticate(token, "Sites.Sync")
                wake.clear()
                busy = False
                while True:
                    try:
                        envelope = inbox.get_nowait()
                    except queue.Empty:
                        break
                    if envelope is None:
                        return
                    if isinstance(envelope, Exception):
                        if isinstance(envelope, grpc.RpcError):
                            return
                        raise envelope
                    busy = True
                    if envelope.ack:
                        if envelope.ack > max(last_seq, sent):
                            raise BadRequest(f"ack {envelope.ack} is above the highest message sent to site {site!r} ({max(last_seq, sent)})")
                        self.coordinator.acknowledge(site, envelope.ack)
                    heartbeat = envelope.heartbeat if envelope.HasField("heartbeat") else None
                    if heartbeat is not None:
                        _check_heartbeat(heartbeat)
                    if envelope.messages or heartbeat is not None:
                        applied = self.coordinator.apply(site, envelope.messages, heartbeat)
                        if envelope.messages:
                            yield pb.CoordinatorEnvelope(ack=applied)
                bodies = self.coordinator.outbox(site, sent, SYNC_BATCH)
                if bodies:
                    messages = [pb.CoordinatorMessage.FromString(body) for body in bodies]
                    sent = messages[-1].seq
                    yield pb.CoordinatorEnvelope(messages=messages)
                    continue
                if not busy:
                    wake.wait(1.0)
        finally:
            self.coordinator.wakers.discard(wake)
            if self._streams.get(site) is stream:
                del self._streams[site]
            log.info("site %s disconnected", site)


def trigger_message(rule, files: int) -> pb.TriggerRule:
    return pb.TriggerRule(
        id=rule.id, name=rule.name, folder=rule.folder, recursive=rule.recursive, patterns=list(rule.patterns),
        ignore=list(rule.ignore), app=rule.app, params_json=json.dumps(rule.params), resources=pb.Resources(**rule.resources),
        tags=dict(rule.tags), site=rule.pin or "", workflow=rule.workflow, settle_s=rule.settle_s,
        workflow_id=rule.workflow_id or 0, files=files, created_at=timestamp(rule.created_at),
    )  # fmt: skip


def _require_trigger_owner(context: grpc.ServicerContext, what: str) -> None:
    caller = _caller(context)
    if caller is not None:
        caller.require_owner(what)


class Triggers:
    """Filesystem triggers at the coordinator (``balsam.argo.triggers``)."""

    def __init__(self, coordinator: ArgoCoordinator) -> None:
        self.coordinator = coordinator

    def Add(self, request: pb.TriggerRule, context: grpc.ServicerContext) -> pb.TriggerRule:
        from balsam.argo import triggers

        # The coordinator's own folders, and workflows of no project: the owner's business.
        _require_trigger_owner(context, "add trigger rules")
        try:
            params = load_json(request.params_json, "params_json") if request.params_json else {}
        except json.JSONDecodeError as exc:
            raise BadRequest(f"params_json is not JSON: {exc}") from None
        if not isinstance(params, dict):
            raise BadRequest("params_json must be a JSON object")
        resources = {f.name: value for f, value in request.resources.ListFields()}
        rule = triggers.add_rule(self.coordinator, {
            "name": request.name, "folder": request.folder, "recursive": request.recursive, "patterns": list(request.patterns),
            "ignore": list(request.ignore), "app": request.app, "params": params, "resources": resources, "tags": dict(request.tags),
            "pin": request.site, "workflow": request.workflow, "settle_s": request.settle_s,
        }, skip_existing=request.skip_existing)  # fmt: skip
        log.info("trigger rule %s added: %s -> app %s, workflow %d", rule.name, rule.folder, rule.app, rule.workflow_id)
        return trigger_message(rule, 0)

    def List(self, request: pb.ListTriggersRequest, context: grpc.ServicerContext) -> pb.ListTriggersReply:
        from balsam.argo import triggers

        _require_trigger_owner(context, "list trigger rules")
        return pb.ListTriggersReply(rules=[trigger_message(rule, files) for rule, files in triggers.rules(self.coordinator)])

    def Remove(self, request: pb.TriggerRef, context: grpc.ServicerContext) -> pb.RemoveTriggerReply:
        from balsam.argo import triggers

        _require_trigger_owner(context, "remove trigger rules")
        return pb.RemoveTriggerReply(files=triggers.remove_rule(self.coordinator, request.name))
