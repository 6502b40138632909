"""Which backend moves an item: ``file://`` to ``file://`` is local, ``globus://`` to ``globus://`` is Globus,
``ssh://`` to ``file://`` (or back) is rsync over ssh.

A mix cannot be moved by either: Globus reaches this host's files only through a collection, so a
site's own files take part in a Globus transfer as ``globus://SITE_COLLECTION/path``.
"""

from __future__ import annotations

from balsam.transfer.base import Item, Location, TransferError

BACKENDS = {"file": "local", "globus": "globus"}
RSYNC_PAIRS = {("ssh", "file"), ("file", "ssh")}


def backend_for(source: Location, destination: Location) -> str:
    """The name of the backend ("local" | "globus" | "rsync") that moves ``source`` to ``destination``."""
    if (source.scheme, destination.scheme) in RSYNC_PAIRS:
        return "rsync"
    if source.scheme == destination.scheme == "ssh":
        raise TransferError(f"cannot move {source.uri} to {destination.uri}: rsync moves files between this host and one other, "
                            "not between two other hosts")
    if source.scheme != destination.scheme:
        raise TransferError(
            f"cannot move {source.uri} to {destination.uri}: a transfer is file:// to file:// (local), "
            "globus:// to globus:// (Globus) or between ssh:// and file:// (rsync); name this site's files as globus://COLLECTION/path "
            "(transfer.globus_endpoint in balsam-site.toml) to move them with Globus"
        )
    try:
        return BACKENDS[source.scheme]
    except KeyError:
        raise TransferError(f"no transfer backend for {source.scheme}:// locations") from None


def task_key(item: Item) -> tuple[str, str, str]:
    """(backend, source collection, destination collection): items with one key can share a task."""
    return backend_for(item.source, item.destination), item.source.endpoint, item.destination.endpoint
