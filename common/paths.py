"""Names of files inside a job's or a task's work folder, checked by their spelling alone.

``relative_path_problem`` refuses a name that could reach outside its folder (absolute, ``..``)
when a job or task is created, before anything is stored. The check of real paths, links followed,
right before a transfer is ``balsam.transfer.confine.resolve_inside``.
"""

from __future__ import annotations

import posixpath

MAX_PATH = 4096


def relative_path_problem(path: object, folder: str = "the job's work folder") -> str | None:
    """Why ``path`` cannot name a file inside ``folder``, or None if it can."""
    if not isinstance(path, str) or not path:
        return "must be a non-empty file name"
    if "\0" in path:
        return "contains a NUL character (\\0)"
    if len(path) > MAX_PATH:
        return f"is {len(path)} characters long; at most {MAX_PATH}"
    if path.startswith("/"):
        return f"must be relative to {folder}, not absolute"
    if ".." in path.split("/"):
        return f"must not contain '..': it would reach outside {folder}"
    if path == ".":
        return "names the work folder itself, not a file in it"
    normal = posixpath.normpath(path)
    if normal != path:
        return f"is not in normal form (write {normal!r})"
    return None
