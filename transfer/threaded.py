"""Transfer tasks run by a small pool of threads of this process: the part the local and rsync backends share.

``submit`` returns at once; the items of a task are moved one after another by a worker thread, so
several tasks run side by side. Task state lives only in memory: after the agent restarts, ``poll``
of an old id says the task was lost, and the transfer service retries its items. A subclass says
which locations it moves (``check``) and how one item is moved (``move_item``); an item that cannot
be moved raises ``ItemError``, which fails that item only; ``HostError`` fails the rest of the task too.
"""

from __future__ import annotations

import abc
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from balsam.transfer.base import Backend, Item, TaskStatus, TransferError

KEEP_ENDED_S = 3600.0  # an ended task is forgotten this long after it ended (the caller has seen it by then)


class Cancelled(Exception):
    pass


class ItemError(Exception):
    """One item cannot be moved; the message names the path and the reason."""


class HostError(ItemError):
    """The other host cannot be used at all (unreachable, login refused): the task's remaining items
    fail with the same reason at once, without each waiting for its own refusal."""


@dataclass
class Task:
    items: list[Item]
    verify_checksum: bool
    label: str
    state: str = "active"
    message: str = ""
    failed: dict[int, str] = field(default_factory=dict)
    bytes_done: int = 0
    files_done: int = 0
    ended_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class ThreadedBackend(Backend):
    """Runs each task's items in order in a worker thread; ``on_done`` is called (from that thread) when a task ends."""

    def __init__(self, workers: int = 4, on_done: Callable[[], None] | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"balsam-transfer-{self.name}")
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()

    @abc.abstractmethod
    def check(self, items: Sequence[Item]) -> list[Item]:
        """``items`` as a list if this backend may move every one of them; else TransferError."""

    @abc.abstractmethod
    def move_item(self, task: Task, index: int, item: Item) -> None:
        """Move one item of ``task`` (counting with ``count``); ItemError if it cannot be moved."""

    def end_task(self, task: Task) -> None:
        """Called once a task has ended, in its thread: release what moving its items held open."""

    # -- the Backend interface -----------------------------------------------------------------

    def submit(self, items: Sequence[Item], *, label: str, verify_checksum: bool = False) -> str:
        items = self.check(items)
        task_id = str(uuid.uuid4())
        task = Task(items=items, verify_checksum=verify_checksum, label=label)
        with self._lock:
            self._forget_old()
            self._tasks[task_id] = task
        try:
            self._pool.submit(self._run, task)
        except RuntimeError as exc:  # the pool was shut down
            with self._lock:
                del self._tasks[task_id]
            raise TransferError(f"the {self.name} transfer backend is closed: {exc}") from None
        return task_id

    def poll(self, task_id: str) -> TaskStatus:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return TaskStatus("failed", f"unknown transfer task {task_id} (lost when the agent restarted?)")
            return TaskStatus(task.state, task.message, dict(task.failed), task.bytes_done, task.files_done)

    def cancel(self, task_id: str) -> None:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is not None:
            task.cancel.set()

    def close(self) -> None:
        """Cancel every running task and stop the threads (for the agent's shutdown)."""
        with self._lock:
            for task in self._tasks.values():
                task.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- the worker ----------------------------------------------------------------------------

    def _forget_old(self) -> None:
        # Called with the lock held. Keeps the dict from growing for the agent's whole life.
        now = time.monotonic()
        for task_id in [t for t, task in self._tasks.items() if task.ended_at and now - task.ended_at > KEEP_ENDED_S]:
            del self._tasks[task_id]

    def _run(self, task: Task) -> None:
        try:
            self.move_all(task)
            end_state, message = "done", ""
        except Cancelled:
            end_state, message = "failed", "cancelled"
        except Exception as exc:  # a bug, not a file problem: end the task rather than leave it "active" forever
            end_state, message = "failed", f"{self.name} transfer crashed: {type(exc).__name__}: {exc}"
        finally:
            self.end_task(task)
        with self._lock:
            task.state, task.message, task.ended_at = end_state, message, time.monotonic()
        if self.on_done is not None:
            self.on_done()

    def move_all(self, task: Task) -> None:
        """Move every item of ``task``; by default one after another (a backend may move many at once)."""
        self.move_each(task, range(len(task.items)))

    def move_each(self, task: Task, indexes: Sequence[int]) -> None:
        """Move the items at ``indexes`` one after another; a HostError fails them all from there on."""
        indexes = list(indexes)
        for position, index in enumerate(indexes):
            if task.cancel.is_set():
                raise Cancelled
            try:
                self.move_item(task, index, task.items[index])
            except HostError as exc:
                self.fail(task, indexes[position:], str(exc))
                break
            except ItemError as exc:
                self.fail(task, [index], str(exc))

    def fail(self, task: Task, indexes: Sequence[int], reason: str) -> None:
        with self._lock:
            task.failed.update((index, reason) for index in indexes)

    def count(self, task: Task, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            task.bytes_done += nbytes
            task.files_done += files
