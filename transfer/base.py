"""The one interface of every transfer backend, and the locations it moves files between.

A location is a URI: ``file:///abs/path`` (this host's filesystem), ``globus://COLLECTION/path``
(a Globus collection, also called an endpoint) or ``ssh://[USER@]HOST[:PORT]/abs/path`` (a path on
another host, reached by rsync over ssh). A backend takes a batch of (source, destination)
items as one *transfer task*, and is then asked how that task is doing until it has ended; the
caller (the site's transfer service) keeps the task's id in its database, so the backend itself
keeps no state that matters across restarts.
"""

from __future__ import annotations

import abc
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from balsam.errors import BalsamError

SCHEMES = ("file", "globus", "ssh")
# A collection id is a UUID in Globus; other names (legacy "user#endpoint") are letters, digits and a few marks.
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.#@-]{0,199}\Z")
# [USER@]HOST[:PORT] of an ssh:// location. Neither part may start with "-": nothing there can pass for an option of ssh.
SSH_HOST = re.compile(r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})@)?(?P<host>[A-Za-z0-9][A-Za-z0-9.-]{0,252})(?::(?P<port>[0-9]{1,5}))?\Z")


class TransferError(BalsamError):
    """A transfer that cannot be done, or a location that cannot be used, with the reason."""


@dataclass(frozen=True, order=True)
class Location:
    scheme: str  # "file" | "globus" | "ssh"
    endpoint: str  # "" for file; the collection for globus; [USER@]HOST[:PORT] for ssh
    path: str  # absolute, normalised POSIX path

    @classmethod
    def parse(cls, uri: str) -> Location:
        """A location from its URI; a clear TransferError for anything else."""
        if not isinstance(uri, str) or not uri:
            raise TransferError(f"a location must be a URI such as file:///abs/path, globus://COLLECTION/path or ssh://HOST/abs/path, got {uri!r}")
        if "\0" in uri or any(ord(c) < 32 for c in uri):
            raise TransferError(f"location {uri!r} contains control characters")
        parts = urlsplit(uri)
        if parts.scheme not in SCHEMES:
            raise TransferError(f"location {uri!r}: unknown scheme {parts.scheme or '(none)'!r}; use file://, globus:// or ssh://")
        if parts.query or parts.fragment:
            raise TransferError(f"location {uri!r}: a location has no query (?) or fragment (#)")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise TransferError(f"location {uri!r}: the path must be absolute")
        if any(part == ".." for part in path.split("/")):
            raise TransferError(f"location {uri!r}: the path must not contain '..'")
        path = posixpath.normpath(path)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise TransferError(f"location {uri!r}: a file:// location names no host (file:///abs/path)")
            return cls("file", "", path)
        if parts.scheme == "ssh":
            host = unquote(parts.netloc)  # .uri writes "@" and ":" quoted
            if not SSH_HOST.match(host):
                raise TransferError(f"location {uri!r}: ssh://[USER@]HOST[:PORT]/abs/path needs a host name")
            return cls("ssh", host, path)
        endpoint = unquote(parts.netloc)  # a legacy "user#ep" name is written user%23ep (see .uri)
        if not _ENDPOINT.match(endpoint):
            raise TransferError(f"location {uri!r}: globus://COLLECTION/path needs a collection id")
        return cls("globus", endpoint, path)

    @classmethod
    def local(cls, path: str) -> Location:
        if not path.startswith("/"):
            raise TransferError(f"a local location must be an absolute path, got {path!r}")
        return cls("file", "", posixpath.normpath(path))

    @property
    def uri(self) -> str:
        # The endpoint is quoted too: a raw "#" of a legacy "user#ep" name would start a URI fragment.
        return f"{self.scheme}://{quote(self.endpoint, safe='@:' if self.scheme == 'ssh' else '')}{quote(self.path)}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class Item:
    """Copy ``source`` to ``destination`` (a file, or a folder with everything under it)."""

    source: Location
    destination: Location


@dataclass(frozen=True)
class TaskStatus:
    """How a transfer task stands.

    ``state``: "active" (still moving), "done" (ended; the items named in ``failed`` did not make it,
    every other item did) or "failed" (ended, and no item can be counted on; ``message`` says why).
    """

    state: str
    message: str = ""
    failed: dict[int, str] = field(default_factory=dict)  # item index -> reason
    bytes_done: int = 0
    files_done: int = 0

    @property
    def ended(self) -> bool:
        return self.state != "active"


def checked_items(items: Sequence[Item], scheme: str, backend: str) -> list[Item]:
    """``items`` as a list, if there is one at least and every location has ``scheme``."""
    items = list(items)
    if not items:
        raise TransferError("a transfer task needs at least one item")
    for index, item in enumerate(items):
        for end in (item.source, item.destination):
            if end.scheme != scheme:
                raise TransferError(f"item {index}: the {backend} backend moves only {scheme}:// locations, not {end.uri}")
    return items


class Backend(abc.ABC):
    """Moves batches of items; one instance serves many tasks, from the thread of the transfer service."""

    name: str  # "local" | "globus" | "rsync"

    @abc.abstractmethod
    def submit(self, items: Sequence[Item], *, label: str, verify_checksum: bool = False) -> str:
        """Start one transfer task for all ``items``; its id. Raises TransferError if it cannot start."""

    @abc.abstractmethod
    def poll(self, task_id: str) -> TaskStatus:
        """How the task stands now. An id the backend does not know is a "failed" status, not an error."""

    @abc.abstractmethod
    def cancel(self, task_id: str) -> None:
        """Stop the task if it is still running (what was already moved may stay)."""
