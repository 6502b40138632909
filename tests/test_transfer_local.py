"""The local transfer backend, on real files with its real threads."""

import hashlib
import os
import time

import pytest

from balsam.transfer import Item, LocalBackend, Location, TransferError
from balsam.transfer.local import PARTIAL


@pytest.fixture
def backend():
    b = LocalBackend(link=True, workers=2)
    yield b
    b.close()


def item(src, dst) -> Item:
    return Item(Location.local(str(src)), Location.local(str(dst)))


def wait(backend, task_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.poll(task_id)
        if status.ended:
            return status
        time.sleep(0.01)
    raise AssertionError(f"task {task_id} still active after {timeout}s: {backend.poll(task_id)}")


def leftovers(root):
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files if PARTIAL in n or ".balsam-old-" in n]


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_large_file_copy_with_checksum(tmp_path):
    src, dst = tmp_path / "big.bin", tmp_path / "out" / "nested" / "big.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as handle:
        for i in range(200):
            handle.write(block[i:] + block[:i])  # 200 MiB, no two blocks alike
    b = LocalBackend(link=False)
    try:
        task = b.submit([item(src, dst)], label="big", verify_checksum=True)
        status = wait(b, task, timeout=120)
    finally:
        b.close()
    assert status.state == "done" and not status.failed, status
    assert dst.stat().st_size == src.stat().st_size == 200 << 20
    assert sha(dst) == sha(src)
    assert dst.stat().st_ino != src.stat().st_ino
    assert status.bytes_done == 200 << 20 and status.files_done == 1
    assert leftovers(tmp_path) == []


def test_many_small_files_in_one_task(tmp_path, backend):
    (tmp_path / "in").mkdir()
    items = []
    for i in range(2000):
        src = tmp_path / "in" / f"f{i:04d}.txt"
        src.write_text(f"file {i}\n")
        items.append(item(src, tmp_path / "out" / f"d{i % 10}" / src.name))
    status = wait(backend, backend.submit(items, label="many"))
    assert status.state == "done" and status.failed == {}
    assert status.files_done == 2000
    for i in (0, 999, 1999):
        assert (tmp_path / "out" / f"d{i % 10}" / f"f{i:04d}.txt").read_text() == f"file {i}\n"
    assert sum(len(files) for _, _, files in os.walk(tmp_path / "out")) == 2000
    assert leftovers(tmp_path) == []


def make_tree(root):
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.txt").write_text("top")
    (root / "a" / "mid.txt").write_text("mid")
    (root / "a" / "b" / "deep.txt").write_text("deep")
    (root / "empty").mkdir()
    os.symlink("top.txt", root / "link-to-top")
    os.chmod(root / "a" / "mid.txt", 0o750)


@pytest.mark.parametrize("link", [True, False])
def test_folder_tree(tmp_path, link):
    make_tree(tmp_path / "tree")
    b = LocalBackend(link=link)
    try:
        status = wait(b, b.submit([item(tmp_path / "tree", tmp_path / "copy" / "tree")], label="tree", verify_checksum=True))
    finally:
        b.close()
    assert status.state == "done" and not status.failed, status
    out = tmp_path / "copy" / "tree"
    assert (out / "a" / "b" / "deep.txt").read_text() == "deep"
    assert (out / "top.txt").read_text() == "top"
    assert (out / "empty").is_dir()
    assert os.readlink(out / "link-to-top") == "top.txt"
    assert (out / "a" / "mid.txt").stat().st_mode & 0o777 == 0o750
    assert status.files_done == 3
    linked = (out / "top.txt").stat().st_ino == (tmp_path / "tree" / "top.txt").stat().st_ino
    assert linked is link
    assert leftovers(tmp_path) == []


def test_hard_link_vs_copy(tmp_path):
    src = tmp_path / "src.dat"
    src.write_bytes(b"x" * 10_000)
    for link in (True, False):
        dst = tmp_path / f"dst-{link}.dat"
        b = LocalBackend(link=link)
        try:
            status = wait(b, b.submit([item(src, dst)], label="l"))
        finally:
            b.close()
        assert status.state == "done" and status.bytes_done == 10_000
        assert (dst.stat().st_ino == src.stat().st_ino) is link
        assert dst.read_bytes() == src.read_bytes()


def test_relink_same_inode_leaves_no_temp(tmp_path, backend):
    # rename(2) of one link onto another link of the same inode does nothing: the temp must still go.
    src, dst = tmp_path / "s", tmp_path / "d"
    src.write_text("same")
    os.link(src, dst)
    status = wait(backend, backend.submit([item(src, dst)], label="again"))
    assert status.state == "done" and not status.failed
    assert leftovers(tmp_path) == [] and dst.read_text() == "same"


def test_partial_failure(tmp_path, backend):
    items = []
    for i in range(20):
        src = tmp_path / f"in{i}"
        if i != 7:
            src.write_text(str(i))
        items.append(item(src, tmp_path / "out" / f"out{i}"))
    status = wait(backend, backend.submit(items, label="partial"))
    assert status.state == "done"
    assert list(status.failed) == [7]
    assert status.failed[7] == f"source missing: {tmp_path / 'in7'}"
    assert sorted(os.listdir(tmp_path / "out")) == sorted(f"out{i}" for i in range(20) if i != 7)
    assert status.files_done == 19


def test_existing_destination_replaced(tmp_path, backend):
    (tmp_path / "new.txt").write_text("new")
    (tmp_path / "old.txt").write_text("old and longer")
    make_tree(tmp_path / "newtree")
    (tmp_path / "oldtree" / "stale").mkdir(parents=True)
    (tmp_path / "oldtree" / "stale" / "x").write_text("stale")
    (tmp_path / "file-becomes-dir").write_text("was a file")
    (tmp_path / "dir-becomes-file").mkdir()
    (tmp_path / "dir-becomes-file" / "y").write_text("y")
    items = [
        item(tmp_path / "new.txt", tmp_path / "old.txt"),
        item(tmp_path / "newtree", tmp_path / "oldtree"),
        item(tmp_path / "newtree", tmp_path / "file-becomes-dir"),
        item(tmp_path / "new.txt", tmp_path / "dir-becomes-file"),
    ]
    status = wait(backend, backend.submit(items, label="replace"))
    assert status.state == "done" and not status.failed, status
    assert (tmp_path / "old.txt").read_text() == "new"
    assert not (tmp_path / "oldtree" / "stale").exists()
    assert (tmp_path / "oldtree" / "a" / "b" / "deep.txt").read_text() == "deep"
    assert (tmp_path / "file-becomes-dir" / "top.txt").read_text() == "top"
    assert (tmp_path / "dir-becomes-file").read_text() == "new"
    assert leftovers(tmp_path) == []


def test_unwritable_destination_fails_that_item_only(tmp_path, backend):
    # As root, chmod stops nothing: a destination under a regular FILE cannot be made by anyone.
    (tmp_path / "good").write_text("good")
    (tmp_path / "blocker").write_text("I am a file")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_text("f")
    items = [
        item(tmp_path / "good", tmp_path / "blocker" / "sub" / "good"),
        item(tmp_path / "good", tmp_path / "out" / "good"),
        item(tmp_path / "tree", tmp_path / "blocker" / "tree"),
        item(tmp_path / "tree", tmp_path / "tree" / "inside"),
    ]
    status = wait(backend, backend.submit(items, label="bad"))
    assert status.state == "done"
    assert sorted(status.failed) == [0, 2, 3]
    assert str(tmp_path / "blocker" / "sub") in status.failed[0] and "Not a directory" in status.failed[0]
    assert str(tmp_path / "blocker") in status.failed[2]
    assert "inside the source folder" in status.failed[3]
    assert (tmp_path / "out" / "good").read_text() == "good"
    assert leftovers(tmp_path) == []


def test_copy_error_midway_cleans_temp(tmp_path, backend, monkeypatch):
    (tmp_path / "src").write_bytes(b"z" * 1000)
    import balsam.transfer.local as local

    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "src"))

    monkeypatch.setattr(local.shutil, "copystat", broken)  # fails after the data is written
    b = LocalBackend(link=False)
    try:
        status = wait(b, b.submit([item(tmp_path / "src", tmp_path / "dst")], label="perm"))
    finally:
        b.close()
    assert status.state == "done" and "Permission denied" in status.failed[0] and str(tmp_path / "src") in status.failed[0]
    assert not (tmp_path / "dst").exists() and leftovers(tmp_path) == []


def test_size_and_checksum_mismatch_detected(tmp_path, monkeypatch):
    import balsam.transfer.local as local

    (tmp_path / "src").write_bytes(b"abc" * 1000)
    real = local._sha256
    monkeypatch.setattr(local, "_sha256", lambda path: real(path) + ("x" if path.endswith(tuple("0123456789abcdef")) and PARTIAL in path else ""))
    b = LocalBackend(link=False)
    try:
        status = wait(b, b.submit([item(tmp_path / "src", tmp_path / "dst")], label="sum", verify_checksum=True))
        assert "checksum mismatch" in status.failed[0] and str(tmp_path / "src") in status.failed[0]
        # without verify_checksum the (sabotaged) hash is not consulted
        status = wait(b, b.submit([item(tmp_path / "src", tmp_path / "dst")], label="nosum"))
        assert status.failed == {} and (tmp_path / "dst").read_bytes() == b"abc" * 1000
        # a source that changes size while copied
        monkeypatch.setattr(local, "_sha256", real)
        orig_stat = os.stat

        def lying_stat(path, *a, **k):
            st = orig_stat(path, *a, **k)
            if str(path) == str(tmp_path / "src"):
                return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size + 1,
                                       int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))
            return st

        monkeypatch.setattr(local.os, "stat", lying_stat)
        status = wait(b, b.submit([item(tmp_path / "src", tmp_path / "dst2")], label="size"))
        assert "size mismatch" in status.failed[0]
    finally:
        b.close()
    assert not (tmp_path / "dst2").exists() and leftovers(tmp_path) == []


def test_cancel(tmp_path, monkeypatch):
    import balsam.transfer.local as local

    monkeypatch.setattr(local, "CHUNK", 1 << 16)
    big = tmp_path / "big"
    with open(big, "wb") as handle:
        handle.truncate(512 << 20)  # sparse: quick to make, slow enough to copy in 64 KiB chunks
    items = [item(big, tmp_path / "out" / "big")] + [item(big, tmp_path / "out" / f"later{i}") for i in range(5)]
    b = LocalBackend(link=False, workers=1)
    try:
        task = b.submit(items, label="cancel")
        deadline = time.monotonic() + 30
        while b.poll(task).bytes_done == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        b.cancel(task)
        status = wait(b, task)
    finally:
        b.close()
    assert status.state == "failed" and status.message == "cancelled"
    assert 0 < status.bytes_done < 512 << 20
    assert not (tmp_path / "out" / "big").exists()
    assert not any((tmp_path / "out" / f"later{i}").exists() for i in range(5))
    assert leftovers(tmp_path) == []


def test_unknown_id_and_cancel_of_unknown(backend):
    status = backend.poll("no-such-task")
    assert status.state == "failed" and "unknown transfer task no-such-task" in status.message
    assert "restarted" in status.message
    backend.cancel("no-such-task")  # quietly nothing


def test_rejects_non_file_and_empty(tmp_path, backend):
    g = Location.parse("globus://abc/x")
    with pytest.raises(TransferError, match="only file://"):
        backend.submit([Item(g, Location.local(str(tmp_path / "x")))], label="g")
    with pytest.raises(TransferError, match="at least one item"):
        backend.submit([], label="none")


def test_source_not_regular(tmp_path, backend):
    os.mkfifo(tmp_path / "fifo")
    status = wait(backend, backend.submit([item(tmp_path / "fifo", tmp_path / "x")], label="fifo"))
    assert "neither a regular file nor a folder" in status.failed[0]


def test_tasks_run_side_by_side(tmp_path):
    b = LocalBackend(workers=3)
    try:
        ids = []
        for t in range(6):
            src = tmp_path / f"s{t}"
            src.write_text(str(t))
            ids.append(b.submit([item(src, tmp_path / "o" / f"o{t}")], label=f"t{t}"))
        assert len(set(ids)) == 6
        assert all(wait(b, i).state == "done" for i in ids)
    finally:
        b.close()
    assert sorted(os.listdir(tmp_path / "o")) == [f"o{t}" for t in range(6)]
