"""Filesystem triggers at a site: real watchdog observers on real folders, a real database."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from argo_helpers import wait_for
from balsam.fswatch import glob_problem
from balsam.site.agent import Agent
from balsam.site.triggers import TriggerWatcher, add_rule, rules, set_paused

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def inbox(site, tmp_path) -> Path:
    site.add_app("reduce", "reduce --in {infile} --label {label}")
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def _watch(site, **kw) -> tuple[TriggerWatcher, threading.Thread, threading.Event]:
    watcher = TriggerWatcher(site, reload_s=kw.pop("reload_s", 0.2))
    thread, stop = watcher.start()
    return watcher, thread, stop


def _stop(*runs) -> None:
    for _watcher, thread, stop in runs:
        stop.set()
    for _watcher, thread, _stop in runs:
        thread.join(10)


def _jobs_by_file(site) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for job in site.jobs():
        found.setdefault(job.data["trigger"]["path"], []).append(job.id)
    return found


def _write(path: Path, body: bytes = b"x") -> None:
    path.write_bytes(body)


def _started(watcher: TriggerWatcher, rules_n: int = 1) -> None:
    wait_for(lambda: watcher.status["rules"] >= rules_n, 10, "the watcher to watch the rule", 0.02)


def test_a_closed_file_becomes_one_job_with_its_parameters_filled(site, inbox):
    add_rule(site, "raw", inbox, "reduce", {"infile": "{path}", "label": "{stem}-{name}"}, patterns=["*.dat"],
             tags={"campaign": "c1"}, resources={"nodes": 1, "wall_time_min": 5}, workflow="wf")  # fmt: skip
    run = _watch(site)
    try:
        _started(run[0])
        _write(inbox / "a1.dat")
        _write(inbox / "skip.txt")  # not matching the pattern
        job = wait_for(lambda: site.jobs(), 5, "the job", 0.02)[0]
        assert job.parameters == {"infile": str(inbox / "a1.dat"), "label": "a1-a1.dat"}
        assert job.tags == {"campaign": "c1", "trigger": "raw"} and job.workflow == "wf" and job.wall_time_min == 5
        assert job.name == "a1.dat" and job.state == "READY"
        time.sleep(0.3)
        _write(inbox / "a1.dat", b"rewritten")  # the same file again: still one job
        time.sleep(0.3)
        assert len(site.jobs()) == 1
    finally:
        _stop(run)
    assert rules(site)[0]["files"] == 1 and rules(site)[0]["jobs"] == 1


def test_a_burst_of_500_files_makes_500_jobs_in_batches(site, inbox):
    add_rule(site, "raw", inbox, "reduce", {"infile": "{path}", "label": "{name}"}, recursive=True)
    run = _watch(site)
    try:
        _started(run[0])
        (inbox / "sub").mkdir()
        for i in range(500):
            _write(inbox / ("sub" if i % 2 else "") / f"f{i:04d}.dat")
        wait_for(lambda: len(site.jobs()) >= 500, 20, "500 jobs", 0.1)
        time.sleep(0.3)
        by_file = _jobs_by_file(site)
        assert len(by_file) == 500 and all(len(ids) == 1 for ids in by_file.values())
    finally:
        _stop(run)
    with site.session() as session:
        from sqlalchemy import text

        # One transaction per batch: far fewer distinct creation times than jobs.
        batches = session.execute(text("SELECT count(DISTINCT created_at) FROM jobs")).scalar()
    assert batches < 250


def test_a_file_written_in_chunks_counts_once_and_only_after_it_is_closed(site, inbox):
    add_rule(site, "raw", inbox, "reduce", {"infile": "{path}", "label": "{name}"}, settle_s=30)
    run = _watch(site)
    try:
        _started(run[0])
        with open(inbox / "big.dat", "wb") as out:
            for _ in range(4):
                out.write(b"y" * 100_000)
                out.flush()
                os.fsync(out.fileno())
                time.sleep(0.3)
                assert site.jobs() == []  # open, still being written
        wait_for(lambda: site.jobs(), 5, "the job after close", 0.02)
        time.sleep(0.3)
        assert len(site.jobs()) == 1
    finally:
        _stop(run)


def test_without_a_close_event_a_file_counts_once_its_size_is_stable(site, inbox):
    # Files found by the scan have no close event: they count once unchanged for settle_s.
    add_rule(site, "raw", inbox, "reduce", {"infile": "{path}", "label": "{name}"}, settle_s=1.0)
    fresh = inbox / "fresh.dat"
    _write(fresh)
    run = _watch(site)
    try:
        _started(run[0])
        time.sleep(0.5)
        assert site.jobs() == []  # too recent to trust
        wait_for(lambda: site.jobs(), 5, "the job once stable", 0.05)
    finally:
        _stop(run)


def test_temporary_and_ignored_names_never_count_and_a_rename_into_place_does(site, inbox):
    add_rule(site, "raw", inbox, "reduce", {"infile": "{path}", "label": "{name}"}, ignore=["*.log", "scratch/*"], recursive=True)
    run = _watch(site)
    try:
        _started(run[0])
        (inbox / "scratch").mkdir()
        (inbox / ".hidden").mkdir()
        for name in (".dot", "a.tmp", "b.part", "c~", ".balsam-partial-x", "run.log", "scratch/s.dat", ".hidden/h.dat"):
            _write(inbox / name)
        partial = inbox / ".balsam-partial-final.dat"
        _write(partial, b"done")
        partial.rename(inbox / "final.dat")
        wait_for(lambda: site.jobs(), 5, "the renamed file's job", 0.02)
        time.sleep(0.5)
        assert [j.name for j in site.jobs()] == ["final.dat"]
    finally:
        _stop(run)


def test_files_arriving_while_down_or_paused_get_their_jobs_on_restart_and_resume(site, inbox):
    add_rule(site, "raw", inbox, "reduce", {"infile": "{path}", "label": "{name}"}, settle_s=0.2)
    run = _watch(site)
    _started(run[0])
    _write(inbox / "before.dat")
    wait_for(lambda: site.jobs(), 5, "the first job", 0.02)
    _stop(run)
    for i in range(20):
        _write(inbox / f"down{i}.dat")  # nobody watching
    run = _watch(site)
    try:
        wait_for(lambda: len(site.jobs()) == 21, 10, "jobs of the files that came while down", 0.05)
        set_paused(site, "raw", True)
        wait_for(lambda: run[0].status["rules"] == 0, 5, "the rule to be unwatched", 0.05)
        _write(inbox / "while-paused.dat")
        time.sleep(0.6)
        assert len(site.jobs()) == 21
        set_paused(site, "raw", False)
        wait_for(lambda: len(site.jobs()) == 22, 10, "the paused file's job after resume", 0.05)
    finally:
        _stop(run)
    assert all(len(ids) == 1 for ids in _jobs_by_file(site).values())


def test_two_watchers_racing_on_one_site_make_one_job_per_file(site, inbox):
    add_rule(site, "raw", inbox, "reduce", {"infile": "{path}", "label": "{name}"})
    runs = [_watch(site), _watch(site)]
    try:
        for run in runs:
            _started(run[0])
        for i in range(300):
            _write(inbox / f"r{i:03d}.dat")
        wait_for(lambda: len(site.jobs()) >= 300, 20, "300 jobs", 0.1)
        time.sleep(0.5)
    finally:
        _stop(*runs)
    by_file = _jobs_by_file(site)
    assert len(by_file) == 300 and all(len(ids) == 1 for ids in by_file.values())
    assert sum(run[0].watcher.delivered for run in runs) == 300


def test_the_agent_starts_the_watcher(site, inbox):
    add_rule(site, "raw", inbox, "reduce", {"infile": "{path}", "label": "{name}"})
    agent = Agent(site)
    stop = threading.Event()
    agent.start_triggers(stop)
    try:
        wait_for(lambda: agent.triggers.status["rules"] == 1, 10, "the agent's watcher", 0.05)
        _write(inbox / "via-agent.dat")
        wait_for(lambda: site.jobs(), 5, "the job", 0.02)
    finally:
        stop.set()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"folder": "MISSING"}, "does not exist"),
        ({"folder": "relative/inbox"}, "must be an absolute path"),
        ({"app": "paint"}, "unknown app 'paint'"),
        ({"params": {"infile": "{path}", "label": "{name}", "extra": "x"}}, "parameter 'extra' is not in the command template of app 'reduce'"),
        ({"params": {"infile": "{path}"}}, "placeholder {label} of app 'reduce' has no value"),
        ({"params": {"infile": "{size}", "label": "{name}"}}, "unknown placeholder {size}"),
        ({"patterns": ["run["]}, "unclosed '['"),
        ({"ignore": ["/abs/*"]}, "must be relative"),
        ({"resources": {"nodes": 0}}, "nodes"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_problem_and_nothing_is_stored(site, inbox, change, expected):
    from balsam.errors import BalsamError

    args = {"folder": inbox, "app": "reduce", "params": {"infile": "{path}", "label": "{name}"}, **change}
    if args["folder"] == "MISSING":
        args["folder"] = inbox / "nope"
    with pytest.raises(BalsamError, match=expected.replace("{", r"\{").replace("[", r"\[")):
        add_rule(site, "bad", args.pop("folder"), args.pop("app"), args.pop("params"), **args)
    assert rules(site) == []


def test_glob_checks():
    assert glob_problem("*.h5") is None and glob_problem("[!]x]*") is None
    assert "unclosed" in glob_problem("[ab")


def test_the_cli_adds_lists_pauses_resumes_and_removes(site, inbox, balsam):
    (inbox / "old.dat").write_text("there before")
    r = balsam(["trigger", "add", "raw", "--folder", str(inbox), "--app", "reduce", "-p", "infile={path}", "-p", "label={stem}",
                "--pattern", "*.dat", "--tag", "k=v", "--nodes", "1", "--skip-existing"])  # fmt: skip
    assert r.code == 0, r.err
    assert "trigger rule 'raw' added" in r.out
    listed = json.loads(balsam("trigger ls --json").out)
    assert listed[0]["name"] == "raw" and listed[0]["files"] == 1 and listed[0]["jobs"] == 0  # old.dat skipped
    assert balsam("trigger pause raw").code == 0
    assert json.loads(balsam("trigger ls --json").out)[0]["paused"] is True
    assert balsam("trigger resume raw").code == 0
    assert "raw" in balsam("trigger ls").out
    r = balsam(["trigger", "add", "again", "--folder", str(inbox / "nope"), "--app", "reduce", "-p", "infile={path}", "-p", "label={stem}"])
    assert r.code == 1 and "does not exist" in r.err
    r = balsam(["trigger", "add", "raw", "--folder", str(inbox), "--app", "reduce", "-p", "infile={path}", "-p", "label={stem}"])
    assert r.code == 1 and "already exists" in r.err
    assert balsam("trigger rm raw").code == 0
    r = balsam("trigger rm raw")
    assert r.code == 1 and "no trigger rule 'raw'" in r.err
    assert "no trigger rules" in balsam("trigger ls").out
