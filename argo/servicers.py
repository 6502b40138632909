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
from balsam.argo.db.models import Task, TaskEvent, Workflow
from balsam.argo.sites import ArgoCoordinator
from balsam.argo.store import BadRequest
from balsam.argo.wire import state_name, state_number, task_spec_from_wire, timestamp
from balsam.protos import argo_pb2 as pb

log = logging.getLogger("balsam.argo.servicers")
WATCH_BATCH = 1000
SYNC_BATCH = 500


def workflow_message(workflow: Workflow, counts: list[tuple[str, str, int]]) -> pb.Workflow:
    return pb.Workflow(
        id=workflow.id, name=workflow.name, status=workflow.status, created_at=timestamp(workflow.created_at),
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


class Workflows:
    def __init__(self, coordinator: ArgoCoordinator) -> None:
        self.coordinator = coordinator

    def Submit(self, chunks: Iterator[pb.SubmitChunk], context: grpc.ServicerContext) -> pb.SubmitReply:
        name, messages = "", []
        for chunk in chunks:
            name = name or chunk.name
            messages.extend(chunk.tasks)
            if len(messages) > specs.MAX_TASKS:
                raise specs.SpecError([f"a workflow may hold at most {specs.MAX_TASKS} tasks"])
        workflow_id, count = self.coordinator.submit(name, _decode(messages))
        log.info("workflow %d (%s) submitted: %d tasks", workflow_id, name, count)
        return pb.SubmitReply(workflow_id=workflow_id, task_count=count)

    def Get(self, request: pb.WorkflowRef, context: grpc.ServicerContext) -> pb.Workflow:
        return workflow_message(*self.coordinator.workflow(request.workflow_id))

    def List(self, request: pb.ListWorkflowsRequest, context: grpc.ServicerContext) -> pb.ListWorkflowsReply:
        if request.limit < 0:
            raise BadRequest("limit must not be negative")
        return pb.ListWorkflowsReply(workflows=[workflow_message(w, c) for w, c in self.coordinator.workflows(request.limit)])

    def Cancel(self, request: pb.WorkflowRef, context: grpc.ServicerContext) -> pb.CancelReply:
        return pb.CancelReply(killed=self.coordinator.cancel(request.workflow_id))

    def AddTasks(self, request: pb.AddTasksRequest, context: grpc.ServicerContext) -> pb.AddTasksReply:
        return pb.AddTasksReply(added=self.coordinator.add_tasks(request.workflow_id, _decode(request.tasks)))

    def GetTask(self, request: pb.TaskRef, context: grpc.ServicerContext) -> pb.Task:
        return task_message(*self.coordinator.task(request.task_id))

    def ListTasks(self, request: pb.ListTasksRequest, context: grpc.ServicerContext) -> pb.ListTasksReply:
        return pb.ListTasksReply(tasks=[task_message(t, p) for t, p in self.coordinator.tasks(request.workflow_id)])

    def KillTask(self, request: pb.TaskRef, context: grpc.ServicerContext) -> pb.Task:
        task = self.coordinator.kill_task(request.task_id)
        return task_message(task, [])


class Monitor:
    def __init__(self, coordinator: ArgoCoordinator) -> None:
        self.coordinator = coordinator

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.Event]:
        states = [state_name(s) for s in request.states]
        if request.workflow_id:
            self.coordinator.workflow_status(request.workflow_id)  # NOT_FOUND at once for an unknown one
        after, version = request.after_id, self.coordinator.version
        while context.is_active():
            events = self.coordinator.events_after(after, request.workflow_id, request.site, states, WATCH_BATCH)
            for event in events:
                after = event.id
                yield event_message(event)
                if request.until_done and request.workflow_id and event.workflow_status:
                    return
            if len(events) < WATCH_BATCH:
                version = self.coordinator.wait_for_change(version, 1.0)

    def Summary(self, request: pb.SummaryRequest, context: grpc.ServicerContext) -> pb.SummaryReply:
        rows = self.coordinator.summary(request.workflow_id, request.site)
        return pb.SummaryReply(counts=[pb.StateCount(workflow_id=w, site=s, state=state_number(st), count=n) for w, s, st, n in rows])

    def ListSites(self, request: pb.ListSitesRequest, context: grpc.ServicerContext) -> pb.ListSitesReply:
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
        applied_here, last_seq = self.coordinator.hello(site, first.hello.last_applied)
        token = object()
        self._streams[site] = token
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
            while context.is_active() and self._streams.get(site) is token:
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
                        self.coordinator.acknowledge(site, envelope.ack)
                    heartbeat = envelope.heartbeat if envelope.HasField("heartbeat") else None
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
            if self._streams.get(site) is token:
                del self._streams[site]
            log.info("site %s disconnected", site)
