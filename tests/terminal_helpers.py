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

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def on_terminal(argv: list[str], env: dict[str, str] | None = None, timeout_s: float = 120, rows: int = 50,
                cols: int = 140, stdin: bytes | None = None) -> tuple[int, str]:  # fmt: skip
    """Run ``argv`` with stdout and stderr on a new pseudo-terminal (stdin too, unless ``stdin``
    bytes are given: then a pipe); its exit status and everything it wrote (terminal codes kept)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    environment = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows), **(env or {})}
    environment.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else slave, stdout=slave, stderr=slave,
                            env=environment, close_fds=True)  # fmt: skip
    os.close(slave)
    if stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
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
