"""Detached daemons (the site agent, the Argo server) found by a locked pid file.

The daemon takes an exclusive ``flock`` on its pid file for its whole life and writes its pid only
once it is ready to serve; whoever can take a shared lock knows no daemon is running, whatever
the file says (a daemon killed with SIGKILL leaves its file behind, but not its lock).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from balsam.errors import BalsamError


def daemon_pid(pid_file: Path) -> int | None:
    """The pid of the running daemon: the holder of the pid file's lock, if anyone holds it."""
    try:
        with open(pid_file) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                content = pid_file.read_text().strip()
                return int(content) if content.isdigit() else None
            return None  # no one holds it: the file is left from a daemon that is gone
    except FileNotFoundError:
        return None


def hold_pid_file(pid_file: Path) -> IO[str] | None:
    """Lock the pid file for this process (None if another holds it); call ``mark_ready`` when serving."""
    handle = open(pid_file, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def mark_ready(handle: IO[str]) -> None:
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()


def release_pid_file(handle: IO[str]) -> None:
    handle.truncate(0)
    handle.close()


def leave_with_parent(parent_pid: int) -> None:
    """In a worker process of a server: exit once ``parent_pid`` is no longer the parent (a server
    killed outright cannot stop its workers), checked each second by a thread of its own."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_daemon(pid_file: Path, log_file: Path, what: str, serve: Callable[[threading.Event, Callable[[], None]], None]) -> int:
    """The ``main`` of every daemon (the site agent, the Argo server): log to ``log_file``, hold the pid
    file, and run ``serve(stop, ready)`` until SIGTERM or SIGINT sets ``stop``. ``serve`` calls
    ``ready()`` once it serves: only then is the pid written, so a pid in the file means a daemon that
    is up. An error of ours ends it with its message on stderr (the daemon's ``.out`` file) and status 1."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=log_file, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    handle = hold_pid_file(pid_file)
    if handle is None:
        print(f"{what} is already running", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve(stop, lambda: mark_ready(handle))
    except BalsamError as exc:
        logging.getLogger("balsam.daemon").error("%s stopped: %s", what, exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        release_pid_file(handle)
    return 0


def start_daemon(argv: list[str], pid_file: Path, out_file: Path, cwd: Path, what: str, tail: Callable[[], str], wait_s: float = 15.0) -> int:
    """Start ``argv`` detached; returns its pid once it holds its pid file (or raises, with ``tail()``)."""
    running = daemon_pid(pid_file)
    if running:
        raise BalsamError(f"{what} is already running (pid {running})")
    with open(out_file, "ab") as out:
        before = out.tell()  # what this start says is after here; earlier runs' lines are not its cause
        process = subprocess.Popen(
            argv, start_new_session=True, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BalsamError(f"{what} exited at once (code {process.returncode}): {_said_since(out_file, before) or tail()}")
        if daemon_pid(pid_file) == process.pid:
            return process.pid
        time.sleep(0.05)
    process.terminate()
    raise BalsamError(f"{what} did not start within {wait_s:g} s: {tail()}")


def stop_daemon(pid_file: Path, wait_s: float = 30.0) -> int | None:
    """Stop the running daemon (SIGTERM, then SIGKILL after ``wait_s``); its pid, or None if none ran."""
    pid = daemon_pid(pid_file)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while daemon_pid(pid_file) == pid:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)
    return pid


def _said_since(out_file: Path, offset: int, lines: int = 8) -> str:
    """What a daemon wrote to its output file after ``offset``, its own error first: on one line."""
    try:
        with open(out_file, "rb") as handle:
            handle.seek(offset)
            said = handle.read().decode(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    errors = [line for line in said if line.startswith("error:")]
    return " / ".join(errors or said[-lines:])


def tail_files(paths: list[Path], lines: int = 8) -> str:
    """The last lines of the given logs, on one line: for error messages about a daemon."""
    text_out = ""
    for path in paths:
        try:
            text_out += path.read_text(errors="replace")
        except FileNotFoundError:
            pass
    return " / ".join(text_out.strip().splitlines()[-lines:]) or "(no output)"
