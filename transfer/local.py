"""The local backend: copies (or hard-links) files and folders on this host's filesystem.

Tasks run in threads of this process (``transfer/threaded.py``, shared with the rsync backend): task
state lives only in memory, so after the agent restarts the transfer service retries the items.

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
from collections.abc import Callable, Sequence

from balsam.transfer.base import Item, checked_items
from balsam.transfer.threaded import Cancelled, ItemError, Task, ThreadedBackend

CHUNK = 4 << 20  # bytes per read/write (and between two looks at the cancel flag)
PARTIAL = ".balsam-partial-"  # marks a temporary name; the transfer service may sweep old ones


class LocalBackend(ThreadedBackend):
    """Moves ``file://`` items in background threads; ``link``: hard-link when on the same filesystem."""

    name = "local"

    def __init__(self, link: bool = True, workers: int = 4, on_done: Callable[[], None] | None = None) -> None:
        """``on_done`` is called (from a worker thread) whenever a task ends: whoever polls may look now."""
        super().__init__(workers=workers, on_done=on_done)
        self.link = link

    def check(self, items: Sequence[Item]) -> list[Item]:
        return checked_items(items, "file", "local")

    def move_item(self, task: Task, index: int, item: Item) -> None:
        self._move(task, item.source.path, item.destination.path)

    # -- moving one item ------------------------------------------------------------------------

    def _move(self, task: Task, src: str, dst: str) -> None:
        try:
            src_stat = os.stat(src)
        except FileNotFoundError:
            raise ItemError(f"source missing: {src}") from None
        except OSError as exc:
            raise ItemError(f"cannot read source {src}: {exc.strerror or exc}") from None
        is_dir = stat.S_ISDIR(src_stat.st_mode)
        if not is_dir and not stat.S_ISREG(src_stat.st_mode):
            raise ItemError(f"source {src} is neither a regular file nor a folder")
        real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
        if is_dir and (real_dst + "/").startswith(real_src.rstrip("/") + "/") and real_dst != real_src:
            raise ItemError(f"destination {dst} is inside the source folder {src}")
        try:
            if os.path.samefile(src, dst):  # already there (the same path, or a link made by an earlier try)
                self.count(task, files=1 if not is_dir else 0)
                return
        except OSError:
            pass
        parent, base = os.path.split(dst)
        try:
            os.makedirs(parent, exist_ok=True)
            parent_dev = os.stat(parent).st_dev
        except OSError as exc:
            raise ItemError(f"cannot make the destination folder {parent}: {exc.strerror or exc}") from None
        tmp = os.path.join(parent, f".{base}{PARTIAL}{secrets.token_hex(4)}")
        try:
            if is_dir:
                self._copy_tree(task, src, tmp, parent_dev)
            else:
                self._copy_file(task, src, tmp, src_stat, parent_dev)
            put_in_place(tmp, dst)
        except Cancelled:
            remove_partial(tmp)
            raise
        except ItemError:
            remove_partial(tmp)
            raise
        except OSError as exc:
            remove_partial(tmp)
            where = f" ({exc.filename})" if exc.filename and PARTIAL not in str(exc.filename) else ""
            raise ItemError(f"cannot copy {src} to {dst}: {exc.strerror or exc}{where}") from None
        except BaseException:
            remove_partial(tmp)
            raise

    def _copy_tree(self, task: Task, src: str, tmp: str, parent_dev: int) -> None:
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
                    raise Cancelled
                path, target = os.path.join(folder, name), os.path.join(out, name)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(path), target)
                elif stat.S_ISREG(st.st_mode):
                    self._copy_file(task, path, target, st, parent_dev)
                # sockets, fifos and devices are skipped: they hold no data to move
            shutil.copymode(folder, out)

    def _copy_file(self, task: Task, src: str, target: str, src_stat: os.stat_result, parent_dev: int) -> None:
        if self.link and src_stat.st_dev == parent_dev:
            try:
                os.link(src, target)
            except OSError:
                pass  # e.g. a filesystem without hard links, or a file we may not link (protected_hardlinks)
            else:
                self.count(task, nbytes=src_stat.st_size, files=1)  # one inode: nothing to verify
                return
        written = 0
        with open(src, "rb") as fin, open(target, "xb") as fout:
            while chunk := fin.read(CHUNK):
                if task.cancel.is_set():
                    raise Cancelled
                fout.write(chunk)
                written += len(chunk)
                self.count(task, nbytes=len(chunk))
        size = os.stat(target).st_size
        if size != src_stat.st_size or written != size:
            raise ItemError(f"size mismatch: {target} has {size} bytes, the source {src} {src_stat.st_size}")
        if task.verify_checksum:
            if _sha256(src) != _sha256(target):
                raise ItemError(f"checksum mismatch: the copy of {src} differs from the source (sha256)")
        shutil.copystat(src, target)
        self.count(task, files=1)


def put_in_place(tmp: str, dst: str) -> None:
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
    remove_partial(aside)


def link_at_once(src: str, dst: str) -> bool:
    """Hard-link the regular file ``src`` to ``dst`` now, in the caller's thread, as the backend would
    (under a temporary name, renamed into place). False when it cannot be done that way: not a
    regular file, another filesystem, links refused; the backend's threads then move it (and report
    why, when it cannot be moved at all). A link costs a few system calls and its file's size
    nothing, so a job whose inputs are all on this filesystem need not wait for a transfer round."""
    try:
        src_stat = os.stat(src)
        if not stat.S_ISREG(src_stat.st_mode):
            return False
        parent, base = os.path.split(dst)
        os.makedirs(parent, exist_ok=True)
        if os.stat(parent).st_dev != src_stat.st_dev:
            return False
        try:
            if os.path.samefile(src, dst):  # linked already (by an earlier round that did not commit)
                return True
        except FileNotFoundError:
            pass
        tmp = os.path.join(parent, f".{base}{PARTIAL}{secrets.token_hex(4)}")
        os.link(src, tmp)
    except OSError:
        return False
    try:
        put_in_place(tmp, dst)
    except OSError:
        remove_partial(tmp)
        return False
    return True


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remove_partial(path: str) -> None:
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
