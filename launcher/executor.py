"""Starting, watching and stopping the processes of tasks on this host.

A `Task` is everything needed to start one process: an argument vector (never a shell string),
a working folder (created if missing), extra environment, and files for stdout and stderr.
`LocalExecutor` starts tasks, reports each exit once (`poll`), and signals them. It is what the
launcher uses on its own node in MPI mode (where the argument vector may begin with ``mpirun``),
and what every node's worker uses in serial mode.

A task is started by the caller's own thread (``subprocess`` forks with ``vfork``, so a start costs
about as much as the exec itself), and no thread waits for it: each child gets a pidfd, all of
them in one epoll set whose descriptor is `wakeup_fd`, so the caller's loop sleeps in ``select``
until some child ends and `poll` reaps exactly the children that did. A thread blocked in
``wait()`` per task, as before, meant a hand-over of the interpreter lock at every start and every
end; with tasks of a millisecond those hand-overs, not the forks, set the rate. Where pidfds are
missing (Linux before 5.3, other systems) one thread per task waits instead, the same interface.
Each task runs in a session of its own, so a signal reaches its whole process tree (an
``mpirun`` and its ranks, a shell script and its children).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from balsam.tails import tail

__all__ = ["Task", "TaskExit", "LocalExecutor", "prepare", "prepare_all", "tail", "pidfds_work"]

_OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_OUTPUT_MODE = 0o666  # narrowed by the launcher's umask: the site's sharing (balsam.site.access) decides
# Waiter threads (without pidfds) are made as tasks need them and reused after; this only bounds a runaway.
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


def pidfds_work() -> bool:
    """Whether this system gives pidfds that epoll can wait on (Linux 5.3 and later)."""
    if not (hasattr(os, "pidfd_open") and hasattr(select, "epoll")):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # ENOSYS on an older kernel, EPERM under some seccomp filters
        return False
    return True


@dataclass
class _Child:
    key: Hashable
    proc: subprocess.Popen
    started: float


class LocalExecutor:
    def __init__(self, use_pidfds: bool | None = None) -> None:
        """``use_pidfds``: None picks pidfds where they work; False forces the waiter threads (its tests use it)."""
        self._lock = threading.Lock()
        self._running: dict[Hashable, _Child] = {}
        self._exits: list[TaskExit] = []
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        self.uses_pidfds = pidfds_work() if use_pidfds is None else use_pidfds
        self._epoll: select.epoll | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._by_fd: dict[int, _Child] = {}
        self._closed = False
        if self.uses_pidfds:
            self._epoll = select.epoll()
            self._epoll.register(self._wakeup_r, select.EPOLLIN)  # exits queued without a child (could not start)
        else:
            self._pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="task")
        # Taken once (a copy per start cost more than the fork): the launcher changes its environment only before this.
        self._env_base = dict(os.environ)
        # Every task's stdin; opened once, as subprocess.DEVNULL would open and close it at each start.
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._programs: dict[tuple[str, str], str] = {}  # (name, PATH) -> the program's path, as found once

    @property
    def wakeup_fd(self) -> int:
        """Readable whenever a task has ended since the last `poll`."""
        return self._epoll.fileno() if self._epoll is not None else self._wakeup_r

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
        started = time.time()
        proc, error = _spawn(task, self._env_base, self._devnull, self._programs)
        if proc is None:
            with self._lock:
                self._exits.append(TaskExit(task.key, 127, started, time.time(), error))
            self._wake()
            return started
        child = _Child(task.key, proc, started)
        with self._lock:
            self._running[task.key] = child
        if self._epoll is not None:
            try:
                fd = os.pidfd_open(proc.pid)
            except OSError:  # out of descriptors: this one child is waited for by a thread
                fd = -1
            if fd >= 0:
                self._by_fd[fd] = child
                self._epoll.register(fd, select.EPOLLIN)
                return started
            if self._pool is None:
                self._pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="task")
        self._pool.submit(self._wait_for, child)
        return started

    def _wait_for(self, child: _Child) -> None:
        self._ended(child, child.proc.wait())
        self._wake()

    def _ended(self, child: _Child, code: int) -> None:
        with self._lock:
            self._running.pop(child.key, None)
            self._exits.append(TaskExit(child.key, code, child.started, time.time()))

    def poll(self) -> list[TaskExit]:
        """The tasks that ended since the last call, each reported once."""
        if self._epoll is not None:
            self.drain_wakeups()
            for fd, _ in self._epoll.poll(0):
                child = self._by_fd.pop(fd, None)
                if child is None:
                    continue  # the wake-up pipe
                self._epoll.unregister(fd)
                os.close(fd)
                self._ended(child, child.proc.wait())  # it has exited: wait() only reaps it
        with self._lock:
            exits, self._exits = self._exits, []
        return exits

    def running(self) -> list[Hashable]:
        """Tasks handed to `start` whose exit has not been queued yet."""
        with self._lock:
            return list(self._running)

    def signal(self, key: Hashable, signum: int) -> bool:
        """Send ``signum`` to the task's whole process group; False if it is not running.

        A child stays unreaped (its pid, hence its group, not reusable) until its exit is queued, so
        the signal never reaches a stranger's group."""
        with self._lock:
            child = self._running.get(key)
        if child is None:
            return False
        return _killpg(child.proc.pid, signum)

    def close(self) -> None:
        """Kill whatever is still running and reap every child. Once: a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        for key in self.running():
            self.signal(key, signal.SIGKILL)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for fd, child in list(self._by_fd.items()):
            child.proc.wait()
            os.close(fd)
        self._by_fd.clear()
        if self._epoll is not None:
            self._epoll.close()
        for fd in (self._wakeup_r, self._wakeup_w, self._devnull):
            try:
                os.close(fd)
            except OSError:
                pass


def _spawn(task: Task, env_base: dict[str, str], stdin: int, programs: dict[tuple[str, str], str]) -> tuple[subprocess.Popen | None, str]:
    """Start the task's process in a session of its own; (process, "") or (None, why it could not start)."""
    out = err = -1
    env = {**env_base, **task.env} if task.env else env_base
    try:
        try:
            os.mkdir(task.cwd)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(task.cwd, exist_ok=True)
        out = os.open(task.stdout, _OUTPUT_FLAGS, _OUTPUT_MODE)
        err = os.open(task.stderr, _OUTPUT_FLAGS, _OUTPUT_MODE)
        program = _program(task.argv[0], env, programs)
        try:
            return _popen(task, program, env, stdin, out, err), ""
        except OSError:
            if program is None:
                raise
            del programs[(task.argv[0], env.get("PATH", os.defpath))]  # gone or changed since it was found: look again
            return _popen(task, _program(task.argv[0], env, programs), env, stdin, out, err), ""
    except OSError as exc:
        return None, f"cannot start {exc.filename or task.argv[0]}: {exc.strerror or exc}"
    except Exception as exc:  # a bad argument vector: report it as this task's failure, never lose it
        return None, f"cannot start {task.argv[:1]}: {exc}"
    finally:
        for fd in (out, err):
            if fd >= 0:
                os.close(fd)


def _popen(task: Task, program: str | None, env: dict[str, str], stdin: int, stdout: int, stderr: int) -> subprocess.Popen:
    return subprocess.Popen(task.argv, executable=program, cwd=task.cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                            start_new_session=True, close_fds=True)  # fmt: skip


def _program(name: str, env: dict[str, str], programs: dict[tuple[str, str], str]) -> str | None:
    """The path of a program named without a folder, looked up in the task's PATH once and kept.

    Given the bare name, ``subprocess`` makes the list of candidates at each start and the child
    tries ``execve`` on each folder of PATH in turn, while the thread that forked waits (``vfork``).
    None: a name with a folder (used as given, from the task's folder), a PATH with a relative
    folder (an empty one is the current folder: the child, not this process, must look there, from
    the task's folder), or a name not found (the start then fails with the usual error). A start
    from a path kept that fails forgets it and looks again (`_spawn`), so a program removed from
    one folder is found in the next."""
    if not name or "/" in name:
        return None
    key = (name, env.get("PATH", os.defpath))
    found = programs.get(key)
    if found is None:
        if not all(os.path.isabs(folder) for folder in key[1].split(os.pathsep)):
            return None
        found = shutil.which(name, path=key[1])
        if found is None:
            return None
        programs[key] = found
    return found


def prepare(cwd: str, *outputs: str) -> None:
    """Make a task's folder and output files ahead of its start, so the start itself only forks.

    Creating them is what makes a tiny task slow on a journaling filesystem (about as long as
    the task's own fork and exec), so the launcher does it while the task waits for a core.
    """
    os.makedirs(cwd, exist_ok=True)
    for path in outputs:
        os.close(os.open(path, _OUTPUT_FLAGS, _OUTPUT_MODE))


def prepare_all(folders: list[str]) -> None:
    """`prepare` each job folder with its ``job.out`` and ``job.err``: one hand-over to a thread for a whole batch."""
    for folder in folders:
        prepare(folder, f"{folder}/job.out", f"{folder}/job.err")


def _killpg(pid: int, signum: int) -> bool:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return False
    return True


