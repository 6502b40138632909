"""Which backend moves an item: ``file://`` to ``file://`` is local, ``globus://`` to ``globus://`` is Globus.

A mix cannot be moved by either: Globus reaches this host's files only through a collection, so a
site's own files take part in a Globus transfer as ``globus://SITE_COLLECTION/path``.
"""

from __future__ import annotations

from balsam.transfer.base import Item, Location, TransferError

BACKENDS = {"file": "local", "globus": "globus"}


def backend_for(source: Location, destination: Location) -> str:
    """The name of the backend ("local" | "globus") that moves ``source`` to ``destination``."""
    if source.scheme != destination.scheme:
        raise TransferError(
            f"cannot move {source.uri} to {destination.uri}: a transfer is file:// to file:// (local) or "
            "globus:// to globus:// (Globus); name this site's files as globus://COLLECTION/path "
            "(transfer.globus_endpoint in balsam-site.toml) to move them with Globus"
        )
    try:
        return BACKENDS[source.scheme]
    except KeyError:
        raise TransferError(f"no transfer backend for {source.scheme}:// locations") from None


def task_key(item: Item) -> tuple[str, str, str]:
    """(backend, source collection, destination collection): items with one key can share a task."""
    return backend_for(item.source, item.destination), item.source.endpoint, item.destination.endpoint
