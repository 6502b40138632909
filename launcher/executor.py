"""Starting, watching and stopping the processes of tasks on this host.

A `Task` is everything needed to start one process: an argument vector (never a shell string),
a working folder (created if missing), extra environment, and files for stdout and stderr.
`LocalExecutor` starts tasks, reports each exit once (`poll`), and signals them. It is what the
launcher uses on its own node in MPI mode (where the argument vector may begin with ``mpirun``),
and what every node's worker uses in serial mode.

Each task is started and then waited for by a thread of a pool: making its folder and output
files and forking are the slow parts of a short task, and the system calls doing them release
the GIL, so several tasks start at once while the launcher's loop goes on with the database.
Exits are queued and `wakeup_fd` becomes readable, so the loop sleeps in `select` instead of
polling. Each task runs in a session of its own, so a signal reaches its whole process tree (an
``mpirun`` and its ranks, a shell script and its children).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from balsam.tails import tail

__all__ = ["Task", "TaskExit", "LocalExecutor", "prepare", "tail"]

_OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_OUTPUT_MODE = 0o666  # narrowed by the launcher's umask: the site's sharing (balsam.site.access) decides
# Threads are made as tasks need them and reused after; this only bounds a runaway.
MAX_THREADS = 4096


@dataclass(frozen=True)
class Task:
    key: Hashable  # how the caller tells its tasks apart, e.g. ("run", job_id)
    argv: list[str]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)  # on top of the launcher's own environment
    stdout: str = os.devnull
    stderr: str = os.devnull


@dataclass(frozen=True)
class TaskExit:
    key: Hashable
    return_code: int  # negative: killed by that signal number
    started: float  # time.time() at start
    ended: float
    error: str = ""  # set when the process could not be started at all

    @property
    def ok(self) -> bool:
        return self.return_code == 0 and not self.error


class LocalExecutor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, subprocess.Popen | None] = {}  # None: still starting
        self._pending_signals: dict[Hashable, int] = {}
        self._exits: list[TaskExit] = []
        self._pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="task")
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)

    @property
    def wakeup_fd(self) -> int:
        """Readable whenever a task has ended since the last `drain_wakeups`."""
        return self._wakeup_r

    def _wake(self) -> None:
        try:
            os.write(self._wakeup_w, b"x")
        except (BlockingIOError, OSError):  # full: the loop is due to wake anyway; closed: shutting down
            pass

    def drain_wakeups(self) -> None:
        try:
            while os.read(self._wakeup_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def start(self, task: Task) -> float:
        """Start the task; returns the time it was handed over. A task that cannot start exits at once, with `error` set."""
        with self._lock:
            if task.key in self._running:
                raise ValueError(f"task {task.key!r} is already running")
            self._running[task.key] = None
        now = time.time()
        self._pool.submit(self._run, task, now)
        return now

    def _run(self, task: Task, handed: float) -> None:
        out = err = -1
        code, error = 127, ""
        started = handed
        try:
            os.makedirs(task.cwd, exist_ok=True)
            out = os.open(task.stdout, _OUTPUT_FLAGS, _OUTPUT_MODE)
            err = os.open(task.stderr, _OUTPUT_FLAGS, _OUTPUT_MODE)
            proc = subprocess.Popen(
                task.argv, cwd=task.cwd, env={**os.environ, **task.env}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as exc:
            proc = None
            error = f"cannot start {exc.filename or task.argv[0]}: {exc.strerror or exc}"
        except Exception as exc:  # a bad argument vector: report it as this task's failure, never lose it
            proc = None
            error = f"cannot start {task.argv[:1]}: {exc}"
        finally:
            for fd in (out, err):
                if fd >= 0:
                    os.close(fd)
        if proc is not None:
            with self._lock:
                self._running[task.key] = proc
                pending = self._pending_signals.pop(task.key, None)
            if pending is not None:
                _killpg(proc.pid, pending)
            code = proc.wait()
        with self._lock:
            self._running.pop(task.key, None)
            self._pending_signals.pop(task.key, None)
            self._exits.append(TaskExit(task.key, code, started, time.time(), error))
        self._wake()

    def poll(self) -> list[TaskExit]:
        """The tasks that ended since the last call, each reported once."""
        with self._lock:
            exits, self._exits = self._exits, []
        return exits

    def running(self) -> list[Hashable]:
        """Tasks handed to `start` whose exit has not been queued yet."""
        with self._lock:
            return list(self._running)

    def signal(self, key: Hashable, signum: int) -> bool:
        """Send ``signum`` to the task's whole process group; False if it is not running."""
        with self._lock:
            if key not in self._running:
                return False
            proc = self._running[key]
            if proc is None:  # still starting: its thread sends it once the process exists
                self._pending_signals[key] = signum
                return True
        return _killpg(proc.pid, signum)

    def close(self) -> None:
        """Kill whatever is still running and wait for every thread."""
        for key in self.running():
            self.signal(key, signal.SIGKILL)
        self._pool.shutdown(wait=True)
        for fd in (self._wakeup_r, self._wakeup_w):
            try:
                os.close(fd)
            except OSError:
                pass


def prepare(cwd: str, *outputs: str) -> None:
    """Make a task's folder and output files ahead of its start, so the start itself only forks.

    Creating them is what makes a tiny task slow on a journaling filesystem (about as long as
    the task's own fork and exec), so the launcher does it while the task waits for a core.
    """
    os.makedirs(cwd, exist_ok=True)
    for path in outputs:
        os.close(os.open(path, _OUTPUT_FLAGS, _OUTPUT_MODE))


def _killpg(pid: int, signum: int) -> bool:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return False
    return True


