"""Serial mode across nodes: rank 0 hands tasks to one worker rank per node, over mpi4py.

The whole launcher runs under ``mpirun -n N+1`` with one rank per node plus one. Rank 0 holds an
`EnsembleExecutor`, which looks to the launcher's loop like a `LocalExecutor` whose `start` also
names a host. Rank i (1..N) runs `worker_main`, serving ``hosts[i-1]`` with a `LocalExecutor`.

Messages (pickled, lower-case mpi4py calls, one tag per kind):

======================  ===============  ==========================================================
tag                     direction        payload
======================  ===============  ==========================================================
``TAG_START``           0 -> worker      one `Task`
``TAG_SIGNAL``          0 -> worker      ``(key, signum)``
``TAG_STOP``            0 -> worker      ``None``: kill what is left, acknowledge, return
``TAG_EXITS``           worker -> 0      ``list[TaskExit]``: every exit one poll of the worker found
``TAG_STOPPED``         worker -> 0      ``list[TaskExit]``: the tasks the stop killed (``-SIGKILL``)
                                         and any exit not yet sent; the acknowledgement of STOP
======================  ===============  ==========================================================

A worker reports the tasks it killed on STOP, so `EnsembleExecutor.close` can return every exit
that `poll` did not: the caller learns the fate of each task it started, even at shutdown. A task
that cannot be started comes back as an exit with ``error`` set; it never brings a worker down.

Both sides send with ``isend`` and keep receiving while a send is in flight. A blocking ``send``
of a message above the MPI library's eager limit (Open MPI 5: 4 KiB within a node, 64 KiB over
TCP) waits for the matching receive, so rank 0 sending a large task while the worker sends
a large batch of exits would leave both stuck in ``send`` for ever.

``mpi4py.MPI`` is imported only inside the functions: importing it initialises MPI, which a
launcher that merely imports this module (MPI mode, one node) must not do. Run the ensemble as
``mpirun ... python -m mpi4py ...`` so an exception on any rank aborts the whole job instead of
leaving the other ranks waiting in ``MPI_Finalize``.
"""

from __future__ import annotations

import select
import signal
import time
from collections.abc import Hashable

from balsam.launcher.executor import LocalExecutor, Task, TaskExit

__all__ = ["MASTER", "TAG_EXITS", "TAG_SIGNAL", "TAG_START", "TAG_STOP", "TAG_STOPPED", "EnsembleExecutor", "worker_main"]

MASTER = 0
TAG_START = 11
TAG_SIGNAL = 12
TAG_STOP = 13
TAG_EXITS = 21
TAG_STOPPED = 22

# A worker has two things to wait for, MPI messages (no file descriptor) and child exits (the
# executor's wakeup pipe); it waits on the pipe this long, then looks for messages again.
WORKER_WAIT_SECONDS = 0.005


class EnsembleExecutor:
    """Rank 0's view of the workers: start, poll, signal and close tasks on named hosts."""

    def __init__(self, comm, hosts: list[str]) -> None:
        if comm.size != len(hosts) + 1:
            raise ValueError(f"{len(hosts)} host(s) need {len(hosts) + 1} ranks (one per host, plus rank 0), not {comm.size}")
        if len(set(hosts)) != len(hosts):
            raise ValueError(f"hosts must be distinct, got {hosts}")
        if comm.rank != MASTER:
            raise ValueError(f"EnsembleExecutor belongs on rank {MASTER}, this is rank {comm.rank}")
        self._comm = comm
        self._rank_of = {host: rank for rank, host in enumerate(hosts, start=1)}
        self._running: dict[Hashable, int] = {}  # key -> worker rank, until its exit is reported
        self._outbox: list = []  # isend requests not yet known to be complete
        self._stopped: set[int] = set()
        self._closed = False

    def start(self, task: Task, host: str) -> float:
        """Send the task to ``host``'s worker; returns the time it was sent. Its exit comes from `poll`."""
        if self._closed:
            raise RuntimeError("the ensemble is closed")
        rank = self._rank_of.get(host)
        if rank is None:
            raise ValueError(f"no worker serves host {host!r}; known hosts: {', '.join(self._rank_of)}")
        if task.key in self._running:
            raise ValueError(f"task {task.key!r} is already running")
        self._send(task, rank, TAG_START)
        self._running[task.key] = rank
        return time.time()

    def poll(self) -> list[TaskExit]:
        """The exits that have arrived from the workers since the last call, each reported once. Never blocks."""
        if self._closed:
            return []
        from mpi4py import MPI

        status = MPI.Status()
        exits: list[TaskExit] = []
        while self._comm.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
            exits += self._receive(status)
        # Testing the requests also lets MPI progress them; finished ones free their buffers.
        self._outbox = [req for req in self._outbox if not req.test()[0]]
        return exits

    def running(self) -> list[Hashable]:
        return list(self._running)

    def signal(self, key: Hashable, signum: int) -> bool:
        """Ask the task's worker to signal its process group; False if its exit has been reported.

        True means the request went out: the task may end before it arrives, and then its exit
        comes from `poll` as usual.
        """
        rank = self._running.get(key)
        if rank is None or self._closed:
            return False
        self._send((key, int(signum)), rank, TAG_SIGNAL)
        return True

    def close(self) -> list[TaskExit]:
        """Stop every worker and wait until each has acknowledged.

        Returns the exits `poll` has not reported, those of the tasks the workers killed included.
        """
        if self._closed:
            return []
        from mpi4py import MPI

        for rank in self._rank_of.values():
            self._send(None, rank, TAG_STOP)
        status = MPI.Status()
        exits: list[TaskExit] = []
        while len(self._stopped) < len(self._rank_of):
            self._comm.probe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
            exits += self._receive(status)
        MPI.Request.waitall(self._outbox)
        self._outbox.clear()
        self._running.clear()
        self._closed = True
        return exits

    def _send(self, payload, rank: int, tag: int) -> None:
        self._outbox.append(self._comm.isend(payload, dest=rank, tag=tag))

    def _receive(self, status) -> list[TaskExit]:
        source, tag = status.Get_source(), status.Get_tag()
        payload = self._comm.recv(source=source, tag=tag)
        if tag == TAG_STOPPED:
            self._stopped.add(source)
        elif tag != TAG_EXITS:
            raise RuntimeError(f"unexpected message with tag {tag} from rank {source}")
        fresh = []
        for ended in payload:
            # Only the worker that holds a running key may end it: that is what makes each exit count once.
            if self._running.get(ended.key) == source:
                del self._running[ended.key]
                fresh.append(ended)
        return fresh


def worker_main(comm) -> None:
    """Serve rank 0 until it sends STOP: run its tasks on this node and report their exits."""
    from mpi4py import MPI

    local = LocalExecutor()
    outbox: list = []
    status = MPI.Status()
    try:
        while True:
            failed: list[TaskExit] = []
            while comm.iprobe(source=MASTER, tag=MPI.ANY_TAG, status=status):
                tag = status.Get_tag()
                payload = comm.recv(source=MASTER, tag=tag)
                if tag == TAG_START:
                    failed += _start(local, payload)
                elif tag == TAG_SIGNAL:
                    local.signal(*payload)
                elif tag == TAG_STOP:
                    outbox.append(comm.isend(failed + _kill_all(local), dest=MASTER, tag=TAG_STOPPED))
                    # Returning with sends in flight could lose them; rank 0 receives until it has our ack.
                    MPI.Request.waitall(outbox)
                    return
                else:
                    raise RuntimeError(f"unexpected message with tag {tag} from rank {MASTER}")
            # Drain before polling: a child that ends after the poll leaves a byte that wakes the select.
            local.drain_wakeups()
            exits = failed + local.poll()
            if exits:
                outbox.append(comm.isend(exits, dest=MASTER, tag=TAG_EXITS))
            outbox = [req for req in outbox if not req.test()[0]]
            select.select([local.wakeup_fd], [], [], WORKER_WAIT_SECONDS)
    finally:
        local.close()


def _start(local: LocalExecutor, task: Task) -> list[TaskExit]:
    """Start a task, turning anything `LocalExecutor.start` raises into this task's exit.

    An exception escaping a worker aborts the whole ensemble, every node's tasks with it.
    """
    now = time.time()
    try:
        local.start(task)
    except Exception as exc:  # noqa: BLE001 - one bad task must not take the others down
        program = task.argv[0] if task.argv else "(empty argv)"
        return [TaskExit(task.key, 127, now, time.time(), f"cannot start {program}: {type(exc).__name__}: {exc}")]
    return []


def _kill_all(local: LocalExecutor) -> list[TaskExit]:
    """SIGKILL every running task and collect the exits, so that rank 0 hears of each one."""
    for key in local.running():
        local.signal(key, signal.SIGKILL)
    exits: list[TaskExit] = []
    while True:
        local.drain_wakeups()
        # Ask before polling: a task leaves running() no later than its exit is queued, so once
        # running() is empty this poll holds every exit; asking after it could miss the last one.
        busy = local.running()
        exits += local.poll()
        if not busy:
            return exits
        select.select([local.wakeup_fd], [], [], 0.05)
