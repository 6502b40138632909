"""The gRPC services of the coordinator: thin shells that turn messages into calls on its parts."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from balsam.argo import spec as specs
from balsam.argo.auth import Principal, bearer
from balsam.argo.coordinator import Coordinator
from balsam.argo.messages import event_message, site_message, task_message, trigger_message, workflow_message
from balsam.errors import BadRequest, SpecError
from balsam.inputs import has_control, preview
from balsam.protos import argo_pb2 as pb
from balsam.taskspec import TaskSpec
from balsam.wire.convert import params_from_json, resources_given, state_from_wire, state_number, task_spec_from_wire

log = logging.getLogger("balsam.argo.servicers")
WATCH_BATCH = 1000


def _decode(messages) -> list[TaskSpec]:
    """Every task checked as a spec file's would be; one error listing the problems of all of them."""
    tasks, problems = [], []
    for index, message in enumerate(messages):
        try:
            tasks.append(task_spec_from_wire(message, f"tasks[{index}]"))
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return tasks


def _check_registration(request: pb.RegisterRequest) -> None:
    """What a site may be called and claim (site names are shown by every listing and end up in task ids)."""
    if not request.name.strip():
        raise BadRequest("a site needs a name")
    if len(request.name) > 200 or has_control(request.name):
        raise BadRequest(f"a site name must not hold control characters and is at most 200 characters long, got {preview(request.name)}")
    for field in ("nodes", "max_tasks"):
        if getattr(request, field) < 0:
            raise BadRequest(f"{field} must be >= 0, got {getattr(request, field)}")


def _caller(context: grpc.ServicerContext) -> Principal | None:
    """The authenticated caller (None when the server runs without authentication)."""
    return getattr(context, "argo_principal", None)


class WorkflowsService:
    def __init__(self, coordinator: Coordinator) -> None:
        self.store = coordinator.workflows

    def _check(self, context: grpc.ServicerContext, workflow_id: int, what: str, write: bool = False) -> None:
        caller = _caller(context)
        if caller is None:
            return
        project = self.store.workflow_project(workflow_id)
        (caller.require_write if write else caller.require_see)(project, what)

    def _check_task(self, context: grpc.ServicerContext, task_id: str, what: str, write: bool = False) -> None:
        if _caller(context) is not None:
            self._check(context, self.store.task(task_id)[0].workflow_id, what, write)

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
                raise SpecError([f"a workflow may hold at most {specs.MAX_TASKS} tasks"])
        workflow_id, count = self.store.submit(name, _decode(messages), project=project or "")
        log.info("workflow %d (%s) submitted by %s: %d tasks", workflow_id, name, caller or "anyone", count)
        return pb.SubmitReply(workflow_id=workflow_id, task_count=count)

    def Get(self, request: pb.WorkflowRef, context: grpc.ServicerContext) -> pb.Workflow:
        self._check(context, request.workflow_id, "see this workflow")
        return workflow_message(*self.store.workflow(request.workflow_id))

    def List(self, request: pb.ListWorkflowsRequest, context: grpc.ServicerContext) -> pb.ListWorkflowsReply:
        if request.limit < 0:
            raise BadRequest("limit must not be negative")
        caller = _caller(context)
        if caller is not None:
            caller.require_user("list workflows")
        projects = caller.visible_projects() if caller else None
        return pb.ListWorkflowsReply(workflows=[workflow_message(w, c) for w, c in self.store.workflows(request.limit, projects)])

    def Cancel(self, request: pb.WorkflowRef, context: grpc.ServicerContext) -> pb.CancelReply:
        self._check(context, request.workflow_id, "cancel this workflow", write=True)
        return pb.CancelReply(killed=self.store.cancel(request.workflow_id))

    def AddTasks(self, request: pb.AddTasksRequest, context: grpc.ServicerContext) -> pb.AddTasksReply:
        self._check(context, request.workflow_id, "add tasks to this workflow", write=True)
        return pb.AddTasksReply(added=self.store.add_tasks(request.workflow_id, _decode(request.tasks)))

    def GetTask(self, request: pb.TaskRef, context: grpc.ServicerContext) -> pb.Task:
        self._check_task(context, request.task_id, "see this task")
        return task_message(*self.store.task(request.task_id))

    def ListTasks(self, request: pb.ListTasksRequest, context: grpc.ServicerContext) -> pb.ListTasksReply:
        self._check(context, request.workflow_id, "see this workflow")
        return pb.ListTasksReply(tasks=[task_message(*row) for row in self.store.tasks(request.workflow_id)])

    def KillTask(self, request: pb.TaskRef, context: grpc.ServicerContext) -> pb.Task:
        self._check_task(context, request.task_id, "kill this task", write=True)
        task = self.store.kill_task(request.task_id)
        return task_message(*self.store.task(task.id))


class MonitorService:
    def __init__(self, coordinator: Coordinator) -> None:
        self.store = coordinator.workflows
        self.sites = coordinator.sites
        self.db = coordinator.db

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.Event]:
        states = [state_from_wire(s, "states[]").value for s in request.states]
        caller = _caller(context)
        projects = None
        if caller is not None:
            caller.require_user("watch events")
            projects = caller.visible_projects()
        if request.workflow_id:
            project = self.store.workflow_project(request.workflow_id)  # NOT_FOUND at once for an unknown one
            if caller is not None:
                caller.require_see(project, "watch this workflow")
            projects = None
        after, version = request.after_id, self.db.version
        while context.is_active():
            events = self.store.events_after(after, request.workflow_id, request.site, states, WATCH_BATCH, projects)
            for event in events:
                after = event.id
                yield event_message(event)
                if request.until_done and request.workflow_id and event.workflow_status:
                    return
            if len(events) < WATCH_BATCH:
                version = self.db.wait_for_change(version, 1.0)

    def Summary(self, request: pb.SummaryRequest, context: grpc.ServicerContext) -> pb.SummaryReply:
        caller = _caller(context)
        projects = None
        if caller is not None:
            caller.require_user("see summaries")
            projects = caller.visible_projects()
        if request.workflow_id and caller is not None:
            caller.require_see(self.store.workflow_project(request.workflow_id), "see this workflow")
        rows = self.store.summary(request.workflow_id, request.site, projects)
        return pb.SummaryReply(counts=[pb.StateCount(workflow_id=w, site=s, state=state_number(st), count=n) for w, s, st, n in rows])

    def ListSites(self, request: pb.ListSitesRequest, context: grpc.ServicerContext) -> pb.ListSitesReply:
        if (caller := _caller(context)) is not None:
            caller.require_user("list sites")
        return pb.ListSitesReply(sites=[site_message(site, assigned) for site, assigned in self.sites.sites()])


class SitesService:
    def __init__(self, coordinator: Coordinator) -> None:
        self.sites = coordinator.sites
        self.sync = coordinator.sync
        self.db = coordinator.db
        self.auth = coordinator.auth
        self._streams: dict[str, object] = {}  # site -> the token of its newest stream

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.RegisterReply:
        _check_registration(request)
        if (caller := _caller(context)) is not None:
            caller.require_site(request.name)
        created = self.sites.register(request)
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
        auth = self.auth
        token = bearer(context)
        hello = first.hello
        welcome = self.sync.hello(site, hello.last_applied, hello.coordinator, hello.channel_error)
        stream = object()
        self._streams[site] = stream
        log.info("site %s connected (it applied %d, we applied %d)%s", site, welcome.site_applied, welcome.applied_here,
                 f"; its last stream failed: {hello.channel_error}" if hello.channel_error else "")  # fmt: skip
        yield pb.CoordinatorEnvelope(welcome=pb.Welcome(last_applied=welcome.applied_here, last_seq=welcome.last_seq,
                                                        coordinator=welcome.coordinator), confirmed=welcome.confirmed)  # fmt: skip

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
        self.db.wakers.add(wake)
        sent = welcome.site_applied
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
                    reply = pb.CoordinatorEnvelope()
                    if envelope.ack:
                        reply.confirmed = self.sync.acknowledge(site, envelope.ack)
                    heartbeat = envelope.heartbeat if envelope.HasField("heartbeat") else None
                    if envelope.messages or heartbeat is not None:
                        applied, grant = self.sync.apply(site, envelope.messages, heartbeat)
                        if envelope.messages:
                            reply.ack = applied
                        if grant is not None:
                            reply.lease.CopyFrom(grant)
                    if reply.ack or reply.confirmed or reply.HasField("lease"):
                        yield reply
                bodies = self.sync.pending(site, sent)
                if bodies:
                    messages = [pb.CoordinatorMessage.FromString(body) for body in bodies]
                    sent = messages[-1].seq
                    yield pb.CoordinatorEnvelope(messages=messages)
                    continue
                if not busy:
                    wake.wait(1.0)
        finally:
            self.db.wakers.discard(wake)
            if self._streams.get(site) is stream:
                del self._streams[site]
            log.info("site %s disconnected", site)


    def MarkLost(self, request: pb.SiteRef, context: grpc.ServicerContext) -> pb.MarkLostReply:
        if (caller := _caller(context)) is not None:
            caller.require_owner("mark a site lost")
        held = self.sites.mark_lost(request.name)
        log.warning("site %s marked lost by %s: %d task(s) go elsewhere once its lease has run out", request.name, caller or "the owner", held)
        return pb.MarkLostReply(held=held)


def _require_trigger_owner(context: grpc.ServicerContext, what: str) -> None:
    caller = _caller(context)
    if caller is not None:
        caller.require_owner(what)


class TriggersService:
    """Filesystem triggers at the coordinator (``balsam.argo.triggers``)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.store = coordinator.workflows

    def Add(self, request: pb.TriggerRule, context: grpc.ServicerContext) -> pb.TriggerRule:
        from balsam.argo import triggers

        # The coordinator's own folders, and workflows of no project: the owner's business.
        _require_trigger_owner(context, "add trigger rules")
        params = params_from_json(request.params_json, f"trigger rule {request.name!r}")
        resources = resources_given(request.resources)
        rule = triggers.add_rule(self.store, {
            "name": request.name, "folder": request.folder, "recursive": request.recursive, "patterns": list(request.patterns),
            "ignore": list(request.ignore), "app": request.app, "params": params, "resources": resources, "tags": dict(request.tags),
            "pin": request.site, "workflow": request.workflow, "settle_s": request.settle_s,
        }, skip_existing=request.skip_existing)  # fmt: skip
        log.info("trigger rule %s added: %s -> app %s, workflow %d", rule.name, rule.folder, rule.app, rule.workflow_id)
        return trigger_message(rule, 0)

    def List(self, request: pb.ListTriggersRequest, context: grpc.ServicerContext) -> pb.ListTriggersReply:
        from balsam.argo import triggers

        _require_trigger_owner(context, "list trigger rules")
        return pb.ListTriggersReply(rules=[trigger_message(rule, files) for rule, files in triggers.rules(self.store)])

    def Remove(self, request: pb.TriggerRef, context: grpc.ServicerContext) -> pb.RemoveTriggerReply:
        from balsam.argo import triggers

        _require_trigger_owner(context, "remove trigger rules")
        return pb.RemoveTriggerReply(files=triggers.remove_rule(self.store, request.name))
