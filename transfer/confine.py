"""Keeping transfers inside the folders they may write to.

Two checks, for two moments: ``balsam.paths.relative_path_problem`` refuses a name that could reach
outside a job's folder by its spelling alone (absolute, ``..``), when the job is created, before
anything is stored; ``resolve_inside`` refuses a path (a destination to write, or a source to read)
whose real path (symbolic links followed) lands outside its roots, when the transfer is about to be
made, since links can appear after creation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from balsam.transfer.base import Location, TransferError


def resolve_inside(path: str | Path, roots: Iterable[str | Path], what: str = "destination", access: str = "write to") -> Path:
    """``path`` with its symbolic links resolved, if it lies inside one of ``roots``; else TransferError.

    The path itself need not exist yet (a file about to be written): its deepest existing folder
    is resolved, so a link anywhere on the way that points out is caught. ``access`` words the
    refusal: "write to" for destinations, "read from" for sources.
    """
    real = Path(os.path.realpath(path))
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    if any(real == root or root in real.parents for root in real_roots):
        return real
    allowed = ", ".join(str(root) for root in real_roots)
    raise TransferError(f"{what} {shown_path(path, real)} is outside the folders this site may {access} ({allowed})")


def shown_path(path: str | Path, real: Path) -> str:
    """``path`` as given, and where it really leads when that differs."""
    return f"{path} (which resolves to {real})" if str(real) != str(path) else str(path)


def remote_inside(location: Location, roots: Iterable[Location], what: str = "destination", access: str = "write to") -> Location:
    """``location`` (on another host) if it lies inside one of ``roots`` at the same ``[USER@]HOST[:PORT]``.

    Checked by spelling only (``Location.parse`` refuses ``..``): links on the other host are that
    host's to guard, by the account the key logs in to (``rrsync`` in its authorized_keys, docs/transfers.md).
    """
    for root in roots:
        if root.endpoint == location.endpoint and (location.path == root.path or location.path.startswith(root.path.rstrip("/") + "/")):
            return location
    allowed = ", ".join(root.uri for root in roots) or "none: set transfer.ssh_roots"
    raise TransferError(f"{what} {location.uri} is outside the folders on other hosts this site may {access} ({allowed})")
