"""The rsync backend: files between this host and another, by rsync over ssh, where Globus is not set up.

A location on another host is ``ssh://[USER@]HOST[:PORT]/abs/path``; an item goes from there to a
``file://`` path here (stage-in) or back (stage-out). One transfer task holds the items of one host
and direction (the transfer service groups them so); its items are moved one after another by one
``rsync`` each, in the threads of ``transfer/threaded.py``, so retries, batching and polling are the
transfer service's, as for the other backends.

ssh runs with every option that matters given on its command line, so neither a prompt nor the
user's defaults decide: ``BatchMode=yes`` (never a password or passphrase prompt: a refused key is
an error, not a hang), ``StrictHostKeyChecking=yes`` against the known_hosts file the site names
(no host key is accepted on first sight), ``IdentitiesOnly=yes`` with the site's identity file, and
a connect timeout. Commands are argument vectors; the one string, rsync's ``-e`` (which rsync
splits itself, not a shell), is made with ``shlex.join``.

What arrives here is made under a temporary name beside its destination and renamed into place
(``local.put_in_place``), so a reader never sees half a file or folder. rsync checks every file it
moved with a whole-file checksum; with ``verify_checksum`` the copy is compared again with the
source, by checksum, before it is put in place (``rsync --checksum --dry-run``). Sent files are
written by the remote rsync under a temporary name and renamed, file by file.

Confinement: the local end of an item is confined by the transfer service, as for the local
backend; the remote end must lie inside one of the site's ``transfer.ssh_roots`` (checked here
and when the job's files are planned, ``confine.remote_inside``).
"""

from __future__ import annotations

import errno
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from balsam.transfer.base import SSH_HOST, Item, Location, TransferError
from balsam.transfer.confine import remote_inside
from balsam.transfer.local import PARTIAL, put_in_place, remove_partial
from balsam.transfer.threaded import Cancelled, HostError, ItemError, Task, ThreadedBackend

# What ssh (or the network under it) says when the other host cannot be reached at all.
UNREACHABLE = ("Connection refused", "No route to host", "Connection timed out", "Could not resolve hostname",
               "Network is unreachable", "Connection closed by", "Connection reset", "timed out")  # fmt: skip
RSYNC_MISSING = (23, 24)  # rsync's "some files could not be transferred" / "vanished"


@dataclass(frozen=True)
class SshOptions:
    """How ssh logs in to other hosts: the site's identity file and known_hosts file, both required."""

    identity: str
    known_hosts: str
    connect_timeout_s: float = 10.0

    def check(self) -> None:
        for setting, path in (("transfer.ssh_identity", self.identity), ("transfer.ssh_known_hosts", self.known_hosts)):
            if not path:
                raise TransferError(f"the rsync backend needs {setting} (in balsam-site.toml) to log in to other hosts")
            if not os.path.isfile(path):
                raise TransferError(f"{setting} names {path}, which is not a file")

    def argv(self, port: str | None) -> list[str]:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise TransferError("the rsync backend needs ssh on PATH (Debian: apt-get install openssh-client)")
        argv = [ssh, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no", "-o", "IdentitiesOnly=yes",
                "-i", self.identity, "-o", f"ConnectTimeout={max(1, round(self.connect_timeout_s))}"]  # fmt: skip
        return argv + (["-p", port] if port else [])


class RsyncBackend(ThreadedBackend):
    """Moves items between ``ssh://`` locations and this host's ``file://`` paths, inside ``roots`` on the other hosts."""

    name = "rsync"

    def __init__(self, ssh: SshOptions, roots: Iterable[str], workers: int = 4, io_timeout_s: int = 120,
                 on_done: Callable[[], None] | None = None) -> None:  # fmt: skip
        ssh.check()
        self.rsync = shutil.which("rsync")
        if self.rsync is None:
            raise TransferError("the rsync backend needs rsync on PATH, here and on the other hosts (Debian: apt-get install rsync)")
        self.ssh = ssh
        self.roots = ssh_roots(roots)
        self.io_timeout_s = io_timeout_s
        # One ssh connection per task and host, shared by the task's rsync runs (ssh's ControlMaster):
        # (task, [USER@]HOST[:PORT]) -> (the master ssh, the private folder of its socket).
        self._masters: dict[tuple[int, str], tuple[subprocess.Popen, str]] = {}
        self._masters_lock = threading.Lock()
        super().__init__(workers=workers, on_done=on_done)

    def check(self, items: Sequence[Item]) -> list[Item]:
        items = list(items)
        if not items:
            raise TransferError("a transfer task needs at least one item")
        for index, item in enumerate(items):
            ends = {item.source.scheme, item.destination.scheme}
            if ends != {"ssh", "file"}:
                raise TransferError(f"item {index}: the rsync backend moves between ssh:// and file:// locations, "
                                    f"not {item.source.uri} to {item.destination.uri}")  # fmt: skip
            if item.source.scheme == "ssh":
                remote_inside(item.source, self.roots, "stage-in source", access="read from")
            else:
                remote_inside(item.destination, self.roots, "stage-out destination")
        return items

    # -- one item ----------------------------------------------------------------------------------

    def move_all(self, task: Task) -> None:
        """Files fetched from a host in one rsync per host (one connection, one file list); files sent, one by one."""
        fetches: dict[str, list[int]] = {}
        for index, item in enumerate(task.items):
            if item.source.scheme == "ssh":
                fetches.setdefault(item.source.endpoint, []).append(index)
        for indexes in fetches.values():
            try:
                rest = self._fetch_batch(task, indexes)
            except HostError as exc:
                self.fail(task, indexes, str(exc))
                continue
            self.move_each(task, rest)
        self.move_each(task, [i for i, item in enumerate(task.items) if item.source.scheme != "ssh"])

    def move_item(self, task: Task, index: int, item: Item) -> None:
        if item.source.scheme == "ssh":
            self._fetch(task, item.source, item.destination.path)
        else:
            self._send(task, item.source.path, item.destination)

    def _fetch(self, task: Task, source: Location, dst: str) -> None:
        """Into a temporary folder beside ``dst``, compared if asked, then renamed into place."""
        parent, base = os.path.split(dst)
        staging = os.path.join(parent, f".{base}{PARTIAL}{secrets.token_hex(4)}")
        try:
            os.makedirs(staging)
        except OSError as exc:
            raise ItemError(f"cannot make the destination folder {parent}: {exc.strerror or exc}") from None
        try:
            self._rsync(task, source, [self._remote(source), staging + "/"], source.uri)
            arrived = os.path.join(staging, os.path.basename(source.path))
            if not os.path.lexists(arrived):
                raise ItemError(f"rsync left nothing from {source.uri}")
            is_dir = os.path.isdir(arrived)
            if task.verify_checksum:
                self._compare(task, source, [self._remote(source, is_dir), arrived + ("/" if is_dir else "")], source.uri)
            files, nbytes = _tally(arrived)
            try:
                put_in_place(arrived, dst)
            except OSError as exc:
                raise ItemError(f"cannot put {dst} in place: {exc.strerror or exc}") from None
            self.count(task, nbytes=nbytes, files=files)
        finally:
            remove_partial(staging)

    def _fetch_batch(self, task: Task, indexes: list[int]) -> list[int]:
        """Fetch the items at ``indexes`` (one host) with one rsync into one temporary folder (their sources'
        paths under it), compare them if asked, rename each into place; the indexes left to move one by one.

        The temporary folder is made in the deepest folder that holds every destination, so each rename stays on
        one filesystem; items that cannot share it (a source named twice, or inside another's, a destination on
        another filesystem) are left to the one-by-one path."""
        seen: dict[str, int] = {}
        batch, rest = [], []
        for index in indexes:
            path = task.items[index].source.path
            if path in seen or any(path.startswith(p.rstrip("/") + "/") or p.startswith(path.rstrip("/") + "/") for p in seen):
                rest.append(index)
            else:
                seen[path] = index
                batch.append(index)
        if len(batch) < 2:
            return batch + rest
        items = [task.items[i] for i in batch]
        remote = items[0].source
        parents = [os.path.dirname(item.destination.path) for item in items]
        common = os.path.commonpath(parents)
        try:
            for parent in set(parents):
                os.makedirs(parent, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=f".batch{PARTIAL}", dir=common)
        except OSError:
            return batch + rest  # e.g. no right to write in the common folder: each item beside its own destination
        listing = os.path.join(staging, ".files")
        try:
            with open(listing, "w") as handle:
                handle.write("".join(item.source.path.lstrip("/") + "\0" for item in items))
            tree = os.path.join(staging, "tree")
            # --files-from: the listed paths, relative to / there, recreated under tree/ here (-r reaches into folders).
            listed = ["--from0", f"--files-from={listing}", f"{_login(remote.endpoint)}:/", tree + "/"]
            self._rsync(task, remote, listed, remote.uri, partial_ok=True)
            differ: list[str] = []
            if task.verify_checksum:
                out = self._rsync(task, remote, ["--checksum", "--dry-run", "--itemize-changes", *listed], remote.uri, times=False,
                                  partial_ok=True)  # fmt: skip
                differ = [line.split(" ", 1)[1] for line in out.splitlines() if " " in line.strip() and not line.startswith("*")]
            for index, item in zip(batch, items):
                arrived = os.path.join(tree, item.source.path.lstrip("/"))
                relative = item.source.path.lstrip("/")
                try:
                    if not os.path.lexists(arrived):
                        raise ItemError(f"source missing: {item.source.uri}")
                    mismatch = [d for d in differ if d.rstrip("/") == relative or d.startswith(relative + "/")]
                    if mismatch:
                        raise ItemError(f"checksum mismatch: the copy of {item.source.uri} differs from the source ({mismatch[0]})")
                    files, nbytes = _tally(arrived)
                    try:
                        put_in_place(arrived, item.destination.path)
                    except OSError as exc:
                        if exc.errno == errno.EXDEV:
                            rest.append(index)
                            continue
                        raise ItemError(f"cannot put {item.destination.path} in place: {exc.strerror or exc}") from None
                    self.count(task, nbytes=nbytes, files=files)
                except ItemError as exc:
                    self.fail(task, [index], str(exc))
        finally:
            remove_partial(staging)
        return rest

    def _send(self, task: Task, src: str, destination: Location) -> None:
        if not os.path.exists(src):
            raise ItemError(f"source missing: {src}")
        is_dir = os.path.isdir(src)
        paths = [src + ("/" if is_dir else ""), self._remote(destination, is_dir)]
        self._rsync(task, destination, ["--mkpath", *paths], src)
        if task.verify_checksum:
            self._compare(task, destination, paths, src)
        files, nbytes = _tally(src)
        self.count(task, nbytes=nbytes, files=files)

    def _compare(self, task: Task, remote: Location, paths: list[str], shown: str) -> None:
        """Files whose content differs between the two ends (by checksum), by a dry run that lists them."""
        differ = self._rsync(task, remote, ["--checksum", "--dry-run", "--itemize-changes", *paths], shown, times=False)
        changed = [line for line in differ.splitlines() if line.strip()]
        if changed:
            raise ItemError(f"checksum mismatch: the copy of {shown} differs from the source ({changed[0].strip()})")

    @staticmethod
    def _remote(location: Location, is_dir: bool = False) -> str:
        return f"{_login(location.endpoint)}:{location.path}" + ("/" if is_dir else "")

    # -- ssh connections ------------------------------------------------------------------------------

    def _connection(self, task: Task, remote: Location) -> list[str]:
        """The ssh options that make rsync use the task's own connection to ``remote``'s host, opened on first use.

        The first login to a host pays the key exchange and authentication (hundreds of ms on a busy login
        node); every other rsync of the task then opens a channel on the same connection. Should that
        connection die, ssh falls back to a login of its own (``ControlMaster=no``)."""
        key = (id(task), remote.endpoint)
        with self._masters_lock:
            known = self._masters.get(key)
        if known is None:
            folder = tempfile.mkdtemp(prefix="balsam-ssh-")  # mode 700: nobody else may use the connection
            socket = os.path.join(folder, "control")
            argv = [*self.ssh.argv(_port(remote.endpoint)), "-M", "-N", "-o", f"ControlPath={socket}", "-o", "ControlPersist=no",
                    _login(remote.endpoint)]  # fmt: skip
            master = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + self.ssh.connect_timeout_s + 5
            while not os.path.exists(socket) and master.poll() is None and time.monotonic() < deadline and not task.cancel.is_set():
                time.sleep(0.01)
            if not os.path.exists(socket):
                if master.poll() is None:
                    master.kill()
                said = master.communicate()[1] or ""
                shutil.rmtree(folder, ignore_errors=True)
                if task.cancel.is_set():
                    raise Cancelled
                raise self._error(255, said, remote, remote.uri)
            known = (master, folder)
            with self._masters_lock:
                self._masters[key] = known
        return ["-o", f"ControlPath={os.path.join(known[1], 'control')}", "-o", "ControlMaster=no"]

    def end_task(self, task: Task) -> None:
        with self._masters_lock:
            ended = [self._masters.pop(key) for key in [k for k in self._masters if k[0] == id(task)]]
        for master, folder in ended:
            _end(master)
            shutil.rmtree(folder, ignore_errors=True)

    def _rsync(self, task: Task, remote: Location, args: list[str], shown: str, times: bool = True, partial_ok: bool = False) -> str:
        """Run rsync (until it ends or the task is cancelled); its standard output, or the error it means.
        ``partial_ok``: some files missing (rsync's exit 23 or 24) is not an error; the caller looks at what arrived."""
        ssh = [*self.ssh.argv(_port(remote.endpoint)), *self._connection(task, remote)]
        # -r folders whole, -l links as links (never followed out of a folder); -p -t modes and times of files.
        argv = [self.rsync, "-rl" + ("pt" if times else ""), f"--timeout={self.io_timeout_s}", "-e", shlex.join(ssh), *args]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while True:
            try:
                out, err = process.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if task.cancel.is_set():
                    process.kill()
                    process.communicate()
                    raise Cancelled from None
        if process.returncode != 0 and not (partial_ok and process.returncode in RSYNC_MISSING):
            raise self._error(process.returncode, err, remote, shown)
        return out

    def _error(self, code: int, stderr: str, remote: Location, shown: str) -> ItemError:
        """What went wrong, in words that name the setting or the file to look at."""
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        said = next((line for line in lines if not line.startswith("rsync error:")), lines[-1] if lines else f"exit {code}")
        host = remote.endpoint
        if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return HostError(f"ssh to {host}: its host key is not in {self.ssh.known_hosts} (transfer.ssh_known_hosts), or differs: "
                             "check the key and add it (ssh-keyscan)")  # fmt: skip
        if "Permission denied" in stderr and ("publickey" in stderr or "password" in stderr or "keyboard" in stderr):
            return HostError(f"ssh to {host}: login refused for the key {self.ssh.identity} (transfer.ssh_identity): "
                             "is its public key in the remote account's authorized_keys?")  # fmt: skip
        if any(mark in stderr for mark in UNREACHABLE) or code == 255:
            return HostError(f"ssh to {host}: host unreachable ({said})")
        if code in RSYNC_MISSING and "No such file or directory" in stderr:
            return ItemError(f"source missing: {shown} ({said})")
        return ItemError(f"rsync of {shown} failed (exit {code}): {said}")


def _port(endpoint: str) -> str | None:
    return SSH_HOST.match(endpoint).group("port")


def _login(endpoint: str) -> str:
    """[USER@]HOST of an endpoint (the port goes to ssh's -p)."""
    return endpoint.rsplit(":", 1)[0] if _port(endpoint) else endpoint


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()


def ssh_roots(roots: Iterable[str]) -> list[Location]:
    """``transfer.ssh_roots`` as locations; a clear error for one that is not ``ssh://HOST/abs/path``."""
    parsed = []
    for root in roots:
        location = Location.parse(root)
        if location.scheme != "ssh":
            raise TransferError(f"transfer.ssh_roots: {root!r} is not an ssh://HOST/abs/path location")
        parsed.append(location)
    return parsed


def _tally(path: str) -> tuple[int, int]:
    """(regular files, bytes) at ``path``, a file or a folder (links not followed)."""
    if not os.path.isdir(path) or os.path.islink(path):
        return 1, os.lstat(path).st_size
    files = nbytes = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if not os.path.islink(os.path.join(folder, name)):
                files, nbytes = files + 1, nbytes + st.st_size
    return files, nbytes
