"""Data movement between locations: the local filesystem backend and the Globus backend.

``from balsam.transfer import LocalBackend, backend_for, Location, Item, TaskStatus, TransferError``.
``GlobusBackend`` (``balsam.transfer.globus``) and the login helpers (``balsam.transfer.globus_auth``)
are loaded on first use, so a site that never uses Globus does not pay for importing the SDK.
"""

from __future__ import annotations

from typing import Any

from balsam.transfer.base import Backend, Item, Location, TaskStatus, TransferError
from balsam.transfer.local import LocalBackend
from balsam.transfer.registry import backend_for, task_key

__all__ = ["Backend", "GlobusBackend", "Item", "LocalBackend", "Location", "TaskStatus", "TransferError",
           "backend_for", "task_key"]  # fmt: skip


def __getattr__(name: str) -> Any:  # PEP 562: import globus_sdk only when GlobusBackend is asked for
    if name == "GlobusBackend":
        from balsam.transfer.globus import GlobusBackend

        return GlobusBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
