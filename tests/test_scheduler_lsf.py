"""The LSF adapter on output composed to LSF 10.1's documented formats (tests/fixtures/schedulers/lsf)."""

from __future__ import annotations

from pathlib import Path

import pytest

from balsam.site.scheduler import lsf
from balsam.site.scheduler.base import BackfillWindow, BatchRequest, BatchState, SchedulerError

FIXTURES = Path(__file__).parent / "fixtures" / "schedulers" / "lsf"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def request(**changes) -> BatchRequest:
    values = dict(script=Path("/site/batch/7.sh"), nodes=4, minutes=90, name="balsam-hpc-7", output=Path("/site/batch/7.out"))
    return BatchRequest(**{**values, **changes})


def test_submit_argv_asks_for_one_task_on_each_of_n_exclusive_hosts():
    assert lsf.submit_argv(request()) == [
        "bsub", "-J", "balsam-hpc-7", "-n", "4", "-R", "span[ptile=1]", "-x", "-W", "1:30",
        "-o", "/site/batch/7.out", "/site/batch/7.sh",
    ]  # fmt: skip


def test_submit_argv_with_project_and_queue():
    argv = lsf.submit_argv(request(project="BIP152", queue="debug", minutes=5))
    assert argv[argv.index("-P") + 1] == "BIP152"
    assert argv[argv.index("-q") + 1] == "debug"
    assert argv[argv.index("-W") + 1] == "0:05"
    assert "-e" not in argv  # without -e, LSF writes stderr to the -o file
    assert argv[-1] == "/site/batch/7.sh"


def test_parse_submit():
    assert lsf.parse_submit(fixture("bsub-ok.out")) == "482914"
    assert lsf.parse_submit(fixture("bsub-ok-default-queue.out")) == "482915"


@pytest.mark.parametrize("name", ["bsub-permission-denied.err", "bsub-no-such-queue.err"])
def test_parse_submit_names_what_bsub_printed_when_there_is_no_id(name):
    with pytest.raises(SchedulerError, match=f"bsub printed no job id: {fixture(name).strip()}"):
        lsf.parse_submit(fixture(name))


def test_status_argv_asks_json_with_recently_finished_jobs():
    argv = lsf.status_argv("alice")
    assert argv[:4] == ["bjobs", "-u", "alice", "-a"] and argv[-1] == "-json"
    assert argv[argv.index("-o") + 1].split() == ["jobid", "stat", "queue", "job_name", "proj_name", "nreq_slot", "nexec_host",
                                                  "runtimelimit", "exit_code", "exit_reason", "pend_reason"]  # fmt: skip


def test_parse_status_reads_every_record():
    listing = {job.id: job for job in lsf.parse_status(fixture("bjobs-o-json.out"))}
    assert len(listing) == 15
    by_state = {state: sorted(j for j, job in listing.items() if job.state is state) for state in BatchState}
    assert by_state[BatchState.QUEUED] == ["482910", "482911", "482912", "482913"]
    assert by_state[BatchState.RUNNING] == ["482901", "482902", "482905", "482906", "482907", "482908"]
    assert by_state[BatchState.FINISHED] == ["482871", "482872", "482880", "482884", "482890"]

    pending = listing["482911"]
    assert (pending.native_state, pending.nodes, pending.minutes, pending.queue, pending.project) == ("PEND", 4, 60, "normal", "BIP152")
    assert pending.reason == "Not enough hosts to meet the job's spanning requirement: 412 hosts"
    assert (listing["482912"].native_state, listing["482912"].reason) == ("PSUSP", "The job was suspended by the user while pending")

    running = listing["482901"]
    assert (running.name, running.nodes, running.minutes, running.reason, running.exit_code) == ("balsam-hpc_site-6", 4, 60, "", None)
    assert listing["482902"].minutes is None  # no run limit
    assert listing["482908"].native_state == "ZOMBI"


def test_parse_status_says_how_finished_jobs_ended():
    listing = {job.id: job for job in lsf.parse_status(fixture("bjobs-o-json.out"))}
    assert (listing["482871"].exit_code, listing["482871"].reason) == (0, "completed")
    assert (listing["482880"].exit_code, listing["482880"].reason) == (1, "exited with code 1")
    assert (listing["482884"].exit_code, listing["482884"].reason) == (
        140, "TERM_RUNLIMIT: job killed after reaching LSF run time limit (exited with code 140)")
    killed = listing["482890"]  # killed while pending: no exit code, no execution host
    assert (killed.exit_code, killed.nodes, killed.reason) == (None, 1, "TERM_OWNER: job killed by owner (exited)")


@pytest.mark.parametrize(("limit", "minutes"), [("60.0", 60), ("1440.0", 1440), ("30.0/hostA", 30), ("01:30:00", 90), ("", None)])
def test_run_limit_in_every_documented_form(limit, minutes):
    [job] = lsf.parse_status('{"COMMAND":"bjobs","JOBS":1,"RECORDS":[{"JOBID":"9","STAT":"RUN","RUNTIMELIMIT":"%s"}]}' % limit)
    assert job.minutes == minutes


def test_an_unknown_state_stays_queued_and_keeps_its_word():
    [job] = lsf.parse_status('{"COMMAND":"bjobs","JOBS":1,"RECORDS":[{"JOBID":"9","STAT":"PROV","NREQ_SLOT":"2"}]}')
    assert (job.state, job.native_state, job.nodes, job.queue) == (BatchState.QUEUED, "PROV", 2, "")


@pytest.mark.parametrize("text", ["", fixture("bjobs-o-json-no-jobs.out"), fixture("bjobs-no-job-found.err"),
                                  '{"COMMAND":"bjobs","JOBS":1,"RECORDS":[{"ERROR":"Job <7> is not found"}]}'])
def test_an_empty_listing_is_no_jobs(text):
    assert lsf.parse_status(text) == []


@pytest.mark.parametrize(("text", "says"), [
    ('{"COMMAND":"bjobs","JOBS":1,"RECORDS":[{"JOBID":"9",', 'not JSON .*"RECORDS"'),
    ("LSF is down. Please wait ...", "not JSON .*LSF is down"),
    ('{"COMMAND":"bjobs","JOBS":0}', "no list of RECORDS"),
    ('{"COMMAND":"bjobs","JOBS":1,"RECORDS":[{"STAT":"RUN"}]}', "record 1 has no JOBID"),
    ('{"COMMAND":"bjobs","JOBS":1,"RECORDS":[{"JOBID":"9","NREQ_SLOT":"many"}]}', "record 1 has unreadable slots"),
])  # fmt: skip
def test_malformed_listings_raise_with_an_excerpt(text, says):
    with pytest.raises(SchedulerError, match=f"^bjobs .*{says}"):
        lsf.parse_status(text)


def test_delete():
    assert lsf.delete_argv("482901") == ["bkill", "482901"]
    assert lsf.delete_gone(fixture("bkill-finished.err"))
    assert lsf.delete_gone(fixture("bkill-unknown.err"))
    assert not lsf.delete_gone(fixture("bkill-permission-denied.err"))


def test_backfill_counts_wholly_free_hosts_at_their_longest_window():
    assert lsf.backfill_argv() == ["bslots", "-l"]
    assert lsf.parse_backfill(fixture("bslots-l.out")) == [
        BackfillWindow(nodes=2, minutes=None), BackfillWindow(nodes=3, minutes=135), BackfillWindow(nodes=3, minutes=35),
    ]  # fmt: skip


@pytest.mark.parametrize("text", ["", fixture("bslots-l-none.out")])
def test_no_backfill_window(text):
    assert lsf.parse_backfill(text) == []


@pytest.mark.parametrize(("text", "says"), [
    ("SLOTS: 4\nRUNTIME: soon\nHOSTS: 4*cn1\n", "window 1 has an unreadable RUNTIME: 'soon'"),
    ("SLOTS: 4\nRUNTIME: UNLIMITED\nHOSTS: cn1 cn2\n", "a host not as SLOTS\\*HOST: 'cn1'"),
    ("bslots: LSF is down\n", "a line outside a SLOTS/RUNTIME/HOSTS block"),
])  # fmt: skip
def test_malformed_backfill_raises(text, says):
    with pytest.raises(SchedulerError, match=says):
        lsf.parse_backfill(text)
