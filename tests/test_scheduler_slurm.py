"""The Slurm adapter, on output captured from a real Slurm 22.05 cluster and on a live one.

The parse tests read the files of tests/fixtures/schedulers/slurm (see its README for the
commands behind each). The live tests use the session's single-node cluster (the ``slurm``
fixture of conftest.py): submit, poll and cancel through the adapter's own command lines.
"""

from __future__ import annotations

import getpass
import subprocess
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, SlurmClusterError

from balsam.site.scheduler import slurm as adapter  # `slurm` is the cluster fixture
from balsam.site.scheduler.base import BackfillWindow, BatchRequest, BatchState, SchedulerError, error_summary

FIXTURES = Path(__file__).parent / "fixtures" / "schedulers" / "slurm"
Q, R, F = BatchState.QUEUED, BatchState.RUNNING, BatchState.FINISHED


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def record(*fields: str) -> str:
    """One squeue line in the adapter's format: fields joined by 0x1f, ended by 0x1e."""
    return "\x1f".join(fields) + "\x1e\n"


# -- submit -------------------------------------------------------------------------------------


def test_submit_argv_minimal():
    req = BatchRequest(script=Path("/w/job.sh"), nodes=2, minutes=30, name="balsam", output=Path("/w/job.out"))
    assert adapter.submit_argv(req) == [
        "sbatch", "--parsable", "-N", "2", "-t", "30", "-J", "balsam", "-o", "/w/job.out", "/w/job.sh",
    ]  # fmt: skip


def test_submit_argv_with_project_and_queue():
    req = BatchRequest(Path("/w/job.sh"), 1, 90, "balsam", Path("/w/job.out"), project="chem", queue="long")
    argv = adapter.submit_argv(req)
    assert argv[-1] == "/w/job.sh"
    assert argv[argv.index("-A") + 1] == "chem"
    assert argv[argv.index("-p") + 1] == "long"
    assert argv[argv.index("-t") + 1] == "90"


def test_submit_argv_escapes_percent_in_output_path():
    # sbatch reads %j, %x... in -o as patterns; the path must come out as written.
    req = BatchRequest(Path("/w/job.sh"), 1, 5, "b", Path("/w/100%done.out"))
    argv = adapter.submit_argv(req)
    assert argv[argv.index("-o") + 1] == "/w/100%%done.out"


def test_parse_submit_fixtures():
    assert adapter.parse_submit(fixture("sbatch-ok.out")) == "1"
    assert adapter.parse_submit(fixture("sbatch-unknown-account.out")) == "4"
    # EnforcePartLimits=NO: impossible jobs are accepted (they wait forever, see squeue-mixed).
    assert adapter.parse_submit(fixture("sbatch-too-many-nodes-lenient.out")) == "7"
    assert adapter.parse_submit(fixture("sbatch-time-over-max-lenient.out")) == "8"
    assert fixture("sbatch-too-many-nodes-lenient.err") == fixture("sbatch-time-over-max-lenient.err") == ""


def test_parse_submit_with_cluster_name():
    # Not captured: "ID;cluster" needs a multi-cluster setup with slurmdbd (see sbatch-cluster.err).
    assert adapter.parse_submit("4242;perlmutter\n") == "4242"


@pytest.mark.parametrize("stdout", ["", "\n", "Submitted batch job\n", "sbatch: error: Batch job submission failed\n"])
def test_parse_submit_without_id(stdout):
    with pytest.raises(SchedulerError, match="sbatch printed no job id"):
        adapter.parse_submit(stdout)


@pytest.mark.parametrize(
    "name, says",
    [
        ("sbatch-bad-partition.err", "Invalid partition name specified"),
        ("sbatch-too-many-nodes.err", "Node count specification invalid"),
        ("sbatch-time-over-max.err", "Requested time limit is invalid"),
        ("sbatch-cluster.err", "'balsamtest' can't be reached now"),
    ],
)
def test_sbatch_refusals_read_clearly(name, says):
    # These go to stderr with exit 1; commands.py reports them through error_summary.
    text = fixture(name)
    assert says in error_summary(text)
    assert not adapter.delete_gone(text)


# -- status -------------------------------------------------------------------------------------


def test_status_argv():
    argv = adapter.status_argv("alice")
    assert argv[:7] == ["squeue", "-h", "-u", "alice", "-t", "all", "-o"]
    assert argv[7] == "%i\x1f%T\x1f%D\x1f%l\x1f%P\x1f%a\x1f%r\x1f%j\x1e"


def test_parse_status_mixed_listing():
    jobs = {s.id: s for s in adapter.parse_status(fixture("squeue-mixed.out"))}
    assert sorted(jobs, key=int) == [str(i) for i in range(1, 16)]
    expected = {
        # id: (state, native, nodes, minutes, queue, reason)
        "1": (F, "COMPLETED", 1, 5, "debug", "completed"),
        "2": (F, "FAILED", 1, 5, "debug", "failed (NonZeroExitCode)"),
        "3": (F, "TIMEOUT", 1, 1, "debug", "timeout (TimeLimit)"),
        "4": (F, "CANCELLED", 1, 60, "debug", "cancelled"),
        "5": (Q, "PENDING", 1, None, "long", "JobHeldUser"),
        "6": (Q, "PENDING", 1, 100000, "long", "JobHeldUser"),
        "7": (Q, "PENDING", 2, 60, "debug", "PartitionNodeLimit"),
        "8": (Q, "PENDING", 1, 61, "debug", "PartitionTimeLimit"),
        "9": (Q, "PENDING", 1, 60, "debug", "job requeued in held state"),
        "10": (F, "CANCELLED", 1, 60, "debug", "cancelled"),
        "11": (R, "COMPLETING", 1, 60, "debug", ""),
        "12": (R, "RUNNING", 1, 60, "debug", ""),
        "13": (R, "SUSPENDED", 1, 60, "debug", ""),
        "14": (R, "STOPPED", 1, 60, "debug", ""),
        "15": (Q, "PENDING", 1, 60, "debug", "Resources"),
    }
    for job_id, (state, native, nodes, minutes, queue, reason) in expected.items():
        job = jobs[job_id]
        assert (job.state, job.native_state, job.nodes, job.minutes, job.queue, job.reason) == (
            state, native, nodes, minutes, queue, reason,
        ), job_id  # fmt: skip
        assert job.exit_code is None  # squeue -o has no exit code field
    assert jobs["1"].name == "balsam-ok"
    assert jobs["15"].name == "balsam-wide"
    # The name is free text: the separators and even a newline survive.
    assert jobs["5"].name == "odd|name with spaces"
    assert jobs["6"].name == "two\nlines"
    # "(null)" is Slurm's word for no account.
    assert jobs["5"].project == "projectx"
    assert jobs["4"].project == "nobody"
    assert jobs["1"].project == ""


def test_parse_status_empty():
    assert fixture("squeue-empty.out") == ""
    assert adapter.parse_status("") == []
    assert adapter.parse_status("\n") == []


DOCUMENTED_STATES = {
    "PENDING": Q, "REQUEUED": Q, "REQUEUE_HOLD": Q, "REQUEUE_FED": Q, "RESV_DEL_HOLD": Q, "SPECIAL_EXIT": Q,
    "CONFIGURING": R, "RUNNING": R, "COMPLETING": R, "RESIZING": R, "SIGNALING": R, "STAGE_OUT": R,
    "SUSPENDED": R, "STOPPED": R,
    "COMPLETED": F, "CANCELLED": F, "FAILED": F, "TIMEOUT": F, "NODE_FAIL": F, "PREEMPTED": F,
    "BOOT_FAIL": F, "DEADLINE": F, "OUT_OF_MEMORY": F, "REVOKED": F,
}  # fmt: skip


@pytest.mark.parametrize("native, state", sorted(DOCUMENTED_STATES.items()))
def test_every_documented_state(native, state):
    [job] = adapter.parse_status(record("77", native, "3", "2-00:00:00", "batch", "proj", "None", "j"))
    assert (job.state, job.native_state, job.nodes, job.minutes) == (state, native, 3, 2880)


def test_unknown_state_is_queued_and_kept():
    [job] = adapter.parse_status(record("78", "LAUNCHING_SOON", "1", "10:00", "batch", "(null)", "None", "j"))
    assert job.state is BatchState.QUEUED
    assert job.native_state == "LAUNCHING_SOON"
    assert job.minutes == 10


def test_pending_node_range_reads_its_minimum():
    [job] = adapter.parse_status(record("79", "PENDING", "2-4", "30:00", "batch", "(null)", "Priority", "j"))
    assert (job.nodes, job.minutes, job.reason) == (2, 30, "Priority")


@pytest.mark.parametrize(
    "stdout, message",
    [
        ("12\x1fRUNNING\x1f1\x1e\n", "has 3 fields, expected 8"),
        (record("12", "RUNNING", "1", "5:00", "debug", "(null)", "None", "j") + "junk line\x1e\n", "record 2 has 1 fields"),
        ("12\x1fRUNNING\x1f1\x1f5:00\x1fdebug\x1f(null)\x1fNone\x1fj\n", "does not end a record"),
        (record("12", "RUNNING", "many", "5:00", "debug", "(null)", "None", "j"), "unreadable nodes 'many'"),
        (record("12", "RUNNING", "1", "soon", "debug", "(null)", "None", "j"), "time limit 'soon'"),
        (record("", "RUNNING", "1", "5:00", "debug", "(null)", "None", "j"), "has no job id"),
    ],
)
def test_parse_status_malformed(stdout, message):
    with pytest.raises(SchedulerError, match=message):
        adapter.parse_status(stdout)


# -- delete -------------------------------------------------------------------------------------


def test_delete_argv():
    assert adapter.delete_argv("42") == ["scancel", "42"]


def test_plain_scancel_is_silent_for_gone_jobs():
    # Exit 0 with nothing printed (exit-codes.txt): deleting a finished or unknown job just works.
    assert fixture("scancel-finished.err") == ""
    assert fixture("scancel-unknown.err") == ""


@pytest.mark.parametrize(
    "name",
    ["scancel-verbose-unknown.err", "scancel-signal-unknown.err", "scancel-signal-finished.err", "scancel-signal-completing.err"],
)
def test_delete_gone_on_captured_errors(name):
    assert adapter.delete_gone(fixture(name))


def test_delete_gone_other_phrases():
    assert adapter.delete_gone("scancel: error: Kill job error on job id 7: Job/step already completing or completed\n")
    assert not adapter.delete_gone("scancel: error: Kill job error on job id 7: Access/permission denied\n")
    assert not adapter.delete_gone("")


# -- backfill -----------------------------------------------------------------------------------


def test_backfill_argv():
    assert adapter.backfill_argv() == ["sinfo", "-h", "-t", "idle", "-o", "%R\x1f%a\x1f%l\x1f%D\x1f%T"]


def test_parse_backfill_idle_node():
    assert adapter.parse_backfill(fixture("sinfo-idle.out")) == [
        BackfillWindow(nodes=1, minutes=60, queue="debug"),
        BackfillWindow(nodes=1, minutes=None, queue="long"),
    ]


def test_parse_backfill_busy_node():
    # With no idle node, `sinfo -t idle` still prints each partition, with 0 nodes in state "n/a".
    assert "n/a" in fixture("sinfo-busy.out")
    assert adapter.parse_backfill(fixture("sinfo-busy.out")) == []
    # Without -t idle the node shows what it is doing; not idle, so no window.
    assert adapter.parse_backfill(fixture("sinfo-all.out")) == []


def test_parse_backfill_sums_lines_and_skips_unusable():
    lines = [
        "batch\x1fup\x1f2-00:00:00\x1f3\x1fidle",
        "batch\x1fup\x1f2-00:00:00\x1f2\x1fidle",
        "batch\x1fup\x1f2-00:00:00\x1f4\x1fidle~",  # powered down
        "closed\x1fdown\x1f30:00\x1f8\x1fidle",
        "",
    ]
    assert adapter.parse_backfill("\n".join(lines)) == [BackfillWindow(nodes=5, minutes=2880, queue="batch")]


@pytest.mark.parametrize("line, message", [("debug\x1fup\x1f1:00:00", "has 3 fields, expected 5"), ("debug\x1fup\x1fforever\x1f1\x1fidle", "time limit 'forever'")])
def test_parse_backfill_malformed(line, message):
    with pytest.raises(SchedulerError, match=message):
        adapter.parse_backfill(line + "\n")


def test_every_fixture_is_read_here():
    source = Path(__file__).read_text()
    unread = [f.name for f in FIXTURES.iterdir() if f.suffix in (".out", ".err") and f'"{f.name}"' not in source]
    assert unread == [], "fixtures no test reads"


def test_sinfo_version_fixture_matches_readme():
    version = fixture("sinfo-version.out").split()[-1]
    assert version == "22.05.8"
    assert version in fixture("README.md")


# -- live ---------------------------------------------------------------------------------------


def _run(argv: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=check)


def _wait_finished(job_id: str, env: dict[str, str], timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        listing = {s.id: s for s in adapter.parse_status(_run(adapter.status_argv(getpass.getuser()), env).stdout)}
        job = listing.get(job_id)
        if job is None or job.state is BatchState.FINISHED:  # absent: gone past MinJobAge
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.native_state} after {timeout:g} s"
        time.sleep(0.3)


def test_live_submit_poll_finish(slurm, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\necho to-stdout\necho hi > {tmp_path}/file\n")
    output = tmp_path / "100%j.out"  # a literal percent sign, not a pattern
    request = BatchRequest(script=script, nodes=1, minutes=2, name="balsam-live", output=output, queue="debug")
    submitted = _run(adapter.submit_argv(request), slurm.env)
    job_id = adapter.parse_submit(submitted.stdout)
    job = _wait_finished(job_id, slurm.env)
    assert job is not None and job.native_state == "COMPLETED"
    assert (job.name, job.nodes, job.minutes, job.queue, job.reason) == ("balsam-live", 1, 2, "debug", "completed")
    assert (tmp_path / "file").read_text() == "hi\n"
    assert output.read_text() == "to-stdout\n"


def test_live_cancel_held_job(slurm, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\ntouch {tmp_path}/ran\n")
    argv = adapter.submit_argv(BatchRequest(script, 1, 2, "balsam-held", tmp_path / "held.out"))
    job_id = adapter.parse_submit(_run([argv[0], "--hold", *argv[1:]], slurm.env).stdout)
    [held] = [s for s in adapter.parse_status(_run(adapter.status_argv(getpass.getuser()), slurm.env).stdout) if s.id == job_id]
    assert (held.state, held.reason) == (BatchState.QUEUED, "JobHeldUser")
    _run(adapter.delete_argv(job_id), slurm.env)
    job = _wait_finished(job_id, slurm.env)
    assert job is not None and (job.state, job.native_state, job.reason) == (BatchState.FINISHED, "CANCELLED", "cancelled")
    assert not (tmp_path / "ran").exists()
    again = _run(adapter.delete_argv(job_id), slurm.env, check=False)  # already over: still fine
    assert (again.returncode, again.stderr) == (0, "")


def test_live_backfill(slurm):
    windows = adapter.parse_backfill(_run(adapter.backfill_argv(), slurm.env).stdout)
    assert {w.queue for w in windows} <= {"debug", "long"}
    assert all(w.nodes == 1 for w in windows)


def test_live_second_cluster_refused(slurm, tmp_path):
    # Slurm's ports are fixed: a second cluster (another test session) must fail clearly.
    with pytest.raises(SlurmClusterError, match="another Slurm cluster"):
        SlurmCluster(tmp_path / "second").start()
    assert not (tmp_path / "second").exists()


def test_live_through_command_scheduler(slurm, tmp_path):
    # What the site runs: commands.py around this adapter, finding the cluster by SLURM_CONF alone.
    from balsam.site.scheduler.commands import get_scheduler

    scheduler = get_scheduler("slurm", tmp_path)
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\necho hi > {tmp_path}/file\n")
    job_id = scheduler.submit(BatchRequest(script, 1, 2, "balsam-cmd", tmp_path / "cmd.out"))
    deadline = time.monotonic() + 30
    while (job := next(s for s in scheduler.status() if s.id == job_id)).state is not BatchState.FINISHED:
        assert time.monotonic() < deadline, f"job {job_id} still {job.native_state}"
        time.sleep(0.3)
    assert job.native_state == "COMPLETED"
    assert (tmp_path / "file").read_text() == "hi\n"
    scheduler.delete(job_id)  # already over: no error
    assert all(w.queue in ("debug", "long") for w in scheduler.backfill())
