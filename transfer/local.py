"""The local backend: copies (or hard-links) files and folders on this host's filesystem.

``submit`` returns at once; the items of a task are moved one after another by a worker thread of a
small pool, so several tasks run side by side. Task state lives only in memory: after the agent
restarts, ``poll`` of an old id says the task was lost, and the transfer service retries its items.

Every item is written under a temporary name beside its destination (``.NAME.balsam-partial-XXXX``)
and renamed into place with ``os.replace``, so a reader never sees a half-written file or folder and
an agent that dies mid-copy leaves at most a temporary name, never a wrong file under the real name.
(No fsync before the rename: that protects against a crash of the agent, not a power failure of the
host; fsync on every one of thousands of small files would cost more than it is worth here.)

Inside a source folder, symbolic links are recreated as links (not followed), like ``cp -a``; a
source that is itself a link is followed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from balsam.transfer.base import Backend, Item, TaskStatus, TransferError, checked_items

CHUNK = 4 << 20  # bytes per read/write (and between two looks at the cancel flag)
PARTIAL = ".balsam-partial-"  # marks a temporary name; the transfer service may sweep old ones
KEEP_ENDED_S = 3600.0  # an ended task is forgotten this long after it ended (the caller has seen it by then)


class _Cancelled(Exception):
    pass


class _ItemError(Exception):
    """One item cannot be moved; the message names the path and the reason."""


@dataclass
class _Task:
    items: list[Item]
    verify_checksum: bool
    label: str
    state: str = "active"
    message: str = ""
    failed: dict[int, str] = field(default_factory=dict)
    bytes_done: int = 0
    files_done: int = 0
    ended_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class LocalBackend(Backend):
    """Moves ``file://`` items in background threads; ``link``: hard-link when on the same filesystem."""

    name = "local"

    def __init__(self, link: bool = True, workers: int = 4, on_done: Callable[[], None] | None = None) -> None:
        """``on_done`` is called (from a worker thread) whenever a task ends: whoever polls may look now."""
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.link = link
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="balsam-transfer")
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()

    # -- the Backend interface -----------------------------------------------------------------

    def submit(self, items: Sequence[Item], *, label: str, verify_checksum: bool = False) -> str:
        items = checked_items(items, "file", "local")
        task_id = str(uuid.uuid4())
        task = _Task(items=items, verify_checksum=verify_checksum, label=label)
        with self._lock:
            self._forget_old()
            self._tasks[task_id] = task
        try:
            self._pool.submit(self._run, task)
        except RuntimeError as exc:  # the pool was shut down
            with self._lock:
                del self._tasks[task_id]
            raise TransferError(f"the local transfer backend is closed: {exc}") from None
        return task_id

    def poll(self, task_id: str) -> TaskStatus:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return TaskStatus("failed", f"unknown transfer task {task_id} (lost when the agent restarted?)")
            return TaskStatus(task.state, task.message, dict(task.failed), task.bytes_done, task.files_done)

    def cancel(self, task_id: str) -> None:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is not None:
            task.cancel.set()

    def close(self) -> None:
        """Cancel every running task and stop the threads (for the agent's shutdown)."""
        with self._lock:
            for task in self._tasks.values():
                task.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- the worker ----------------------------------------------------------------------------

    def _forget_old(self) -> None:
        # Called with the lock held. Keeps the dict from growing for the agent's whole life.
        now = time.monotonic()
        for task_id in [t for t, task in self._tasks.items() if task.ended_at and now - task.ended_at > KEEP_ENDED_S]:
            del self._tasks[task_id]

    def _run(self, task: _Task) -> None:
        try:
            for index, item in enumerate(task.items):
                if task.cancel.is_set():
                    raise _Cancelled
                try:
                    self._move(task, item.source.path, item.destination.path)
                except _ItemError as exc:
                    with self._lock:
                        task.failed[index] = str(exc)
            end_state, message = "done", ""
        except _Cancelled:
            end_state, message = "failed", "cancelled"
        except Exception as exc:  # a bug, not a file problem: end the task rather than leave it "active" forever
            end_state, message = "failed", f"local transfer crashed: {type(exc).__name__}: {exc}"
        with self._lock:
            task.state, task.message, task.ended_at = end_state, message, time.monotonic()
        if self.on_done is not None:
            self.on_done()

    def _move(self, task: _Task, src: str, dst: str) -> None:
        try:
            src_stat = os.stat(src)
        except FileNotFoundError:
            raise _ItemError(f"source missing: {src}") from None
        except OSError as exc:
            raise _ItemError(f"cannot read source {src}: {exc.strerror or exc}") from None
        is_dir = stat.S_ISDIR(src_stat.st_mode)
        if not is_dir and not stat.S_ISREG(src_stat.st_mode):
            raise _ItemError(f"source {src} is neither a regular file nor a folder")
        real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
        if is_dir and (real_dst + "/").startswith(real_src.rstrip("/") + "/") and real_dst != real_src:
            raise _ItemError(f"destination {dst} is inside the source folder {src}")
        try:
            if os.path.samefile(src, dst):  # already there (the same path, or a link made by an earlier try)
                self._count(task, files=1 if not is_dir else 0)
                return
        except OSError:
            pass
        parent, base = os.path.split(dst)
        try:
            os.makedirs(parent, exist_ok=True)
            parent_dev = os.stat(parent).st_dev
        except OSError as exc:
            raise _ItemError(f"cannot make the destination folder {parent}: {exc.strerror or exc}") from None
        tmp = os.path.join(parent, f".{base}{PARTIAL}{secrets.token_hex(4)}")
        try:
            if is_dir:
                self._copy_tree(task, src, tmp, parent_dev)
            else:
                self._copy_file(task, src, tmp, src_stat, parent_dev)
            self._put_in_place(tmp, dst)
        except _Cancelled:
            _remove(tmp)
            raise
        except _ItemError:
            _remove(tmp)
            raise
        except OSError as exc:
            _remove(tmp)
            where = f" ({exc.filename})" if exc.filename and PARTIAL not in str(exc.filename) else ""
            raise _ItemError(f"cannot copy {src} to {dst}: {exc.strerror or exc}{where}") from None
        except BaseException:
            _remove(tmp)
            raise

    def _put_in_place(self, tmp: str, dst: str) -> None:
        """Rename the finished ``tmp`` to ``dst``; an existing folder (or a file where a folder goes) is swapped."""
        try:
            old_is_dir = stat.S_ISDIR(os.lstat(dst).st_mode)
        except FileNotFoundError:
            old_is_dir = None
        new_is_dir = os.path.isdir(tmp) and not os.path.islink(tmp)
        if old_is_dir is None or (not old_is_dir and not new_is_dir):
            os.replace(tmp, dst)  # atomic: readers see the old file or the new one
            if os.path.lexists(tmp):  # rename(2) does nothing when both names are links to one inode
                os.unlink(tmp)
            return
        # A folder cannot be replaced in one step: move the old one aside, rename the new one in,
        # then delete the old one. Between the two renames the destination is briefly absent.
        parent, base = os.path.split(dst)
        aside = os.path.join(parent, f".{base}.balsam-old-{secrets.token_hex(4)}")
        os.rename(dst, aside)
        try:
            os.rename(tmp, dst)
        except OSError:
            os.rename(aside, dst)  # put the old one back
            raise
        _remove(aside)

    def _copy_tree(self, task: _Task, src: str, tmp: str, parent_dev: int) -> None:
        os.mkdir(tmp)
        for folder, dirs, files in os.walk(src, followlinks=False, onerror=_raise):
            rel = os.path.relpath(folder, src)
            out = tmp if rel == "." else os.path.join(tmp, rel)
            for name in dirs:
                path = os.path.join(folder, name)
                if os.path.islink(path):  # os.walk lists links to folders as folders; keep them as links
                    os.symlink(os.readlink(path), os.path.join(out, name))
                else:
                    os.mkdir(os.path.join(out, name))
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for name in files:
                if task.cancel.is_set():
                    raise _Cancelled
                path, target = os.path.join(folder, name), os.path.join(out, name)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(path), target)
                elif stat.S_ISREG(st.st_mode):
                    self._copy_file(task, path, target, st, parent_dev)
                # sockets, fifos and devices are skipped: they hold no data to move
            shutil.copymode(folder, out)

    def _copy_file(self, task: _Task, src: str, target: str, src_stat: os.stat_result, parent_dev: int) -> None:
        if self.link and src_stat.st_dev == parent_dev:
            try:
                os.link(src, target)
            except OSError:
                pass  # e.g. a filesystem without hard links, or a file we may not link (protected_hardlinks)
            else:
                self._count(task, nbytes=src_stat.st_size, files=1)  # one inode: nothing to verify
                return
        written = 0
        with open(src, "rb") as fin, open(target, "xb") as fout:
            while chunk := fin.read(CHUNK):
                if task.cancel.is_set():
                    raise _Cancelled
                fout.write(chunk)
                written += len(chunk)
                self._count(task, nbytes=len(chunk))
        size = os.stat(target).st_size
        if size != src_stat.st_size or written != size:
            raise _ItemError(f"size mismatch: {target} has {size} bytes, the source {src} {src_stat.st_size}")
        if task.verify_checksum:
            if _sha256(src) != _sha256(target):
                raise _ItemError(f"checksum mismatch: the copy of {src} differs from the source (sha256)")
        shutil.copystat(src, target)
        self._count(task, files=1)

    def _count(self, task: _Task, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            task.bytes_done += nbytes
            task.files_done += files


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _remove(path: str) -> None:
    """Delete a temporary file or tree, quietly (it may not exist yet)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _raise(exc: OSError) -> None:
    raise exc
