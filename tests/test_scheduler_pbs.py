"""The PBS Professional adapter on output composed to PBS's documented formats (tests/fixtures/schedulers/pbs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from balsam.site.scheduler import pbs
from balsam.site.scheduler.base import BackfillWindow, BatchRequest, BatchState, SchedulerError

FIXTURES = Path(__file__).parent / "fixtures" / "schedulers" / "pbs"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def request(**changes) -> BatchRequest:
    values = dict(script=Path("/site/batch/7.sh"), nodes=4, minutes=90, name="balsam-theta-7", output=Path("/site/batch/7.out"))
    return BatchRequest(**{**values, **changes})


def test_submit_argv_asks_for_whole_nodes_and_puts_the_script_last():
    assert pbs.submit_argv(request()) == [
        "qsub", "-N", "balsam-theta-7", "-l", "select=4", "-l", "place=scatter:exclhost",
        "-l", "walltime=01:30:00", "-o", "/site/batch/7.out", "-j", "oe", "/site/batch/7.sh",
    ]  # fmt: skip


def test_submit_argv_with_project_and_queue():
    argv = pbs.submit_argv(request(project="datascience", queue="debug", minutes=5))
    assert argv[argv.index("-A") + 1] == "datascience"
    assert argv[argv.index("-q") + 1] == "debug"
    assert "walltime=00:05:00" in argv
    assert argv[-1] == "/site/batch/7.sh"


def test_parse_submit_reads_the_job_id_qsub_prints():
    assert pbs.parse_submit(fixture("qsub-ok.out")) == "8734211.pbs01"
    assert pbs.parse_submit(fixture("qsub-ok-long-server.out")) == "1174562.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"


@pytest.mark.parametrize("name", ["qsub-unknown-queue.err", "qsub-invalid-credential.err", "qsub-over-queue-limits.err"])
def test_parse_submit_names_what_qsub_printed_when_there_is_no_id(name):
    with pytest.raises(SchedulerError, match=fixture(name).strip()):
        pbs.parse_submit(fixture(name))


def test_parse_status_reads_every_job_of_the_listing():
    listing = {job.id: job for job in pbs.parse_status(fixture("qstat-f-F-json-x.out"))}
    assert len(listing) == 17
    states = {job_id.split(".")[0]: job.native_state for job_id, job in listing.items()}
    assert sorted(set(states.values())) == ["B", "E", "F", "H", "M", "Q", "R", "S", "W"]

    queued = listing["8734206.pbs01"]
    assert (queued.state, queued.name, queued.nodes, queued.minutes) == (BatchState.QUEUED, "balsam-theta_site-11", 16, 180)
    assert (queued.queue, queued.project) == ("prod", "datascience")
    assert queued.reason == "Not Running: Insufficient amount of resource: ncpus (R: 1024 A: 448 T: 35840)"

    held = listing["8734209.pbs01"]
    assert (held.state, held.native_state, held.reason) == (BatchState.QUEUED, "H", "job held, too many failed attempts to run")
    assert listing["8734208.pbs01"].reason == ""  # a user hold leaves no comment

    running = listing["8734201.pbs01"]
    assert (running.state, running.nodes, running.minutes, running.exit_code) == (BatchState.RUNNING, 4, 60, None)
    exiting = listing["8734203.pbs01"]
    assert (exiting.state, exiting.native_state, exiting.exit_code) == (BatchState.RUNNING, "E", 0)
    assert listing["8734204.pbs01"].state is BatchState.RUNNING  # suspended, still holding its nodes
    assert listing["8734205[].pbs01"].state is BatchState.RUNNING  # an array with subjobs begun


def test_parse_status_says_how_finished_jobs_ended():
    listing = {job.id.split(".")[0]: job for job in pbs.parse_status(fixture("qstat-f-F-json-x.out"))}
    assert {j for j, job in listing.items() if job.state is BatchState.FINISHED} == {
        "8734190", "8734195", "8734196", "8734197", "8734198", "8734199", "8734200"}  # fmt: skip
    assert listing["8734195"].exit_code == 0 and listing["8734195"].reason.startswith("completed; Job run at")
    assert listing["8734197"].exit_code == 1 and listing["8734197"].reason.startswith("exited with code 1; ")
    assert listing["8734198"].exit_code == 271 and listing["8734198"].reason.startswith("killed by signal 15; ")
    assert listing["8734199"].reason == "PBS could not run it (Exit_status -1); Not Running: PBS Error: Execution server rejected request"
    assert (listing["8734200"].exit_code, listing["8734200"].reason) == (None, "finished")
    assert listing["8734190"].reason == "moved to another server"


def test_parse_status_tolerates_missing_optional_fields():
    waiting = next(job for job in pbs.parse_status(fixture("qstat-f-F-json-x.out")) if job.name == "nightly")
    # No walltime, no account, no nodect: the node count comes from the select statement.
    assert (waiting.state, waiting.native_state, waiting.nodes, waiting.minutes, waiting.project) == (BatchState.QUEUED, "W", 2, None, "")


def test_an_unknown_state_stays_queued_and_keeps_its_letter():
    [job] = pbs.parse_status('{"Jobs":{"5.pbs01":{"job_state":"Z","Resource_List":{"nodect":1}}}}')
    assert (job.state, job.native_state, job.nodes) == (BatchState.QUEUED, "Z", 1)


@pytest.mark.parametrize("text", ["", "\n  \n", fixture("qstat-f-F-json-no-jobs.out")])
def test_an_empty_listing_is_no_jobs(text):
    assert pbs.parse_status(text) == []


@pytest.mark.parametrize(("text", "says"), [
    ('{"Jobs":{"1.pbs01":{"job_state":"R",', 'not JSON .*\\{"Jobs":\\{"1.pbs01"'),
    (fixture("qstat-no-server.err"), "not JSON .*cannot connect to server pbs01"),
    ("[]", "JSON is not an object: '\\[\\]'"),
    ('{"Jobs":[]}', "'Jobs' that is not an object"),
    ('{"Jobs":{"1.pbs01":{"Resource_List":{"nodect":"four"}}}}', "job 1.pbs01 has an unreadable value .*four"),
])  # fmt: skip
def test_malformed_listings_raise_with_an_excerpt(text, says):
    with pytest.raises(SchedulerError, match=f"^qstat .*{says}"):
        pbs.parse_status(text)


def test_delete():
    assert pbs.delete_argv("8734201.pbs01") == ["qdel", "8734201.pbs01"]
    assert pbs.delete_gone(fixture("qdel-unknown.err"))
    assert pbs.delete_gone(fixture("qdel-finished.err"))
    assert not pbs.delete_gone(fixture("qdel-bad-state.err"))  # exiting: worth asking again
    assert not pbs.delete_gone(fixture("qstat-no-server.err"))


def test_backfill_counts_free_unreserved_unused_hosts_per_queue():
    assert pbs.backfill_argv() == ["pbsnodes", "-a", "-F", "json"]
    windows = pbs.parse_backfill(fixture("pbsnodes-a-F-json.out"))
    assert windows == [BackfillWindow(nodes=1, minutes=None, queue=""), BackfillWindow(nodes=2, minutes=None, queue="debug"),
                       BackfillWindow(nodes=3, minutes=None, queue="prod")]  # fmt: skip


def test_backfill_needs_every_vnode_of_a_host_free():
    vnode = '"{name}":{{"state":"{state}","resources_available":{{"host":"uv1"}}}}'
    text = '{"nodes":{' + vnode.format(name="uv1[0]", state="free") + "," + vnode.format(name="uv1[1]", state="job-busy") + "}}"
    assert pbs.parse_backfill(text) == []
    assert pbs.parse_backfill(text.replace("job-busy", "free")) == [BackfillWindow(nodes=1, minutes=None, queue="")]


def test_backfill_rejects_what_is_not_pbsnodes_json():
    with pytest.raises(SchedulerError, match="pbsnodes printed something that is not JSON"):
        pbs.parse_backfill("pbsnodes: Server has no node list")
    assert pbs.parse_backfill("") == []


def fake_pbs(tmp_path: Path, qselect_x: str, qstat_code: int = 0) -> dict[str, str]:
    """qselect and qstat stand-ins that log their arguments; qselect -x answers `qselect_x`."""
    log = tmp_path / "calls"
    (tmp_path / "qselect").write_text(
        f'#!/bin/sh\necho "qselect $*" >> {log}\n'
        f'case "$*" in *-x*) {qselect_x} ;; *) printf "8734201.pbs01\\n8734205[].pbs01\\n" ;; esac\n'
    )
    (tmp_path / "qstat").write_text(f'#!/bin/sh\necho "qstat $*" >> {log}\necho "{{}}"\nexit {qstat_code}\n')
    for tool in ("qselect", "qstat"):
        (tmp_path / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}


def run_status(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(pbs.status_argv("alice"), env=env, capture_output=True, text=True, timeout=30)


def test_status_lists_the_users_jobs_with_history(tmp_path):
    done = run_status(fake_pbs(tmp_path, 'printf "8734195.pbs01\\n8734201.pbs01\\n8734205[].pbs01\\n"'))
    assert done.returncode == 0 and done.stdout == "{}\n"
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[:2] == ["qselect -u alice", "qselect -x -u alice"]
    assert calls[2] == "qstat -f -F json -x 8734195.pbs01 8734201.pbs01 8734205[].pbs01"


def test_status_without_job_history_lists_live_jobs_without_x(tmp_path):
    done = run_status(fake_pbs(tmp_path, 'echo "qselect: job_history_enable is set to false" >&2; exit 1'))
    assert done.returncode == 0
    assert (tmp_path / "calls").read_text().splitlines()[-1] == "qstat -f -F json 8734201.pbs01 8734205[].pbs01"


def test_status_with_no_jobs_asks_qstat_nothing(tmp_path):
    env = fake_pbs(tmp_path, "true")
    (tmp_path / "qselect").write_text(f'#!/bin/sh\necho "qselect $*" >> {tmp_path / "calls"}\n')
    done = run_status(env)
    assert (done.returncode, done.stdout) == (0, "")
    assert "qstat" not in (tmp_path / "calls").read_text()


def test_status_tolerates_a_job_purged_between_the_calls_but_not_other_failures(tmp_path):
    assert run_status(fake_pbs(tmp_path, 'echo "8734195.pbs01"', qstat_code=153)).returncode == 0
    assert run_status(fake_pbs(tmp_path, 'echo "8734195.pbs01"', qstat_code=162)).returncode == 162
