"""A simulated site: the coordinator's real sync protocol, without a database or launchers.

For measuring the coordinator at scales one machine cannot run for real (hundreds of sites) and for
tests of its serving (idle streams must not starve heartbeats). It enrols with a one-time token,
registers, and keeps one Sync stream: Hello, a heartbeat every ``heartbeat_s`` (timed until the
coordinator's lease grant answers it), acknowledgements of what it receives, and, for each
assignment once it is confirmed, the job events a real site sends (CREATED ... RUNNING, then after a
runtime drawn uniformly from 0.5-1.5 x ``run_s``, RUN_DONE ... JOB_FINISHED), numbered. One sent
ahead (``waits_for``) waits as a real site's job does: CREATED -> AWAITING_PARENTS, then from READY
on once the tasks it waits for have finished here. A kill order withdraws its task, as a real site
withdraws the job: one not started never starts, one running reports nothing more (the coordinator
orders kills of the copies of tasks it placed again elsewhere; a site that ignored them would run
those twice).
It does not reconnect: a stream that ends is an error the caller sees (``failure``).
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import deque
from collections.abc import Iterator

import grpc

from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.protos import auth_pb2 as apb
from balsam.protos import auth_pb2_grpc as arpc
from balsam.states import JobState as S
from balsam.wire.channel import OPTIONS, bearer

START = [S.CREATED, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING]
HELD = [S.CREATED, S.AWAITING_PARENTS]  # sent ahead, its parents not finished yet
RELEASED = [S.AWAITING_PARENTS, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING]
END = [S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED]


def site_token(address: str, enrolment: str, name: str) -> str:
    """Exchange a one-time enrolment token (``argo site enrol NAME``) for the site's own."""
    with grpc.insecure_channel(address, options=OPTIONS) as channel:
        return arpc.AuthStub(channel).Enrol(apb.EnrolRequest(site=name), metadata=bearer(enrolment), timeout=30).token


class SimulatedSite:
    def __init__(self, address: str, name: str, token: str, nodes: int = 64, heartbeat_s: float = 1.0, run_s: float = 0.0,
                 apps: tuple[str, ...] = ("run",)) -> None:  # fmt: skip
        self.name, self.nodes, self.heartbeat_s, self.run_s, self.apps = name, nodes, heartbeat_s, run_s, apps
        self.metadata = bearer(token)
        self.channel = grpc.insecure_channel(address, options=OPTIONS)
        self.heartbeat_latencies: list[float] = []  # seconds from a heartbeat sent to its lease grant
        self.assigned: dict[str, pb.Assignment] = {}
        self.finished: list[str] = []
        self.events_sent = 0
        self.first_event_at = self.last_ack_at = 0.0  # perf_counter times: the rate the coordinator applied our events
        self.applied_at: dict[str, float] = {}  # task -> when (time.time()) its JOB_FINISHED was acknowledged
        # Seconds from our reporting tasks finished (room made) to the next assignment, while tasks were
        # still to come: how long placement left our room empty.
        self.refill_gaps: list[float] = []
        self._room_made_at = 0.0
        self.failure: str = ""
        self._out: queue.Queue[pb.SiteEnvelope | None] = queue.Queue()
        self._lock = threading.RLock()
        self._beats: dict[int, float] = {}
        self._outbox: list[pb.SiteMessage] = []  # sent, not yet acknowledged
        self._seq = 0
        self._applied = 0  # the highest coordinator message applied
        self._confirmed = 0
        # (assignment number, task, attempt) not confirmed yet, in number order: a confirmation takes from
        # the left, and a kill order marks its copy (``_killed``) instead of searching for it (thousands
        # wait at a site after a large submission, and a list searched at each kill took the site's thread).
        self._waiting: deque[tuple[int, str, int]] = deque()
        self._held: dict[str, set[str]] = {}  # confirmed tasks sent ahead -> the tasks they still wait for
        self._done: set[str] = set()
        self._killed: set[tuple[str, int]] = set()  # (task, attempt) withdrawn by a kill order
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        rpc.SitesStub(self.channel).Register(pb.RegisterRequest(name=self.name, apps=list(self.apps), nodes=self.nodes,
                                                                scheduler="simulated"), metadata=self.metadata, timeout=30)  # fmt: skip
        self._responses = rpc.SitesStub(self.channel).Sync(self._requests(), metadata=self.metadata)
        for target, name in ((self._read, "read"), (self._beat, "beat")):
            thread = threading.Thread(target=target, name=f"{self.name}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._out.put(None)
        self._responses.cancel()
        for thread in self._threads:
            thread.join(timeout=10)
        self.channel.close()

    # -- the stream --------------------------------------------------------------------------

    def _requests(self) -> Iterator[pb.SiteEnvelope]:
        yield pb.SiteEnvelope(hello=pb.Hello(site=self.name))
        while (envelope := self._out.get()) is not None:
            yield envelope

    def _beat(self) -> None:
        number = 0
        while not self._stop.wait(self.heartbeat_s):
            number += 1
            with self._lock:
                running = len(self.assigned) - len(self.finished)
                self._beats[number] = time.perf_counter()
            self._out.put(pb.SiteEnvelope(heartbeat=pb.Heartbeat(running=running, nodes=self.nodes, number=number)))

    def _read(self) -> None:
        try:
            for envelope in self._responses:
                now = time.perf_counter()
                if envelope.HasField("lease"):
                    with self._lock:
                        sent = self._beats.pop(envelope.lease.heartbeat, None)
                    if sent is not None:
                        self.heartbeat_latencies.append(now - sent)
                if envelope.ack:
                    wall = time.time()
                    with self._lock:
                        for m in self._outbox:
                            if m.seq <= envelope.ack and m.event.to_state == S.JOB_FINISHED.number:
                                self.applied_at[m.event.task_id] = wall
                        self._outbox = [m for m in self._outbox if m.seq > envelope.ack]
                        self.last_ack_at = now
                if envelope.confirmed:
                    self._confirm(envelope.confirmed)
                if envelope.messages:
                    self._receive(envelope.messages)
        except grpc.RpcError as exc:
            if not self._stop.is_set():
                self.failure = f"{exc.code().name}: {exc.details()}"
        else:
            if not self._stop.is_set():
                self.failure = "the coordinator ended the stream"

    def _receive(self, messages) -> None:
        with self._lock:
            if any(m.HasField("assign") for m in messages):
                self.last_assign_at = time.perf_counter()
                if self._room_made_at:
                    self.refill_gaps.append(self.last_assign_at - self._room_made_at)
                    self._room_made_at = 0.0
        for message in messages:
            if message.seq <= self._applied:
                continue
            self._applied = message.seq
            if message.HasField("assign"):
                task = message.assign.task_id
                self.assigned[task] = message.assign
                self._waiting.append((message.seq, task, message.assign.attempt))
            elif message.HasField("kill"):
                self._withdraw(message.kill.task_id, message.kill.attempt)
        self._out.put(pb.SiteEnvelope(ack=self._applied))

    def _withdraw(self, task: str, attempt: int) -> None:
        with self._lock:
            assignment = self.assigned.get(task)
            if assignment is None or assignment.attempt != attempt or task in self._done:
                return
            self._killed.add((task, attempt))
            self._held.pop(task, None)

    def _take_confirmed(self, confirmed: int) -> list[str]:
        """The tasks now confirmed (up to ``confirmed``), taken from those waiting; the caller holds the lock."""
        self._confirmed = max(self._confirmed, confirmed)
        ready = []
        while self._waiting and self._waiting[0][0] <= self._confirmed:
            _, task, attempt = self._waiting.popleft()
            if (task, attempt) not in self._killed and attempt == self.assigned[task].attempt:  # not withdrawn, nor an older copy
                ready.append(task)
        return ready

    def _confirm(self, confirmed: int) -> None:
        with self._lock:  # reported under the lock: a parent's end releases a held task only after its HELD events
            ready = self._take_confirmed(confirmed)
            held = {task: waits for task in ready if (waits := set(self.assigned[task].waits_for) - self._done)}
            self._held.update(held)
            if held:
                self._report(list(held), HELD)
        self._run([task for task in ready if task not in held], START)

    def _run(self, tasks: list[str], path: list[S]) -> None:
        if not tasks:
            return
        self._report(tasks, path)
        if self.run_s:
            threading.Timer(random.uniform(0.5, 1.5) * self.run_s, self._end, args=(tasks,)).start()
        else:
            self._end(tasks)

    def _end(self, tasks: list[str]) -> None:
        with self._lock:
            tasks = [task for task in tasks if (task, self.assigned[task].attempt) not in self._killed]
        self._report(tasks, END)
        with self._lock:
            self.finished.extend(tasks)
            self._done.update(tasks)
            self._room_made_at = self._room_made_at or time.perf_counter()
            released = []
            for task, waits in list(self._held.items()):
                waits.difference_update(tasks)
                if not waits:
                    released.append(task)
                    del self._held[task]
        self._run(released, RELEASED)

    def _report(self, tasks: list[str], path: list[S]) -> None:
        messages = []
        with self._lock:
            for task in tasks:
                attempt = self.assigned[task].attempt
                for before, after in zip(path, path[1:]):
                    self._seq += 1
                    event = pb.TaskEvent(task_id=task, attempt=attempt, job_id=self._seq, from_state=before.number, to_state=after.number)
                    event.at.GetCurrentTime()
                    messages.append(pb.SiteMessage(seq=self._seq, event=event))
            self._outbox.extend(messages)
            self.first_event_at = self.first_event_at or time.perf_counter()
            self.events_sent += len(messages)
            # Queued under the lock: reports of two timers at once must reach the stream in number order.
            for start in range(0, len(messages), 500):
                self._out.put(pb.SiteEnvelope(messages=messages[start:start + 500]))
