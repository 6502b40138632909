"""Stage-in and stage-out at a site: the transfer service over the real local backend, a real
database and real launchers; confinement of every destination; retries, then a clear failure."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from launcher_helpers import run_launcher

from balsam.errors import BalsamError
from balsam.site.transfer_plan import Batch, PendingItem, after_attempt, batches, job_outcome
from balsam.site.transfers import TransferService
from balsam.site.workdir import workdir
from balsam.states import JobState as S

# A real program: reads its staged-in input, writes an output that proves it did.
DOUBLE = (
    f"{sys.executable} -c 'import sys; data = open(sys.argv[1]).read(); "
    f"open(\"out.txt\", \"w\").write(data + data); print(len(data))' {{infile}}"
)


def rounds(service: TransferService, until, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.round()
        if until():
            return
        time.sleep(0.05)
    raise AssertionError(f"transfer service did not get there within {timeout} s: {service.status}")


def state(site, job_id: int) -> S:
    return S(site.job(job_id).state)


@pytest.fixture
def service(site):
    site.settings.transfer.retry_delay_s = 0.05
    # The test's own folder holds the files jobs stage in (and the site folder, whose private files stay refused).
    site.settings.transfer.read_roots = [str(site.settings.path.parent)]
    return TransferService(site)


def test_inputs_are_staged_in_run_on_and_outputs_staged_out(site, service, tmp_path):
    service.settings.link = False  # copied, by the backend's threads (files linked at once skip them: the next test)
    source = tmp_path / "inputs"
    source.mkdir()
    (source / "a.dat").write_text("alpha-")
    (source / "b.dat").write_text("beta-")
    site.add_app("double", DOUBLE)
    archive = site.settings.data_dir / "archive"
    jobs = [
        site.add_job("double", {"infile": "in/x.dat"}, name=name, inputs={"in/x.dat": (source / f"{name}.dat").as_uri()},
                     outputs=["out.txt"], stage_out=[{"source": "out.txt", "dest": (archive / f"{name}.txt").as_uri()}]).id
        for name in ("a", "b")
    ]  # fmt: skip
    # A launcher does not take a job whose files are not there yet.
    assert run_launcher(site, "--until-idle", "--job-mode", "serial").returncode == 0
    assert {state(site, j) for j in jobs} == {S.READY}
    rounds(service, lambda: all(state(site, j) == S.STAGED_IN for j in jobs))
    assert (workdir(site.settings.data_dir, "default", jobs[0]) / "in" / "x.dat").read_text() == "alpha-"
    # Both jobs' files went in one transfer task (one backend, one pair of collections).
    with site.session() as session:
        tasks = session.execute(text("SELECT item_count, state FROM transfer_tasks")).all()
    assert [(t.item_count, t.state) for t in tasks] == [(2, "done")]
    assert run_launcher(site, "--until-idle", "--job-mode", "serial").returncode == 0
    assert {state(site, j) for j in jobs} == {S.POSTPROCESSED}  # waiting for its stage-out
    rounds(service, lambda: all(state(site, j) == S.JOB_FINISHED for j in jobs))
    assert (archive / "a.txt").read_text() == "alpha-alpha-"
    assert (archive / "b.txt").read_text() == "beta-beta-"
    history = [(e.from_state, e.to_state, e.message) for e in site.history(jobs[0])]
    assert ("READY", "STAGED_IN", "staged in 1 file(s)") in history
    assert ("POSTPROCESSED", "STAGED_OUT", "staged out 1 file(s)") in history
    # The service's bookkeeping is gone once the jobs moved on: a reset job stages afresh.
    assert service.round()["items"] == {}


def test_files_on_this_filesystem_are_linked_in_the_round_that_finds_their_job(site, service, tmp_path):
    """A job's inputs that can all be hard-linked here (a parent's outputs at this site, say) are
    linked in the round that finds the job, which is then STAGED_IN: no transfer task, no second
    round. A job with one file that cannot be linked (a folder) goes the backend's way whole."""
    source = tmp_path / "inputs"
    (source / "tree").mkdir(parents=True)
    (source / "a.dat").write_text("alpha-")
    (source / "b.dat").write_text("beta-")
    (source / "tree" / "c.dat").write_text("gamma-")
    site.add_app("double", DOUBLE)
    archive = site.settings.data_dir / "archive"
    linked = site.add_job("double", {"infile": "x.dat"}, inputs={"x.dat": (source / "a.dat").as_uri(), "y.dat": (source / "b.dat").as_uri()},
                          outputs=["out.txt"], stage_out=[{"source": "out.txt", "dest": (archive / "a.txt").as_uri()}]).id  # fmt: skip
    mixed = site.add_job("double", {"infile": "x.dat"}, inputs={"x.dat": (source / "a.dat").as_uri(), "tree": (source / "tree").as_uri()}).id
    service.round()
    assert state(site, linked) == S.STAGED_IN, site.history(linked)
    folder = workdir(site.settings.data_dir, "default", linked)
    assert (folder / "x.dat").stat().st_ino == (source / "a.dat").stat().st_ino and (folder / "y.dat").read_text() == "beta-"
    assert not [p for p in folder.iterdir() if ".balsam-partial-" in p.name], "no temporary name is left"
    assert [(e.from_state, e.to_state, e.message) for e in site.history(linked)][-1] == ("READY", "STAGED_IN", "staged in 2 file(s)")
    assert state(site, mixed) == S.READY, "the folder is copied by the backend, the whole job waits for it"
    with site.session() as session:
        tasks = session.execute(text("SELECT item_count FROM transfer_tasks")).scalars().all()
    assert tasks == [2], "only the mixed job's files went to the backend"
    rounds(service, lambda: state(site, mixed) == S.STAGED_IN)
    assert (workdir(site.settings.data_dir, "default", mixed) / "tree" / "c.dat").read_text() == "gamma-"
    # Its output, on the same filesystem, is linked to its destination as soon as the job is done.
    assert run_launcher(site, "--until-idle", "--job-mode", "serial").returncode == 0
    service.round()
    assert state(site, linked) == S.JOB_FINISHED
    assert (archive / "a.txt").stat().st_ino == (folder / "out.txt").stat().st_ino
    assert (archive / "a.txt").read_text() == "alpha-alpha-"


def test_a_missing_source_is_retried_then_fails_the_job_with_the_reason(site, service, tmp_path):
    site.settings.transfer.retries = 2
    site.add_app("cat", "cat {f}")
    job = site.add_job("cat", {"f": "x"}, inputs={"x": (tmp_path / "nowhere.dat").as_uri()}).id
    attempts = []

    def failed():
        with site.session() as session:
            attempts.extend(session.execute(text("SELECT attempts FROM transfer_items")).scalars())
        return state(site, job) == S.FAILED

    rounds(service, failed)
    assert max(attempts) == 2  # tried 1 + 2 retries; the third failure is final
    record = site.job(job)
    assert "stage-in failed for 1 of 1 file(s)" in site.history(job)[-1].message
    assert str(tmp_path / "nowhere.dat") in record.error_tail


def test_a_file_appearing_between_retries_is_picked_up(site, service, tmp_path):
    site.settings.transfer.retries = 5
    site.settings.transfer.retry_delay_s = 0.3
    site.add_app("cat", "cat {f}")
    late = tmp_path / "late.dat"
    job = site.add_job("cat", {"f": "x"}, inputs={"x": late.as_uri()}).id
    service.round()
    late.write_text("here now")
    rounds(service, lambda: state(site, job) == S.STAGED_IN)
    assert (workdir(site.settings.data_dir, "default", job) / "x").read_text() == "here now"


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"inputs": {"../escape": "file:///etc/hostname"}}, "must not contain '..'"),
        ({"inputs": {"/etc/passwd": "file:///etc/hostname"}}, "not absolute"),
        ({"inputs": {"x": "http://example.org/x"}}, "unknown scheme 'http'"),
        ({"inputs": {"x": "relative/path"}}, "unknown scheme"),
        ({"stage_in": [{"source": "file:///a", "dest": "x"}], "inputs": {"x": "file:///b"}}, "staged in more than once"),
        ({"stage_in": [{"from": "file:///a"}]}, "exactly 'source' and 'dest'"),
        ({"stage_out": [{"source": "out", "dest": "file://host/x"}]}, "names no host"),
        ({"stage_out": [{"source": "../../x", "dest": "file:///tmp/x"}]}, "must not contain '..'"),
        ({"outputs": ["a/../../b"]}, "must not contain '..'"),
    ],
)
def test_hostile_file_declarations_are_refused_and_nothing_is_stored(site, fields, problem):
    site.add_app("cat", "cat {f}")
    with pytest.raises(BalsamError, match=problem):
        site.add_job("cat", {"f": "x"}, **fields)
    assert site.jobs() == []


def test_destinations_reaching_out_through_links_or_paths_fail_the_job_before_any_copy(site, service, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    src = tmp_path / "src.dat"
    src.write_text("secret")
    site.add_app("cat", "cat {f}")
    # A link inside the job's folder that points out of it: writing through it would escape.
    linked = site.add_job("cat", {"f": "x"}, workflow="w", inputs={"lnk/x": src.as_uri()}).id
    folder = workdir(site.settings.data_dir, "w", linked)
    folder.mkdir(parents=True)
    (folder / "lnk").symlink_to(outside)
    # A stage-out to a folder the site may not write to.
    out_job = site.add_job("cat", {"f": "x"}, workflow="w", stage_out=[{"source": "x", "dest": (outside / "x").as_uri()}]).id
    from balsam.site.db import jobstore

    with site.session() as session:  # as a launcher leaves it: run, post-processed, let go
        for to in (S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED):
            jobstore.transition(session, [out_job], to)
    (workdir(site.settings.data_dir, "w", out_job)).mkdir(parents=True)
    (workdir(site.settings.data_dir, "w", out_job) / "x").write_text("result")
    rounds(service, lambda: state(site, linked) == S.FAILED and state(site, out_job) == S.FAILED)
    assert "outside the folders this site may write to" in site.history(linked)[-1].message
    assert "stage-out failed" in site.history(out_job)[-1].message
    assert os.listdir(outside) == []
    # The same stage-out goes through once the folder is allowed.
    site.settings.transfer.allowed_roots = [str(outside)]
    with site.session() as session:
        jobstore.transition(session, [out_job], S.CREATED, "reset")
    # (a reset job starts from the beginning: walk it to POSTPROCESSED again)
    with site.session() as session:
        for to in (S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED):
            jobstore.transition(session, [out_job], to)
    rounds(service, lambda: state(site, out_job) == S.JOB_FINISHED)
    assert (outside / "x").read_text() == "result"


def test_stage_in_sources_are_confined_and_never_a_sites_or_coordinators_private_files(site, service, tmp_path):
    """A job may name any file as an input; the agent copies only what the site's settings allow, and
    never the secrets of this site, another site or a coordinator, whatever link or path leads there."""
    from balsam.private_files import write_private

    settings = site.settings
    write_private(settings.argo_credential_file, "the site's Argo credential")
    other = tmp_path / "other-site"  # another site's folder beside this one
    (other / "logs").mkdir(parents=True)
    (other / "balsam-site.toml").write_text('[site]\nname = "other"\n')
    (other / "logs" / "agent.log").write_text("other site's log")
    (other / "data").mkdir()
    (other / "data" / "result.txt").write_text("shared result")
    coordinator = tmp_path / "argo"
    coordinator.mkdir()
    (coordinator / "argo.toml").write_text("")
    write_private(coordinator / "owner-token", "argo-u-secret")
    outside = Path(tempfile.mkdtemp(prefix="balsam-outside-"))  # not under any allowed root
    (outside / "x.dat").write_text("not for jobs")
    (tmp_path / "link-to-settings").symlink_to(settings.settings_file)
    (settings.data_dir / "innocent.txt").symlink_to("../argo-credential.json")  # inside data/ by its name only
    (tmp_path / "ok.dat").write_text("fine")
    site.add_app("cat", "cat {f}")
    refused = {
        "settings": (settings.settings_file, "is a private file of the Balsam site in"),
        "credential": (settings.argo_credential_file, "is a private file of the Balsam site in"),
        "link": (tmp_path / "link-to-settings", "(which resolves to " + str(settings.settings_file) + ") is a private file"),
        "link-in-data": (settings.data_dir / "innocent.txt", "is a private file of the Balsam site"),
        "other-site-log": (other / "logs" / "agent.log", f"is a private file of the Balsam site in {other} (only its data/ folder"),
        "owner-token": (coordinator / "owner-token", f"is a private file of the Argo coordinator in {coordinator} (none of it"),
        "outside": (outside / "x.dat", "is outside the folders this site may read from"),
        "etc": (Path("/etc/hostname"), "is outside the folders this site may read from"),
    }
    jobs = {name: site.add_job("cat", {"f": "x"}, inputs={"x": f"file://{source}"}).id for name, (source, _) in refused.items()}
    allowed = {name: site.add_job("cat", {"f": "x"}, inputs={"x": source.as_uri()}).id
               for name, source in (("data", other / "data" / "result.txt"), ("root", tmp_path / "ok.dat"))}  # fmt: skip
    rounds(service, lambda: all(state(site, j) == S.FAILED for j in jobs.values()) and all(state(site, j) == S.STAGED_IN for j in allowed.values()))
    for name, (source, reason) in refused.items():
        event = site.history(jobs[name])[-1]
        assert event.to_state == "FAILED" and "stage-in failed for 1 of 1 file(s): x: stage-in source" in event.message, name
        assert reason in event.message, (name, event.message)
        assert not (workdir(settings.data_dir, "default", jobs[name]) / "x").exists()
    assert (workdir(settings.data_dir, "default", allowed["data"]) / "x").read_text() == "shared result"
    assert (workdir(settings.data_dir, "default", allowed["root"]) / "x").read_text() == "fine"
    # Without the extra root, only the site's data/ folder remains readable.
    settings.transfer.read_roots = []
    job = site.add_job("cat", {"f": "x"}, inputs={"x": (tmp_path / "ok.dat").as_uri()}).id
    rounds(service, lambda: state(site, job) == S.FAILED)
    assert f"is outside the folders this site may read from ({settings.data_dir.resolve()})" in site.history(job)[-1].message


def test_transfer_slots_bound_the_tasks_in_flight_and_batching_fills_them(site, tmp_path):
    site.settings.transfer.slots = 2
    site.settings.transfer.max_items = 3
    site.settings.transfer.read_roots = [str(tmp_path)]
    site.settings.transfer.link = False  # copies go through the backend (links are made at once)
    service = TransferService(site)
    site.add_app("cat", "cat {f}")
    src = tmp_path / "f.dat"
    src.write_bytes(os.urandom(1000))
    ids = site.add_jobs([{"app": "cat", "params": {"f": "x"}, "inputs": {"x": src.as_uri()}} for _ in range(10)])
    service.discover()
    assert service.submit() == 2  # 10 files, 3 per task, but only 2 slots
    with site.session() as session:
        active = session.execute(text("SELECT count(*) FROM transfer_tasks WHERE state = 'active'")).scalar()
    assert active == 2
    rounds(service, lambda: all(state(site, j) == S.STAGED_IN for j in ids))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    for j in ids:
        assert hashlib.sha256((workdir(site.settings.data_dir, "default", j) / "x").read_bytes()).hexdigest() == digest


def test_a_job_killed_while_waiting_for_its_files_is_left_alone(site, service, tmp_path):
    site.add_app("cat", "cat {f}")
    job = site.add_job("cat", {"f": "x"}, inputs={"x": (tmp_path / "never.dat").as_uri()}).id
    site.settings.transfer.retry_delay_s = 30  # it waits between attempts
    service.round()
    site.kill_job(job)
    service.round()
    assert state(site, job) == S.USER_KILLED
    assert service.round()["items"] == {}


# -- the pure core ------------------------------------------------------------------------------


def test_batches_group_by_route_oldest_first_within_slots():
    items = [
        PendingItem(1, "local", "in", "", ""),
        PendingItem(2, "globus", "in", "A", "B"),
        PendingItem(3, "local", "in", "", ""),
        PendingItem(4, "globus", "in", "A", "B"),
        PendingItem(5, "globus", "in", "C", "B"),
        PendingItem(6, "local", "out", "", ""),
    ]
    assert batches(items, free_slots=10, max_items=1000) == [
        Batch("local", "in", "", "", (1, 3)),
        Batch("globus", "in", "A", "B", (2, 4)),
        Batch("globus", "in", "C", "B", (5,)),
        Batch("local", "out", "", "", (6,)),
    ]
    assert [b.item_ids for b in batches(items, free_slots=2, max_items=1)] == [(1,), (2,)]
    assert batches(items, free_slots=0, max_items=10) == []


def test_batches_cover_every_item_once_when_slots_allow():
    import random

    rng = random.Random(7)
    for _ in range(300):
        items = [PendingItem(i, rng.choice(["local", "globus"]), rng.choice(["in", "out"]), rng.choice("AB"), rng.choice("CD"))
                 for i in range(rng.randint(0, 40))]  # fmt: skip
        cap = rng.randint(1, 7)
        result = batches(items, free_slots=1000, max_items=cap)
        flat = [i for b in result for i in b.item_ids]
        assert sorted(flat) == [i.id for i in items]
        by_id = {i.id: i for i in items}
        for b in result:
            assert 1 <= len(b.item_ids) <= cap
            assert {(by_id[i].backend, by_id[i].direction, by_id[i].source_endpoint, by_id[i].dest_endpoint) for i in b.item_ids} == {
                (b.backend, b.direction, b.source_endpoint, b.dest_endpoint)
            }
        limited = batches(items, free_slots=2, max_items=cap)
        assert limited == result[:2]


def test_retries_double_their_delay_then_fail():
    assert after_attempt(0, 3, 5.0).state == "pending" and after_attempt(0, 3, 5.0).delay_s == 5.0
    assert after_attempt(1, 3, 5.0).delay_s == 10.0
    assert after_attempt(2, 3, 5.0).delay_s == 20.0
    assert after_attempt(3, 3, 5.0).state == "failed"
    assert after_attempt(0, 0, 5.0).state == "failed"
    assert after_attempt(0, 3, 5.0, fatal=True).state == "failed"
    assert job_outcome(["done", "active"]) == "waiting"
    assert job_outcome(["done", "failed"]) == "failed"
    assert job_outcome(["done", "done"]) == "done"


# -- through Globus, on the SDK's own fixtures (no network here) ---------------------------------


REMOTE = "aaaaaaaa-0000-4000-8000-00000000000a"
HERE = "bbbbbbbb-0000-4000-8000-00000000000b"


@pytest.fixture
def globus_service(site):
    import globus_sdk
    import responses
    from globus_sdk.testing import load_response

    from balsam.transfer.globus import GlobusBackend

    site.settings.transfer.globus_endpoint = HERE
    site.settings.transfer.globus_root = "/projects/me/site"
    site.settings.transfer.retries = 0
    responses.start()
    load_response(globus_sdk.TransferClient.get_submission_id)
    meta = load_response(globus_sdk.TransferClient.submit_transfer).metadata
    service = TransferService(site, backends={"globus": GlobusBackend(globus_sdk.TransferClient(), sync_level="checksum")})
    try:
        yield service, meta["task_id"]
    finally:
        responses.stop()
        responses.reset()


def _globus_task(task_id: str, status: str, nice_status=None, events=()):
    from globus_sdk.testing import RegisteredResponse

    doc = {"DATA_TYPE": "task", "task_id": task_id, "status": status, "type": "TRANSFER", "nice_status": nice_status,
           "bytes_transferred": 10, "files_transferred": 3, "faults": len(events), "fatal_error": None}  # fmt: skip
    RegisteredResponse(service="transfer", path=f"/v0.10/task/{task_id}", json=doc).add()
    RegisteredResponse(service="transfer", path=f"/v0.10/task/{task_id}/event_list",
                       json={"DATA_TYPE": "event_list", "DATA": list(events), "offset": 0, "limit": 20, "total": len(events)}).add()  # fmt: skip
    RegisteredResponse(service="transfer", method="POST", path=f"/v0.10/task/{task_id}/cancel",
                       json={"DATA_TYPE": "result", "code": "Canceled", "message": "cancelled"}).add()  # fmt: skip


def test_files_of_many_jobs_from_one_collection_go_in_one_globus_task(site, globus_service):
    import json as _json

    import responses

    service, task_id = globus_service
    site.add_app("cat", "cat {f}")
    ids = site.add_jobs([
        {"app": "cat", "params": {"f": "x"}, "workflow": "w", "inputs": {"x": f"globus://{REMOTE}/data/x{i}.dat", "y/z": f"globus://{REMOTE}/data/z{i}"}}
        for i in range(3)
    ])  # fmt: skip
    service.discover()
    assert service.submit() == 1
    (sent,) = [c.request for c in responses.calls if c.request.url.split("?")[0].endswith("/v0.10/transfer")]
    body = _json.loads(sent.body)
    assert (body["source_endpoint"], body["destination_endpoint"]) == (REMOTE, HERE)
    assert len(body["DATA"]) == 6
    # The site's files, as its own collection shows them (transfer.globus_root stands for the site folder).
    assert body["DATA"][0]["destination_path"] == f"/projects/me/site/data/w/{ids[0]}/x"
    assert body["sync_level"] == 3 and body["verify_checksum"] is False
    _globus_task(task_id, "ACTIVE", nice_status="Queued")
    service.poll()
    assert {state(site, j) for j in ids} == {S.READY}  # still moving
    responses.reset()
    _globus_task(task_id, "SUCCEEDED")
    service.poll()
    service.settle()
    assert {state(site, j) for j in ids} == {S.STAGED_IN}


def test_a_globus_task_stuck_on_a_missing_source_is_cancelled_and_fails_its_jobs(site, globus_service):
    import responses

    service, task_id = globus_service
    site.add_app("cat", "cat {f}")
    job = site.add_job("cat", {"f": "x"}, inputs={"x": f"globus://{REMOTE}/data/gone.dat"}).id
    service.discover()
    service.submit()
    _globus_task(task_id, "ACTIVE", nice_status="FILE_NOT_FOUND", events=[
        {"DATA_TYPE": "event", "code": "FILE_NOT_FOUND", "description": "No such file or directory", "details": "/data/gone.dat",
         "is_error": True, "time": "2026-01-01T00:00:00+00:00"}])  # fmt: skip
    service.poll()
    service.settle()
    assert state(site, job) == S.FAILED
    assert any(c.request.url.split("?")[0].endswith(f"/task/{task_id}/cancel") for c in responses.calls)
    message = site.history(job)[-1].message
    assert "stage-in failed" in message and "FILE_NOT_FOUND" in message.upper().replace(" ", "_")


def test_a_site_without_a_collection_refuses_a_globus_source_clearly(site, service):
    site.add_app("cat", "cat {f}")
    job = site.add_job("cat", {"f": "x"}, inputs={"x": f"globus://{REMOTE}/data/x"}).id
    rounds(service, lambda: state(site, job) == S.FAILED)
    assert "no transfer.globus_endpoint setting" in site.history(job)[-1].message


def test_transfer_ls_shows_tasks_and_waiting_files(site, service, balsam, tmp_path):
    import json as _json

    site.settings.transfer.retry_delay_s = 60
    site.add_app("cat", "cat {f}")
    good = tmp_path / "g.dat"
    good.write_text("ok")
    site.add_job("cat", {"f": "x"}, inputs={"x": good.as_uri()})
    site.add_job("cat", {"f": "x"}, inputs={"x": (tmp_path / "missing.dat").as_uri()})
    rounds(service, lambda: service.status.get("items", {}).get("pending") == 1)
    result = balsam("transfer ls --all --json")
    assert result.code == 0, result.err
    doc = _json.loads(result.out)
    assert {t["state"] for t in doc["tasks"]} == {"done"}
    (waiting,) = doc["files"]
    assert (waiting["direction"], waiting["state"], waiting["files"]) == ("in", "pending", 1)
    assert "source missing" in waiting["error"]
    text_out = balsam("transfer ls").out
    assert "stage-in: 1 file(s) of 1 job(s) pending (last error:" in text_out
