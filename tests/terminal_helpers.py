"""Running a command on a real pseudo-terminal (the ``pty`` module), as a user's shell would."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def on_terminal(argv: list[str], env: dict[str, str] | None = None, timeout_s: float = 120, rows: int = 50,
                cols: int = 140, stdout_file: Path | None = None) -> tuple[int, str]:  # fmt: skip
    """Run ``argv`` with its stdin, stdout and stderr on a new pseudo-terminal (stdout into
    ``stdout_file`` instead, when given); its exit status and what it wrote there (codes kept)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    environment = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows), **(env or {})}
    environment.pop("NO_COLOR", None)
    stdout = open(stdout_file, "wb") if stdout_file is not None else None  # noqa: SIM115 (closed below, after the start)
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=stdout or slave, stderr=slave, env=environment, close_fds=True)
    finally:
        os.close(slave)
        if stdout is not None:
            stdout.close()
    out = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv} did not end within {timeout_s:g} s; it wrote: {out.decode(errors='replace')[-3000:]}")
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other end closed (the command ended)
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        os.close(master)
    return proc.returncode, out.decode(errors="replace")


def plain(text: str) -> str:
    """What a reader sees, terminal codes taken out."""
    return ANSI.sub("", text).replace("\r", "")
