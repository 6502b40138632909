"""Keeping transfers inside the folders they may write to.

Two checks, for two moments: ``balsam.paths.relative_path_problem`` refuses a name that could reach
outside a job's folder by its spelling alone (absolute, ``..``), when the job is created, before
anything is stored; ``resolve_inside`` refuses a destination whose real path (symbolic links followed) lands
outside its root, when the transfer is about to be made, since links can appear after creation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from balsam.transfer.base import TransferError


def resolve_inside(path: str | Path, roots: Iterable[str | Path], what: str = "destination") -> Path:
    """``path`` with its symbolic links resolved, if it lies inside one of ``roots``; else TransferError.

    The path itself need not exist yet (a file about to be written): its deepest existing folder
    is resolved, so a link anywhere on the way that points out is caught.
    """
    real = Path(os.path.realpath(path))
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    if any(real == root or root in real.parents for root in real_roots):
        return real
    allowed = ", ".join(str(root) for root in real_roots)
    shown = f"{path} (which resolves to {real})" if str(real) != str(path) else str(path)
    raise TransferError(f"{what} {shown} is outside the folders this site may write to ({allowed})")
