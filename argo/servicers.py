"""The gRPC services of the coordinator: thin shells that turn messages into calls on its parts.

Each method takes its request and a ``balsam.argo.rpc.Call``. The plain ones run whole in the
server's pool of threads; ``Watch`` and ``Sync`` are async generators on the server's event loop,
which hand their queries to the pool (``call.run``) and hold no thread while they wait."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import grpc

from balsam.argo import spec as specs
from balsam.argo.batching import HEARTBEAT_GATHER_S, Batcher
from balsam.argo.coordinator import Coordinator
from balsam.argo.feed import Batch, encoded, watch_filter
from balsam.argo.messages import event_message, site_message, task_message, trigger_message, workflow_message
from balsam.argo.rpc import Call, bounded, checks_its_stream
from balsam.errors import BadRequest, SpecError
from balsam.inputs import check_message, has_control, preview
from balsam.protos import argo_pb2 as pb
from balsam.taskspec import TaskSpec
from balsam.wire.convert import params_from_json, resources_given, state_from_wire, state_number, task_spec_from_wire

log = logging.getLogger("balsam.argo.servicers")
WATCH_BATCH = 1000


def event_bytes(event: Any) -> bytes:
    """An event as the Watch stream's message."""
    return event_message(event).SerializeToString()


def batch_element(event: Any) -> bytes:
    """An event as one element of an EventBatch: batches of them are these, one after another."""
    return pb.EventBatch(events=[event_message(event)]).SerializeToString()


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


class WorkflowsService:
    def __init__(self, coordinator: Coordinator) -> None:
        self.store = coordinator.workflows

    def _check(self, call: Call, workflow_id: int, what: str, write: bool = False) -> None:
        caller = call.principal
        if caller is None:
            return
        project = self.store.workflow_project(workflow_id)
        (caller.require_write if write else caller.require_see)(project, what)

    def _check_task(self, call: Call, task_id: str, what: str, write: bool = False) -> None:
        if call.principal is not None:
            self._check(call, self.store.task(task_id)[0].workflow_id, what, write)

    def Submit(self, chunks: Iterator[pb.SubmitChunk], call: Call) -> pb.SubmitReply:
        caller = call.principal
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
        workflow_id, count = self.store.submit(name, _decode(messages), project=project or "", submitted_by=caller.name if caller else "")
        log.info("workflow %d (%s) submitted by %s: %d tasks", workflow_id, name, caller or "anyone", count)
        return pb.SubmitReply(workflow_id=workflow_id, task_count=count)

    def Get(self, request: pb.WorkflowRef, call: Call) -> pb.Workflow:
        self._check(call, request.workflow_id, "see this workflow")
        return workflow_message(*self.store.workflow(request.workflow_id))

    def List(self, request: pb.ListWorkflowsRequest, call: Call) -> pb.ListWorkflowsReply:
        if request.limit < 0:
            raise BadRequest("limit must not be negative")
        caller = call.principal
        if caller is not None:
            caller.require_user("list workflows")
        projects = caller.visible_projects() if caller else None
        return pb.ListWorkflowsReply(workflows=[workflow_message(w, c) for w, c in self.store.workflows(request.limit, projects)])

    def Cancel(self, request: pb.WorkflowRef, call: Call) -> pb.CancelReply:
        self._check(call, request.workflow_id, "cancel this workflow", write=True)
        return pb.CancelReply(killed=self.store.cancel(request.workflow_id))

    def AddTasks(self, request: pb.AddTasksRequest, call: Call) -> pb.AddTasksReply:
        self._check(call, request.workflow_id, "add tasks to this workflow", write=True)
        return pb.AddTasksReply(added=self.store.add_tasks(request.workflow_id, _decode(request.tasks)))

    def GetTask(self, request: pb.TaskRef, call: Call) -> pb.Task:
        self._check_task(call, request.task_id, "see this task")
        return task_message(*self.store.task(request.task_id))

    def ListTasks(self, request: pb.ListTasksRequest, call: Call) -> pb.ListTasksReply:
        self._check(call, request.workflow_id, "see this workflow")
        return pb.ListTasksReply(tasks=[task_message(*row) for row in self.store.tasks(request.workflow_id)])

    def KillTask(self, request: pb.TaskRef, call: Call) -> pb.Task:
        self._check_task(call, request.task_id, "kill this task", write=True)
        task = self.store.kill_task(request.task_id)
        return task_message(*self.store.task(task.id))


class MonitorService:
    def __init__(self, coordinator: Coordinator) -> None:
        self.store = coordinator.workflows
        self.sites = coordinator.sites
        self.feed = coordinator.feed

    async def _follow(self, request: pb.WatchRequest, call: Call) -> AsyncIterator[Batch]:
        """The batches of events the watcher may see, after checking it may (both forms of Watch)."""
        states = [state_from_wire(s, "states[]").value for s in request.states]
        caller = call.principal
        projects = None
        if caller is not None:
            caller.require_user("watch events")
            projects = caller.visible_projects()
        if request.workflow_id:
            project = await call.run(self.store.workflow_project, request.workflow_id)  # NOT_FOUND at once for an unknown one
            if caller is not None:
                caller.require_see(project, "watch this workflow")
            projects = None
        # The coordinator's one reader of the event log (argo/feed.py) serves every watcher.
        which = watch_filter(request.workflow_id, request.site, states, projects)
        async for events in self.feed.follow(request.after_id, which, call.run, WATCH_BATCH):
            if request.until_done and request.workflow_id:
                end = next((i for i, e in enumerate(events) if e.workflow_status), None)
                if end is not None:
                    yield Batch(events[:end + 1])
                    return
            yield events

    async def Watch(self, request: pb.WatchRequest, call: Call) -> AsyncIterator[bytes]:
        async for events in self._follow(request, call):
            for event in events:
                yield encoded(event, event_bytes)

    async def WatchBatches(self, request: pb.WatchRequest, call: Call) -> AsyncIterator[bytes]:
        # An EventBatch's wire form is its elements' forms one after another, so each event is
        # encoded once and a block's batch once for every watcher with the same filter.
        async for events in self._follow(request, call):
            yield events.encoded(batch_element)

    def Summary(self, request: pb.SummaryRequest, call: Call) -> pb.SummaryReply:
        caller = call.principal
        projects = None
        if caller is not None:
            caller.require_user("see summaries")
            projects = caller.visible_projects()
        if request.workflow_id and caller is not None:
            caller.require_see(self.store.workflow_project(request.workflow_id), "see this workflow")
        rows = self.store.summary(request.workflow_id, request.site, projects)
        return pb.SummaryReply(counts=[pb.StateCount(workflow_id=w, site=s, state=state_number(st), count=n) for w, s, st, n in rows])

    def ListSites(self, request: pb.ListSitesRequest, call: Call) -> pb.ListSitesReply:
        if (caller := call.principal) is not None:
            caller.require_user("list sites")
        return pb.ListSitesReply(sites=[site_message(site, assigned) for site, assigned in self.sites.sites()])


class SitesService:
    def __init__(self, coordinator: Coordinator) -> None:
        self.sites = coordinator.sites
        self.sync = coordinator.sync
        self.db = coordinator.db
        self.auth = coordinator.auth
        self.deliveries = coordinator.deliveries
        self._streams: dict[str, object] = {}  # site -> the token of its newest stream
        # The sites' heartbeats, and their envelopes of events and acknowledgements, each written
        # many sites at a time (balsam.argo.batching).
        self._heartbeats = Batcher(self.sync.heartbeats, apart=self.sync.heartbeat, gather_s=HEARTBEAT_GATHER_S)
        self._apply = coordinator.sync_workers.answer_many if coordinator.sync_workers is not None else self.sync.answer_many
        self._envelopes = Batcher(self._answer_many, writers=self.sync.batches_at_once,
                                  weight=lambda item: len(item[1].messages), max_weight=MERGE_MESSAGES)  # fmt: skip

    def Register(self, request: pb.RegisterRequest, call: Call) -> pb.RegisterReply:
        _check_registration(request)
        if (caller := call.principal) is not None:
            caller.require_site(request.name)
        created = self.sites.register(request)
        log.info("site %s %s: apps %s", request.name, "registered" if created else "re-registered", ", ".join(request.apps))
        return pb.RegisterReply(created=created)

    @checks_its_stream
    async def Sync(self, envelopes: AsyncIterator[pb.SiteEnvelope], call: Call) -> AsyncIterator[pb.CoordinatorEnvelope]:
        # Checked here: the hello and the heartbeats alone. The envelopes of events and
        # acknowledgements, most of the stream's bytes, are checked where they are applied
        # (SyncEndpoint.answer_many, in a worker process), before anything of them is.
        first = await anext(envelopes, None)
        if first is None:
            return
        check_message(first, "message 1 of the stream")
        if not first.HasField("hello") or not first.hello.site:
            raise BadRequest("the first envelope of a sync stream must carry Hello with the site's name")
        site = first.hello.site
        caller = call.principal
        if caller is not None:
            caller.require_site(site)
        hello = first.hello
        welcome = await call.run(self.sync.hello, site, hello.last_applied, hello.coordinator, hello.channel_error)
        stream = object()
        self._streams[site] = stream
        self.deliveries.opened(site, welcome.site_applied, afresh=welcome.was_down)
        log.info("site %s connected (it applied %d, we applied %d)%s", site, welcome.site_applied, welcome.applied_here,
                 f"; its last stream failed: {hello.channel_error}" if hello.channel_error else "")  # fmt: skip
        yield pb.CoordinatorEnvelope(welcome=pb.Welcome(last_applied=welcome.applied_here, last_seq=welcome.last_seq,
                                                        coordinator=welcome.coordinator), confirmed=welcome.confirmed)  # fmt: skip

        inbox: asyncio.Queue[Any] = asyncio.Queue()
        inbox.put_nowait(first)
        with self.db.wakened() as wake:  # set by every change of the database, and by each envelope read

            # Heartbeats alone skip the queue: each is answered beside the batch being applied, with
            # the other sites' heartbeats (argo/batching.py; only the sites' rows, no writer of the graph
            # waited for), so a site's lease is renewed on time however long its events wait for their
            # workflows' locks.
            leases: asyncio.Queue[pb.CoordinatorEnvelope] = asyncio.Queue()
            beating: set[asyncio.Task] = set()

            async def beat(envelope: pb.SiteEnvelope) -> None:
                try:
                    grant = await self._heartbeats.answer((site, envelope.heartbeat), call.run)
                except Exception as exc:  # noqa: BLE001 (a bad heartbeat ends the stream, as any bad envelope)
                    inbox.put_nowait(exc)
                else:
                    leases.put_nowait(pb.CoordinatorEnvelope(lease=grant))
                wake.set()

            async def read() -> None:
                try:
                    async for number, envelope in aenumerate(envelopes, 2):
                        if envelope.HasField("heartbeat") and not envelope.messages and not envelope.ack:
                            check_message(envelope, f"message {number} of the stream")
                            task = asyncio.create_task(beat(envelope))
                            beating.add(task)
                            task.add_done_callback(beating.discard)
                            continue
                        if envelope.ack:  # said by the site now, however long its envelope waits here
                            self.deliveries.acknowledged(site, envelope.ack)
                        inbox.put_nowait(envelope)
                        wake.set()
                except Exception as exc:  # noqa: BLE001 (a malformed envelope or a cut connection ends the stream)
                    inbox.put_nowait(exc)
                inbox.put_nowait(None)
                wake.set()

            reader = asyncio.create_task(read(), name=f"sync-{site}")
            sent, seen, recheck_at, ended = welcome.site_applied, -1, 0.0, ""

            async def outgoing() -> pb.CoordinatorEnvelope | None:
                """Our next messages for the site, if a commit queued some since we last looked."""
                nonlocal sent, seen
                # Our outbox changes only with a commit that queued messages to this site: asked again only after one.
                if (version := self.db.outbox_versions.get(site, 0)) == seen:
                    return None
                seen = version
                bodies = await call.run(self.sync.pending, site, sent)
                if not bodies:
                    return None
                messages = [pb.CoordinatorMessage.FromString(body) for body in bodies]
                sent = messages[-1].seq
                seen = -1  # there may be more
                self.deliveries.sent(site, sent)
                return pb.CoordinatorEnvelope(messages=messages)

            carry: pb.SiteEnvelope | None = None  # read, not yet applied (it did not fit the last batch)
            try:
                while self._streams.get(site) is stream:
                    if caller is not None and self.auth is not None and time.monotonic() >= recheck_at:
                        # A stream lasts: its token is checked again (cached) so that a revoked or
                        # expired one ends it; the agent reconnects with its refreshed credential.
                        await call.run(self.auth.authenticate, call.token, "Sites.Sync")
                        recheck_at = time.monotonic() + 1.0
                    wake.clear()
                    while not leases.empty():
                        yield leases.get_nowait()
                    busy = carry is not None or not inbox.empty()
                    while carry is not None or not inbox.empty():
                        # What queued while the last batch was applied is applied as one: one transaction
                        # (and one wait for the workflows' locks) for many envelopes, the latest heartbeat answered.
                        envelope, carry, end = _merged(carry, inbox)
                        if envelope is not None:
                            applying = asyncio.ensure_future(self._envelopes.answer((site, envelope), call.run))
                            # The leases answered meanwhile go out meanwhile, and so do our messages: a site
                            # whose events wait (for their workflows' locks, behind other sites' batches)
                            # still gets its assignments, and says it applied them.
                            while not applying.done():
                                lease, woken = asyncio.ensure_future(leases.get()), asyncio.ensure_future(wake.wait())
                                await asyncio.wait((applying, lease, woken), return_when=asyncio.FIRST_COMPLETED)
                                woken.cancel()
                                if lease.done():
                                    yield lease.result()
                                else:
                                    lease.cancel()
                                if not applying.done():
                                    wake.clear()
                                    if (out := await outgoing()) is not None:
                                        yield out
                            reply = applying.result()
                            if reply is not None:
                                yield reply
                        if end is None:
                            continue
                        if isinstance(end, grpc.RpcError):
                            ended = f"the stream broke: {end}"
                            return
                        if isinstance(end, Exception):
                            raise end
                        ended = "it closed the stream"
                        return
                    if (out := await outgoing()) is not None:
                        yield out
                        continue
                    if not busy:
                        try:
                            await asyncio.wait_for(wake.wait(), 1.0)
                        except TimeoutError:
                            pass
            except asyncio.CancelledError:
                ended = "the call was cancelled"
                raise
            except Exception as exc:
                ended = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                reader.cancel()
                for task in list(beating):
                    task.cancel()
                if self._streams.get(site) is stream:
                    del self._streams[site]
                elif not ended:
                    ended = "a newer stream of the site replaced it"
                log.info("site %s disconnected%s", site, f" ({bounded(ended, 500)})" if ended else "")

    def _answer_many(self, envelopes: Sequence[tuple[str, pb.SiteEnvelope]]) -> list[pb.CoordinatorEnvelope | None | Exception]:
        """What envelopes of several sites' streams ask, done (from a thread of the pool, in one
        transaction, by a worker process or in this one); each one's reply (None: nothing to say) or
        what refused it."""
        return [reply if isinstance(reply, Exception) or reply.ack or reply.confirmed or reply.HasField("lease") else None
                for reply in self._apply(envelopes)]  # fmt: skip

    def MarkLost(self, request: pb.SiteRef, call: Call) -> pb.MarkLostReply:
        if (caller := call.principal) is not None:
            caller.require_owner("mark a site lost")
        held = self.sites.mark_lost(request.name)
        log.warning("site %s marked lost by %s: %d task(s) go elsewhere once its lease has run out", request.name, caller or "the owner", held)
        return pb.MarkLostReply(held=held)


MERGE_MESSAGES = 5000  # the most site messages applied in one transaction


async def aenumerate(items: AsyncIterator[Any], start: int = 0) -> AsyncIterator[tuple[int, Any]]:
    number = start
    async for item in items:
        yield number, item
        number += 1



def _merged(carry: pb.SiteEnvelope | None, inbox: asyncio.Queue) -> tuple[pb.SiteEnvelope | None, pb.SiteEnvelope | None, Any]:
    """The envelopes waiting (``carry`` first), merged into one: their messages in order (at most
    ``MERGE_MESSAGES``, unless one envelope alone holds more), the highest ack, the last heartbeat.
    Returns (merged or None, the envelope left for next time, the stream's end if it came: an
    exception, ``True`` for a clean end, else None)."""
    merged: pb.SiteEnvelope | None = None
    while carry is not None or not inbox.empty():
        envelope = carry if carry is not None else inbox.get_nowait()
        carry = None
        if envelope is None or isinstance(envelope, Exception):
            return merged, None, True if envelope is None else envelope
        if merged is None:
            merged = envelope
            continue
        if merged.messages and len(merged.messages) + len(envelope.messages) > MERGE_MESSAGES:
            return merged, envelope, None
        merged.messages.extend(envelope.messages)
        merged.ack = max(merged.ack, envelope.ack)
        if envelope.HasField("heartbeat"):
            merged.heartbeat.CopyFrom(envelope.heartbeat)
    return merged, None, None


def _require_trigger_owner(call: Call, what: str) -> None:
    caller = call.principal
    if caller is not None:
        caller.require_owner(what)


class TriggersService:
    """Filesystem triggers at the coordinator (``balsam.argo.triggers``)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.store = coordinator.workflows

    def Add(self, request: pb.TriggerRule, call: Call) -> pb.TriggerRule:
        from balsam.argo import triggers

        # The coordinator's own folders, and workflows of no project: the owner's business.
        _require_trigger_owner(call, "add trigger rules")
        params = params_from_json(request.params_json, f"trigger rule {request.name!r}")
        resources = resources_given(request.resources)
        rule = triggers.add_rule(self.store, {
            "name": request.name, "folder": request.folder, "recursive": request.recursive, "patterns": list(request.patterns),
            "ignore": list(request.ignore), "app": request.app, "params": params, "resources": resources, "tags": dict(request.tags),
            "pin": request.site, "workflow": request.workflow, "settle_s": request.settle_s,
        }, skip_existing=request.skip_existing)  # fmt: skip
        log.info("trigger rule %s added: %s -> app %s, workflow %d", rule.name, rule.folder, rule.app, rule.workflow_id)
        return trigger_message(rule, 0)

    def List(self, request: pb.ListTriggersRequest, call: Call) -> pb.ListTriggersReply:
        from balsam.argo import triggers

        _require_trigger_owner(call, "list trigger rules")
        return pb.ListTriggersReply(rules=[trigger_message(rule, files) for rule, files in triggers.rules(self.store)])

    def Remove(self, request: pb.TriggerRef, call: Call) -> pb.RemoveTriggerReply:
        from balsam.argo import triggers

        _require_trigger_owner(call, "remove trigger rules")
        return pb.RemoveTriggerReply(files=triggers.remove_rule(self.store, request.name))
