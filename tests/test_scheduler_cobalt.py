"""The Cobalt adapter on output composed to Cobalt's table format (tests/fixtures/schedulers/cobalt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from balsam.site.scheduler import cobalt
from balsam.site.scheduler.base import BackfillWindow, BatchRequest, BatchState, SchedulerError

FIXTURES = Path(__file__).parent / "fixtures" / "schedulers" / "cobalt"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def request(**changes) -> BatchRequest:
    values = dict(script=Path("/site/batch/7.sh"), nodes=128, minutes=45, name="balsam-theta-7", output=Path("/site/batch/7.out"))
    return BatchRequest(**{**values, **changes})


def test_submit_argv_runs_the_script_in_script_mode_with_one_output_file():
    assert cobalt.submit_argv(request()) == [
        "qsub", "-n", "128", "-t", "45", "--mode", "script", "--jobname", "balsam-theta-7",
        "-o", "/site/batch/7.out", "-e", "/site/batch/7.out", "--debuglog", "/site/batch/7.cobaltlog", "/site/batch/7.sh",
    ]  # fmt: skip


def test_submit_argv_with_project_and_queue():
    argv = cobalt.submit_argv(request(project="datascience", queue="debug-cache-quad"))
    assert argv[argv.index("-A") + 1] == "datascience"
    assert argv[argv.index("-q") + 1] == "debug-cache-quad"
    assert argv[-1] == "/site/batch/7.sh"


def test_parse_submit():
    assert cobalt.parse_submit(fixture("qsub-ok.out")) == "548131"
    with pytest.raises(SchedulerError, match="qsub printed no job id: failed to create teh job"):
        cobalt.parse_submit(fixture("qsub-no-job-created.out"))
    with pytest.raises(SchedulerError, match="Failed to connect to queue manager"):
        cobalt.parse_submit(fixture("qsub-no-queue-manager.err"))


def test_status_argv_names_the_columns_it_reads():
    assert cobalt.status_argv("alice") == ["qstat", "--header", "JobID:State:Nodes:WallTime:Queue:Project:JobName", "-u", "alice"]


def test_parse_status_reads_every_row():
    listing = {job.id: job for job in cobalt.parse_status(fixture("qstat-header.out"))}
    assert len(listing) == 13
    assert {job_id for job_id, job in listing.items() if job.state is BatchState.RUNNING} == {"99871", "548110", "548115", "548120"}
    assert {job_id for job_id, job in listing.items() if job.state is BatchState.FINISHED} == {"548102"}

    queued = listing["548124"]
    assert (queued.state, queued.native_state, queued.nodes, queued.minutes) == (BatchState.QUEUED, "queued", 256, 120)
    assert (queued.name, queued.queue, queued.project) == ("balsam-theta-8", "default", "datascience")
    for job_id, native in [("548126", "user_hold"), ("548127", "admin_hold"), ("548128", "dep_hold"),
                           ("548129", "dep_fail"), ("548130", "maxrun_hold"), ("548121", "starting")]:  # fmt: skip
        assert (listing[job_id].state, listing[job_id].native_state) == (BatchState.QUEUED, native)

    exiting = listing["548110"]
    assert (exiting.native_state, exiting.nodes, exiting.minutes) == ("exiting", 8, 60)
    assert listing["548128"].name == "postprocess run"  # the last column keeps its spaces
    assert (listing["548125"].project, listing["548125"].name) == ("", "")  # None and N/A mean unset
    assert listing["99871"].minutes == 180  # the id right-aligned by qstat


def test_an_unknown_state_stays_queued_and_keeps_its_word():
    text = "JobID  State    Nodes\n=====================\n7      sleepy   4\n"
    [job] = cobalt.parse_status(text)
    assert (job.state, job.native_state, job.nodes, job.minutes, job.queue) == (BatchState.QUEUED, "sleepy", 4, None, "")


@pytest.mark.parametrize("text", ["", "\n\n", fixture("qstat-header-no-jobs.out")])
def test_an_empty_listing_is_no_jobs(text):
    assert cobalt.parse_status(text) == []


@pytest.mark.parametrize(("text", "says"), [
    ("Failed to connect to queue manager\n", "qstat printed no table with the columns JobID, State: Failed to connect"),
    ("JobID  State   Nodes\n===================\n12     queued  four\n", "qstat row 1 has unreadable nodes"),
    ("JobID  State  Nodes\n==================\n12  queued   4\n", "qstat row 1 does not line up"),
    ("JobID  State  Nodes\n==================\nabc    queued  4\n", "qstat row 1 has no job id"),
])  # fmt: skip
def test_malformed_listings_raise_with_an_excerpt(text, says):
    with pytest.raises(SchedulerError, match=says):
        cobalt.parse_status(text)


def test_delete():
    assert cobalt.delete_argv("548124") == ["qdel", "548124"]
    assert cobalt.delete_gone(fixture("qdel-not-found.out"))
    assert not cobalt.delete_gone(fixture("qsub-no-queue-manager.err"))
    assert not cobalt.delete_gone(fixture("qdel-deleted.out"))


def test_backfill_on_a_cray_groups_idle_nodes_by_queue_and_time():
    assert cobalt.backfill_argv() == ["nodelist"]
    assert cobalt.parse_backfill(fixture("nodelist-cray.out")) == [
        BackfillWindow(nodes=1, minutes=47, queue="backfill"),
        BackfillWindow(nodes=1, minutes=None, queue="debug-cache-quad"),
        BackfillWindow(nodes=2, minutes=None, queue="default"),
        BackfillWindow(nodes=3, minutes=47, queue="default"),
    ]  # a node free for 00:00:00 is no window


def test_backfill_on_a_cluster_reads_the_same_table_with_other_column_names():
    assert cobalt.parse_backfill(fixture("nodelist-cluster.out")) == [
        BackfillWindow(nodes=1, minutes=None, queue=""),  # in no queue: the empty cell does not shift the others
        BackfillWindow(nodes=1, minutes=72, queue="debug"),
        BackfillWindow(nodes=1, minutes=None, queue="default"),
        BackfillWindow(nodes=2, minutes=72, queue="default"),
    ]


def test_backfill_without_nodelist_output_is_none_and_other_text_is_an_error():
    assert cobalt.parse_backfill("") == []  # a Blue Gene: the refusal goes to stderr
    with pytest.raises(SchedulerError, match="nodelist printed no table with the columns Backfill: nodelist is only"):
        cobalt.parse_backfill(fixture("nodelist-blue-gene.err"))
    with pytest.raises(SchedulerError, match="nodelist row 1 has an unreadable Backfill"):
        cobalt.parse_backfill("Host  State  Backfill\n=====================\ncc01  idle   soon\n")
