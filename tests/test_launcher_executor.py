"""The executor that starts and reaps tasks, with real processes: both ways of waiting for children
(pidfds in one epoll set, and the waiter threads kept for systems without pidfds) behave alike."""

from __future__ import annotations

import os
import select
import signal
import sys
import time

import pytest

from balsam.launcher.executor import LocalExecutor, Task, pidfds_work

MODES = [pytest.param(True, id="pidfds"), pytest.param(False, id="waiter-threads")]


def collect(ex: LocalExecutor, count: int, timeout: float = 30.0) -> dict:
    """Exits by key, sleeping on the executor's wake-up descriptor as the launcher's loop does."""
    exits: dict = {}
    deadline = time.monotonic() + timeout
    while len(exits) < count:
        assert time.monotonic() < deadline, f"only {len(exits)} of {count} exits came"
        select.select([ex.wakeup_fd], [], [], 1.0)
        ex.drain_wakeups()
        for ended in ex.poll():
            assert ended.key not in exits, "an exit is reported once"
            exits[ended.key] = ended
    return exits


@pytest.fixture(params=MODES)
def executor(request):
    if request.param and not pidfds_work():
        pytest.skip("this kernel has no pidfds")
    ex = LocalExecutor(use_pidfds=request.param)
    assert ex.uses_pidfds is request.param
    yield ex
    ex.close()


def test_exit_codes_output_files_and_folder(executor, tmp_path):
    folder = tmp_path / "a" / "b"  # made, parents and all
    code = "import os, sys; print(os.getcwd()); print(os.environ['X'], file=sys.stderr); sys.exit(int(sys.argv[1]))"
    for n in range(20):
        executor.start(Task(("run", n), [sys.executable, "-c", code, str(n % 3)], str(folder), {"X": f"x{n}"},
                            str(folder / f"{n}.out"), str(folder / f"{n}.err")))  # fmt: skip
    exits = collect(executor, 20)
    assert {key: e.return_code for key, e in exits.items()} == {("run", n): n % 3 for n in range(20)}
    assert all(e.ended >= e.started and not e.error for e in exits.values())
    assert (folder / "7.out").read_text().strip() == str(folder)
    assert (folder / "7.err").read_text().strip() == "x7"
    assert executor.running() == []


def test_a_program_that_cannot_start_exits_at_once_with_the_reason(executor, tmp_path):
    executor.start(Task("missing", [str(tmp_path / "no-such-program")], str(tmp_path)))
    (ended,) = collect(executor, 1).values()
    assert ended.return_code == 127 and "no-such-program" in ended.error and not ended.ok


def test_a_signal_reaches_the_whole_process_tree_in_its_own_session(executor, tmp_path):
    pids = tmp_path / "pids"
    # The shell starts a grandchild and waits: SIGTERM to the group must end both.
    script = f"sleep 60 & echo $$ $! > {pids}; wait"
    executor.start(Task("tree", ["sh", "-c", script], str(tmp_path)))
    deadline = time.monotonic() + 10
    while not (pids.exists() and len(pids.read_text().split()) == 2):
        assert time.monotonic() < deadline, "the shell did not start its child"
        time.sleep(0.02)
    shell, grandchild = map(int, pids.read_text().split())
    assert os.getsid(shell) == shell, "the task leads a session of its own"
    assert executor.signal("tree", signal.SIGTERM)
    (ended,) = collect(executor, 1).values()
    assert ended.return_code == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the grandchild outlived the signal to its group"
        time.sleep(0.02)
    assert not executor.signal("tree", signal.SIGTERM), "a reaped task is not signalled"


def test_close_kills_and_reaps_what_still_runs(executor, tmp_path):
    executor.start(Task("long", ["sleep", "60"], str(tmp_path)))
    started = time.monotonic()
    executor.close()
    assert time.monotonic() - started < 10


def _tool(folder, word: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tool").write_text(f"#!/bin/sh\necho {word}\n")
    (folder / "tool").chmod(0o755)


def test_a_bare_program_name_is_looked_up_in_each_tasks_own_path(executor, tmp_path):
    """The executor keeps where it found a program (a start then tries no other folder of PATH);
    what it keeps never sends a task to another PATH's program, nor outlives the program."""
    _tool(tmp_path / "a", "from-a")
    _tool(tmp_path / "b", "from-b")
    base = os.environ.get("PATH", os.defpath)

    def run(key, path: str, argv=("tool",)):
        out = tmp_path / f"{key}.out"
        executor.start(Task(key, list(argv), str(tmp_path / "work"), {"PATH": f"{path}:{base}"}, str(out), str(tmp_path / f"{key}.err")))
        (ended,) = collect(executor, 1).values()
        return ended, out.read_text().strip() if out.exists() else ""

    for n in range(3):  # found once, then kept: still each PATH's own
        assert run(f"a{n}", str(tmp_path / "a"))[1] == "from-a"
        assert run(f"b{n}", str(tmp_path / "b"))[1] == "from-b"
    both = f"{tmp_path / 'a'}:{tmp_path / 'b'}"
    assert run("first", both)[1] == "from-a"
    (tmp_path / "a" / "tool").unlink()
    ended, said = run("next", both)
    assert (ended.return_code, ended.error, said) == (0, "", "from-b"), "a program removed from one folder of PATH is found in the next"
    ended, _ = run("gone", str(tmp_path / "a"))
    assert ended.return_code == 127 and "tool" in ended.error
    # A name with a folder is taken from the task's own folder, as given; so is a bare name that an
    # empty folder of PATH (the current one) finds there before any other.
    _tool(tmp_path / "work", "from-work")
    assert run("relative", str(tmp_path / "b"), argv=("./tool",))[1] == "from-work"
    assert run("empty-entry", f":{tmp_path / 'b'}")[1] == "from-work"
