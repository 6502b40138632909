"""The Globus backend: one Globus transfer task per batch of items between two collections.

Decisions:

- Files or folders: no ``recursive`` flag is sent. The Transfer API then detects whether a source
  path is a file or a folder by itself (the SDK omits the flag by default for this reason). A
  trailing "/" could not carry the hint anyway: ``Location`` normalises it away.
- Fatal conditions Globus would retry until the deadline: Globus keeps an ACTIVE task retrying on
  errors it considers possibly transient, even ones that will not heal without a person (a missing
  source file, no permission, a missing consent). Such a task would hang the jobs waiting on it, so
  :meth:`GlobusBackend.poll` cancels it and reports "failed" with the reason at once. A condition is
  fatal when its code (the task's ``nice_status``, or an ``is_error`` event of ``task_event_list``)
  is in :data:`FATAL_CODES`, or is a generic endpoint error whose text matches
  :data:`FATAL_PATTERNS` ("No such file", "Permission denied", ...). Everything else
  (CONNECT_FAILED, timeouts, busy endpoints, ...) is transient: the task stays "active".
- The event list costs one more request, so it is read only when the task reports new faults.
- INACTIVE (expired credentials or a consent that is needed again) is "failed" with a hint to run
  ``balsam globus login``; the task is cancelled too, so it cannot wake up later next to the retry.
- All items of a task must share one source and one destination collection, and the whole task
  succeeds or fails as one (Globus reports no per-item outcome): "done" has no ``failed`` entries.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable, Sequence

import globus_sdk

from balsam.transfer.base import Backend, Item, TaskStatus, TransferError, checked_items

# Codes of Globus task conditions (nice_status, or event codes) that retrying will not fix.
FATAL_CODES = frozenset({
    "FILE_NOT_FOUND", "PERMISSION_DENIED", "CONSENT_REQUIRED", "NOT_A_DIRECTORY", "IS_A_DIRECTORY",
    "FILE_SIZE_CHANGED", "AUTH", "AUTHENTICATION_REQUIRED", "ENDPOINT_NOT_FOUND", "COLLECTION_NOT_FOUND",
})  # fmt: skip
# Generic error codes whose text tells the cause; fatal only when the text matches FATAL_PATTERNS.
GENERIC_CODES = frozenset({"ENDPOINT_ERROR", "GC_NOT_CONNECTED_ERROR", "UNKNOWN", "UNEXPECTED_ERROR"})
FATAL_PATTERNS = re.compile(r"no such file|not found|permission denied|access denied|consent|not a directory|"
                            r"is a directory|quota exceeded", re.IGNORECASE)  # fmt: skip
LOGIN_HINT = "re-run `balsam globus login` (add --collection ID for a collection that needs data_access consent)"
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9 _,.\-]")  # what the Transfer API accepts in a label


class GlobusBackend(Backend):
    """Moves ``globus://`` items with the Globus Transfer service.

    ``client``: a ``globus_sdk.TransferClient``, or a function that makes one (called on first use,
    so an agent can start before anyone has logged in). ``sync_level``: exists | size | mtime |
    checksum (skip files already at the destination by that test). ``deadline_min``: Globus gives up
    a task after that many minutes (0: no deadline).
    """

    name = "globus"

    def __init__(self, client: globus_sdk.TransferClient | Callable[[], globus_sdk.TransferClient], *,
                 sync_level: str = "checksum", deadline_min: int = 0) -> None:  # fmt: skip
        if sync_level not in ("exists", "size", "mtime", "checksum"):
            raise ValueError(f"sync_level must be exists, size, mtime or checksum, got {sync_level!r}")
        self._client = client if isinstance(client, globus_sdk.TransferClient) else None
        self._make_client = None if self._client is not None else client
        self.sync_level = sync_level
        self.deadline_min = deadline_min
        self._faults_seen: dict[str, int] = {}  # task id -> faults count when its events were last read
        self._lock = threading.Lock()

    @classmethod
    def from_token_file(cls, token_file, client_id: str, *, sync_level: str = "checksum",
                        deadline_min: int = 0) -> GlobusBackend:  # fmt: skip
        """A backend on the tokens of ``balsam globus login`` (read on first use, refreshed as needed)."""
        from balsam.transfer.globus_auth import transfer_client

        return cls(lambda: transfer_client(token_file, client_id), sync_level=sync_level, deadline_min=deadline_min)

    @property
    def client(self) -> globus_sdk.TransferClient:
        with self._lock:
            if self._client is None:
                assert self._make_client is not None
                self._client = self._make_client()  # may raise TransferError (not logged in): not kept
            return self._client

    # -- submit --------------------------------------------------------------------------------

    def submit(self, items: Sequence[Item], *, label: str, verify_checksum: bool = False) -> str:
        items = checked_items(items, "globus", "Globus")
        sources = sorted({item.source.endpoint for item in items})
        destinations = sorted({item.destination.endpoint for item in items})
        if len(sources) > 1 or len(destinations) > 1:
            raise TransferError(f"one Globus task has one source and one destination collection; these items come "
                                f"from {', '.join(sources)} and go to {', '.join(destinations)}")  # fmt: skip
        kwargs = {}
        if self.deadline_min > 0:
            kwargs["deadline"] = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=self.deadline_min)
        data = globus_sdk.TransferData(sources[0], destinations[0], label=_label(label), sync_level=self.sync_level,
                                       verify_checksum=verify_checksum, **kwargs)  # fmt: skip
        for item in items:
            data.add_item(item.source.path, item.destination.path)  # no `recursive`: Globus detects folders
        try:
            result = self.client.submit_transfer(data)
        except globus_sdk.GlobusAPIError as exc:
            raise TransferError(_submit_error(exc, sources[0], destinations[0])) from None
        except globus_sdk.NetworkError as exc:
            raise TransferError(f"cannot reach Globus to submit the transfer: {exc}") from None
        return str(result["task_id"])

    # -- poll ----------------------------------------------------------------------------------

    def poll(self, task_id: str) -> TaskStatus:
        try:
            task = self.client.get_task(task_id)
        except TransferError as exc:  # no client: not logged in
            return TaskStatus("failed", str(exc))
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status == 404:
                return TaskStatus("failed", f"unknown Globus task {task_id}")
            if _is_auth_error(exc):
                return TaskStatus("failed", f"Globus refused the credentials while checking task {task_id} "
                                            f"({exc.code}: {exc.message}); {LOGIN_HINT}")  # fmt: skip
            return TaskStatus("active", f"cannot check Globus task {task_id} now ({exc.http_status} {exc.code}); will retry")
        except globus_sdk.NetworkError as exc:
            return TaskStatus("active", f"cannot reach Globus to check task {task_id} ({exc}); will retry")
        status = task.get("status")
        progress = {"bytes_done": int(task.get("bytes_transferred") or 0), "files_done": int(task.get("files_transferred") or 0)}
        if status == "SUCCEEDED":
            self._forget(task_id)
            return TaskStatus("done", **progress)
        if status == "FAILED":
            self._forget(task_id)
            reason = _task_reason(task) or self._last_error_event(task_id) or "no reason given"
            return TaskStatus("failed", f"Globus task {task_id} failed: {reason}", **progress)
        if status == "INACTIVE":
            self._forget(task_id)
            self._cancel_quietly(task_id)
            return TaskStatus("failed", f"Globus task {task_id} is inactive: its credentials expired or a consent is "
                                        f"needed ({_task_reason(task) or 'no detail'}); {LOGIN_HINT}", **progress)  # fmt: skip
        fatal = self._fatal_condition(task_id, task)
        if fatal:
            self._forget(task_id)
            self._cancel_quietly(task_id)
            return TaskStatus("failed", f"Globus task {task_id} cancelled: {fatal}", **progress)
        nice = task.get("nice_status")
        message = "" if nice in (None, "OK", "Queued") else f"Globus is retrying: {nice}"
        return TaskStatus("active", message, **progress)

    def cancel(self, task_id: str) -> None:
        self._forget(task_id)
        try:
            self.client.cancel_task(task_id)
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status in (404, 409) or (exc.code or "").startswith("TaskComplete"):
                return  # already ended, or never existed: nothing to stop
            raise TransferError(f"cannot cancel Globus task {task_id}: {exc.code}: {exc.message}") from None
        except globus_sdk.NetworkError as exc:
            raise TransferError(f"cannot reach Globus to cancel task {task_id}: {exc}") from None

    # -- helpers -------------------------------------------------------------------------------

    def _forget(self, task_id: str) -> None:
        with self._lock:
            self._faults_seen.pop(task_id, None)

    def _cancel_quietly(self, task_id: str) -> None:
        try:
            self.client.cancel_task(task_id)
        except (globus_sdk.GlobusError, TransferError):
            pass  # best effort: the task is reported failed either way

    def _fatal_condition(self, task_id: str, task: globus_sdk.GlobusHTTPResponse) -> str:
        """The reason this ACTIVE task will not succeed by retrying, or ""."""
        nice = task.get("nice_status") or ""
        detail = " ".join(str(task.get(k) or "") for k in ("nice_status_short_description", "nice_status_details"))
        if _is_fatal(nice, detail):
            return _join(nice, detail)
        faults = int(task.get("faults") or 0)
        with self._lock:
            seen = self._faults_seen.get(task_id, 0)
            if faults <= seen:
                return ""
            self._faults_seen[task_id] = faults
        try:
            events = self.client.task_event_list(task_id, limit=20)
        except (globus_sdk.GlobusError, TransferError):
            return ""  # look again at the next fault
        for event in events:
            if event.get("is_error") and _is_fatal(event.get("code") or "", f"{event.get('description') or ''} {event.get('details') or ''}"):
                return _join(event.get("code") or "", f"{event.get('description') or ''} {event.get('details') or ''}")
        return ""

    def _last_error_event(self, task_id: str) -> str:
        try:
            for event in self.client.task_event_list(task_id, limit=20):  # newest first
                if event.get("is_error"):
                    return _join(event.get("code") or "", f"{event.get('description') or ''} {event.get('details') or ''}")
        except (globus_sdk.GlobusError, TransferError):
            pass
        return ""


def _is_fatal(code: str, text: str) -> bool:
    code = code.upper()
    if code in FATAL_CODES:
        return True
    return (code in GENERIC_CODES or not code) and bool(FATAL_PATTERNS.search(text))


def _join(code: str, text: str) -> str:
    text = " ".join(text.split())
    if len(text) > 500:
        text = text[:500] + "..."
    return f"{code}: {text}" if code and text else code or text


def _task_reason(task: globus_sdk.GlobusHTTPResponse) -> str:
    fatal = task.get("fatal_error") or {}
    if fatal:
        return _join(str(fatal.get("code") or ""), str(fatal.get("description") or ""))
    nice = task.get("nice_status") or ""
    text = " ".join(str(task.get(k) or "") for k in ("nice_status_short_description", "nice_status_details"))
    return _join(nice if nice not in ("OK", "Queued") else "", text)


def _label(label: str) -> str:
    return _LABEL_CHARS.sub("_", label)[:128]


def _is_auth_error(exc: globus_sdk.GlobusAPIError) -> bool:
    code = exc.code or ""
    return (exc.http_status in (401, 403) and ("Auth" in code or "Consent" in code or "Token" in code)) or \
        isinstance(exc, globus_sdk.AuthAPIError) or exc.http_status == 401  # fmt: skip


def _submit_error(exc: globus_sdk.GlobusAPIError, source: str, destination: str) -> str:
    code, message = exc.code or "", exc.message or exc.text
    if isinstance(exc, globus_sdk.AuthAPIError):
        return f"cannot refresh the Globus credentials ({code}: {message}); {LOGIN_HINT}"
    if exc.http_status == 404 or "NotFound" in code:
        return (f"Globus cannot find a collection of this transfer (source {source}, destination {destination}): "
                f"{message}; check the collection ids (transfer.globus_endpoint)")  # fmt: skip
    if "ConsentRequired" in code or exc.info.consent_required:
        scopes = ", ".join(exc.info.consent_required.required_scopes or []) if exc.info.consent_required else ""
        return (f"Globus needs your consent before it may use collection {source} or {destination}"
                f"{' (' + scopes + ')' if scopes else ''}; run `balsam globus login --collection ID` for it")  # fmt: skip
    if exc.http_status == 401 or _is_auth_error(exc):
        return f"Globus refused the credentials ({code}: {message}); {LOGIN_HINT}"
    if exc.http_status == 403:
        return f"Globus refused the transfer: permission denied ({code}: {message})"
    return f"Globus refused the transfer ({exc.http_status} {code}): {message}"
