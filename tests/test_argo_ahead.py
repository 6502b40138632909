"""Children sent ahead to their parents' site (``balsam.argo.ahead``): the rules, then a real
coordinator and real sites (their PostgreSQL, agents, launchers and processes).

Within a site a child sent ahead is a job there waiting for its parent's before the parent ends: the
launcher's commit of the end releases it. What a user must be able to trust: it still runs once, after
its parents; it is taken back when a parent fails; and a lost site's tasks, sent ahead or not, run
elsewhere once.
"""

from __future__ import annotations

import shlex
import sys
from datetime import datetime

import pytest

from argo_helpers import RUN_APP, wait_for
from balsam.argo import ahead
from balsam.argo.ahead import Parent, SiteRoom

# Only s1 offers app "a": a task of it can go nowhere else.
UP = {"s1": SiteRoom(True, frozenset({"a"}), False), "s2": SiteRoom(True, frozenset({"b"}), False)}


def _chosen(waiting, parents, sites=UP):
    return {a.task_id: (a.site, dict(a.waits_for)) for a in ahead.choose(waiting, parents, sites)}


def test_a_child_goes_ahead_only_to_the_one_site_where_all_its_unfinished_parents_are():
    ready = lambda i, site="s1", state="READY": Parent(f"1/p{i}", f"p{i}", site, state, 1)  # noqa: E731
    parents = {
        "1/one": [ready(0)],
        "1/both_here": [ready(0), ready(1, state="RUNNING")],
        "1/one_done": [ready(0), ready(1, site="s2", state="JOB_FINISHED")],  # a finished parent elsewhere: its output is known
        "1/split": [ready(0), ready(1, site="s2")],
        "1/unplaced": [ready(0), ready(1, site=None, state="AWAITING_PARENTS")],
        "1/parent_failed": [ready(0), ready(1, state="FAILED")],
        "1/all_done": [ready(0, state="JOB_FINISHED")],
    }
    waiting = [(task, "a", None, {}) for task in parents]
    assert _chosen(waiting, parents) == {
        "1/one": ("s1", {"1/p0": 1}),
        "1/both_here": ("s1", {"1/p0": 1, "1/p1": 1}),
        "1/one_done": ("s1", {"1/p0": 1}),
    }


def test_a_child_another_site_could_take_waits_to_be_placed_unless_it_is_pinned():
    both = {"s1": SiteRoom(True, frozenset({"a"}), False), "s2": SiteRoom(True, frozenset({"a"}), False)}
    at_s1 = [Parent("1/p", "p", "s1", "AWAITING_PARENTS", 2)]  # sent ahead itself: a chain goes ahead whole
    waiting = [("1/pinned", "a", "s1", {}), ("1/free", "a", None, {}), ("1/elsewhere", "a", "s2", {})]
    assert _chosen(waiting, {task: at_s1 for task, *_ in waiting}, both) == {"1/pinned": ("s1", {"1/p": 2})}
    # The other site down: nowhere else to go, for now.
    down = {**both, "s2": SiteRoom(False, frozenset({"a"}), False)}
    assert set(_chosen(waiting, {task: at_s1 for task, *_ in waiting}, down)) == {"1/pinned", "1/free"}


def test_a_child_reading_an_output_its_unfinished_parent_does_not_declare_or_bound_for_an_unsuitable_site_waits():
    parents = {t: [Parent("1/p", "p", "s1", "RUNNING", 1, frozenset({"out"})), Parent("1/q", "q", "s2", "JOB_FINISHED", 1)]
               for t in ("1/reads_p", "1/reads_p_undeclared", "1/reads_q", "1/reads_url")}  # fmt: skip
    waiting = [("1/reads_p", "a", None, {"in": "p/out"}), ("1/reads_p_undeclared", "a", None, {"in": "p/other"}),
               ("1/reads_q", "a", None, {"in": "q/out"}), ("1/reads_url", "a", None, {"in": "globus://ep/p/out"})]  # fmt: skip
    assert set(_chosen(waiting, parents)) == {"1/reads_p", "1/reads_q", "1/reads_url"}
    one = {"1/c": [Parent("1/p", "p", "s1", "RUNNING", 1)]}
    for room in (SiteRoom(False, frozenset({"a"}), False), SiteRoom(True, frozenset({"b"}), False), SiteRoom(True, frozenset({"a"}), True)):
        assert _chosen([("1/c", "a", None, {})], one, {"s1": room}) == {}, room  # down, without the app, capped
    assert _chosen([("1/c", "a", None, {})], one, {}) == {}  # a site no longer known


# -- a real coordinator and real sites ------------------------------------------------------------------


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.removesuffix("Z") + "+00:00")


def _task(fed, name: str, seconds: float, parents=(), site: str | None = "alpha", app: str = "run") -> dict:
    task = {"name": name, "app": app, "params": {"log": str(fed.runs_log), "task": name, "seconds": seconds}}
    if site:
        task["site"] = site
    if parents:
        task["parents"] = list(parents)
    return task


def test_a_pinned_chain_waits_at_its_site_while_its_first_task_runs_and_each_task_runs_once_in_order(federation):
    fed = federation
    alpha = fed.add_site("alpha")
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
        chain = [_task(fed, "t0", 3.0), _task(fed, "t1", 0, ["t0"]), _task(fed, "t2", 0, ["t1"])]
        workflow_id = client.submit({"name": "chain", "tasks": chain})
        wait_for(lambda: fed.runs(), 60, "t0 to start")
        # While t0 runs, its children are jobs at alpha already, waiting for their parents' jobs there.
        waiting = wait_for(lambda: (jobs := {j.name: j for j in fed.local_jobs("alpha")}) and len(jobs) == 3 and jobs, 10, "three jobs")
        assert fed.runs() == [("alpha", "t0")], "t0 still runs, alone"
        assert {n: waiting[n].state for n in ("t1", "t2")} == {"t1": "AWAITING_PARENTS", "t2": "AWAITING_PARENTS"}
        assert alpha.parents(waiting["t2"].id) == [waiting["t1"].id]
        assert client.wait(workflow_id, timeout_s=60) == "finished"
        tasks = {t["name"]: t for t in client.tasks(workflow_id)}
    assert fed.runs() == [("alpha", "t0"), ("alpha", "t1"), ("alpha", "t2")], "each once, in order"
    assert all(t["state"] == "JOB_FINISHED" and t["attempt"] == 1 for t in tasks.values())
    first, second = tasks["t0"]["attempts"][0], tasks["t1"]["attempts"][0]
    # Its attempt began before its parent ended, and it was ready (released at alpha) once its parent ended.
    assert _at(second["placed_at"]) < _at(first["ended_at"]) <= _at(second["ready_at"]) <= _at(second["started_at"])


def test_an_unpinned_task_goes_ahead_only_where_no_other_site_could_run_it(federation):
    fed = federation
    alpha = fed.add_site("alpha", start=False)
    alpha.add_app("solo", RUN_APP)  # offered at alpha alone
    fed.start_agent("alpha")
    fed.add_site("beta")
    with fed.client() as client:
        wait_for(lambda: len([s for s in client.sites() if s["status"] == "up"]) == 2, 30, "both sites up")
        tasks = [_task(fed, "s0", 5.0, site=None, app="solo"), _task(fed, "s1", 0, ["s0"], site=None, app="solo"),
                 _task(fed, "s2", 0, ["s1"], site=None, app="solo"),
                 _task(fed, "r0", 5.0, site=None), _task(fed, "r1", 0, ["r0"], site=None)]  # fmt: skip
        workflow_id = client.submit({"name": "free", "tasks": tasks})
        placed = lambda: {t["name"]: (t["site"], t["state"]) for t in client.tasks(workflow_id)}  # noqa: E731
        # Each look is taken while the parent runs (5 s), not once both have started: r0 may start
        # seconds after s0 on a loaded machine, after s0 has ended and released s1.
        # The solo chain can go nowhere but alpha: it waits there whole.
        wait_for(lambda: "s0" in {task for _, task in fed.runs()}, 60, "s0 to start")
        wait_for(lambda: (now := placed())["s1"] == now["s2"] == ("alpha", "AWAITING_PARENTS"), 4, "s1 and s2 ahead at alpha")
        # r1 could go to either site: placement chooses when r0 has ended.
        wait_for(lambda: "r0" in {task for _, task in fed.runs()}, 60, "r0 to start")
        assert placed()["r1"] == ("", "AWAITING_PARENTS")
        assert client.wait(workflow_id, timeout_s=60) == "finished"
    ran = [task for _, task in fed.runs()]
    assert sorted(ran) == ["r0", "r1", "s0", "s1", "s2"], "each once"
    assert ran.index("s0") < ran.index("s1") < ran.index("s2") and ran.index("r0") < ran.index("r1")


PY = shlex.quote(sys.executable)
MAKE = f"{PY} -c 'import sys, time; time.sleep(2); open(sys.argv[1], \"w\").write(\"made by \" + sys.argv[2])' {{file}} {{word}}"
READ = f"{PY} -c 'import sys; open(\"read.txt\", \"w\").write(open(sys.argv[1]).read().upper())' {{file}}"


@pytest.mark.parametrize("written", ["out.txt", "elsewhere.txt"])
def test_a_child_sent_ahead_reads_its_parents_output_from_the_parents_folder_or_fails_naming_it(federation, written):
    fed = federation
    site = fed.add_site("alpha", start=False)
    site.add_app("make", MAKE)
    site.add_app("read", READ)
    site.settings.transfer.retries = 1  # a file that is not there is not looked for again
    site.settings.save()
    fed.start_agent("alpha")
    tasks = [
        {"name": "p", "app": "make", "site": "alpha", "params": {"file": written, "word": "p"}, "outputs": ["out.txt"]},
        {"name": "c", "app": "read", "site": "alpha", "params": {"file": "in.txt"}, "parents": ["p"], "inputs": {"in.txt": "p/out.txt"}},
    ]
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
        workflow_id = client.submit({"name": "files", "tasks": tasks})
        jobs = wait_for(lambda: (jobs := {j.name: j for j in fed.local_jobs("alpha")}) and len(jobs) == 2 and jobs, 30, "c sent ahead")
        assert jobs["c"].state == "AWAITING_PARENTS"
        status = client.wait(workflow_id, timeout_s=60)
        by_name = {t["name"]: t for t in client.tasks(workflow_id)}
    folder = site.settings.data_dir / jobs["c"].workflow
    if written == "out.txt":
        assert status == "finished"
        assert (folder / str(jobs["c"].id) / "read.txt").read_text() == "MADE BY P"
        return
    # The parent did not leave the output it declared: the child fails at its stage-in, naming the file.
    assert status == "failed" and by_name["p"]["state"] == "JOB_FINISHED" and by_name["c"]["state"] == "FAILED"
    assert f"{folder / str(jobs['p'].id) / 'out.txt'}" in by_name["c"]["message"], by_name["c"]["message"]


def test_a_child_sent_ahead_of_a_parent_that_fails_is_taken_back_from_the_site_and_never_runs(federation):
    fed = federation
    site = fed.add_site("alpha", start=False)
    site.add_app("fail", "sh -c 'sleep 2; exit 3'")
    fed.start_agent("alpha")
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
        tasks = [{"name": "bad", "app": "fail", "site": "alpha"}, _task(fed, "child", 0, ["bad"]), _task(fed, "grandchild", 0, ["child"])]
        workflow_id = client.submit({"name": "doomed", "tasks": tasks})
        wait_for(lambda: len(fed.local_jobs("alpha")) == 3, 30, "the children sent ahead to alpha")
        assert client.wait(workflow_id, timeout_s=60) == "failed"
        by_name = {t["name"]: t for t in client.tasks(workflow_id)}
        jobs = wait_for(lambda: (jobs := {j.name: j for j in fed.local_jobs("alpha")}) and jobs["child"].state == "USER_KILLED"
                        and jobs["grandchild"].state == "USER_KILLED" and jobs, 30, "the copies at alpha killed")  # fmt: skip
    assert by_name["bad"]["state"] == "FAILED"
    # As any child of a failed task: waiting, unplaced, blocked; not run anywhere.
    assert {n: (by_name[n]["state"], by_name[n]["site"]) for n in ("child", "grandchild")} == {
        "child": ("AWAITING_PARENTS", ""), "grandchild": ("AWAITING_PARENTS", "")}  # fmt: skip
    assert fed.runs() == []
    assert "withdrawn" in site.history(jobs["child"].id)[-1].message


@pytest.mark.site_timeout(4.0)
def test_a_lost_sites_tasks_sent_ahead_run_once_elsewhere_after_their_parent(federation):
    fed = federation
    fed.add_site("alpha")
    fed.add_site("beta", start=False)  # not up yet: alpha is the only site, and c goes ahead there
    with fed.client() as client:
        wait_for(lambda: [s["status"] for s in client.sites() if s["name"] == "alpha"] == ["up"], 30, "alpha up")
        workflow_id = client.submit({"name": "moving", "tasks": [_task(fed, "p", 6.0, site=None), _task(fed, "c", 0, ["p"], site=None)]})
        wait_for(lambda: fed.runs(), 60, "p to start")
        wait_for(lambda: len(fed.local_jobs("alpha")) == 2, 30, "c sent ahead to alpha")
        fed.start_agent("beta")
        wait_for(lambda: {s["name"]: s["status"] for s in client.sites()}.get("beta") == "up", 30, "beta up")
        fed.kill_site("alpha")  # p's process too: it never ends there
        wait_for(lambda: {s["name"]: s["status"] for s in client.sites()}["alpha"] == "down", 30, "alpha marked down")
        fed.argo("site", "lost", "alpha", "--data", str(fed.data))
        assert client.wait(workflow_id, timeout_s=90) == "finished"
        tasks = {t["name"]: t for t in client.tasks(workflow_id)}
    assert {n: (tasks[n]["site"], tasks[n]["attempt"]) for n in ("p", "c")} == {"p": ("beta", 2), "c": ("beta", 2)}
    assert fed.runs() == [("alpha", "p"), ("beta", "p"), ("beta", "c")], "c once, after p ended"
