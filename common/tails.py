"""The end of a file as text: a job's error log kept in the database (the launcher), the stdout and
stderr shown by a dashboard."""

from __future__ import annotations

import os

TAIL_BYTES = 4000


def tail(path: str, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a file as text, starting at a line boundary when there is one
    ('' when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return ""
    if size > limit and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]
    return data.decode("utf-8", errors="replace").replace("\x00", "")


OUTPUT_FILES = ("job.out", "job.err")  # a job's stdout and stderr, in its work folder


def output_tails(folder: str, limit: int = TAIL_BYTES) -> dict:
    """The tails of a job's stdout and stderr in ``folder``: ``{"folder", "available", "job.out",
    "job.err"}``, a file's text None when it cannot be read (missing, or not ours to read)."""
    found: dict = {"available": False, "folder": folder}
    for name in OUTPUT_FILES:
        path = os.path.join(folder, name)
        found[name] = tail(path, limit) if os.access(path, os.R_OK) else None
        found["available"] = found["available"] or found[name] is not None
    return found
