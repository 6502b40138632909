"""Data across sites: a parent's output at site A is read by its child at site B.

A real federation (coordinator and two site agents as processes, each site with its own folder
and PostgreSQL): the parent's site registers where the output is, the coordinator names that
location in the child's assignment, and the child's site stages it in (the local backend: both
sites share this machine's filesystem) before a launcher runs the child.
"""

from __future__ import annotations

import shlex
import sys

import pytest

from argo_helpers import Federation, wait_for

pytestmark = pytest.mark.timeout(240)

PY = shlex.quote(sys.executable)
MAKE = f"{PY} -c 'import sys, os; open(\"out.txt\", \"w\").write(sys.argv[1] + \" made at \" + os.environ[\"BALSAM_SITE_NAME\"])' {{word}}"
MERGE = (
    f"{PY} -c 'import sys, glob; data = \"|\".join(open(f).read() for f in sorted(glob.glob(\"in/*\")));"
    f" open(\"merged.txt\", \"w\").write(sys.argv[1] + \": \" + data)' {{label}}"
)


@pytest.fixture
def federation(tmp_path):
    fed = Federation(tmp_path, site_timeout_s=30)
    fed.start_server()
    try:
        for name in ("alpha", "beta"):
            site = fed.add_site(name, start=False)
            site.add_app("make", MAKE)
            site.add_app("merge", MERGE)
            fed.start_agent(name)
        yield fed
    finally:
        fed.stop()


def folder_of(fed: Federation, site_name: str, task_id: str):
    site = fed.sites[site_name]
    (job,) = [j for j in site.jobs() if j.argo_task_id == task_id]
    return site.settings.data_dir / job.workflow / str(job.id)


def test_a_parents_output_at_one_site_is_read_by_its_child_at_the_other(federation):
    fed = federation
    spec = {
        "name": "flow",
        "tasks": [
            {"name": "p1", "app": "make", "site": "alpha", "params": {"word": "first"}, "outputs": ["out.txt"]},
            {"name": "p2", "app": "make", "site": "beta", "params": {"word": "second"}, "outputs": ["out.txt"]},
            {"name": "child", "app": "merge", "site": "beta", "params": {"label": "merged"}, "parents": ["p1", "p2"],
             "inputs": {"in/1.txt": "p1/out.txt", "in/2.txt": "p2/out.txt"}, "outputs": ["merged.txt"]},
        ],
    }  # fmt: skip
    with fed.client() as client:
        wait_for(lambda: {s["name"] for s in client.sites() if s["status"] == "up"} == {"alpha", "beta"}, 30, "both sites up")
        workflow_id = client.submit(spec)
        assert client.wait(workflow_id, timeout_s=150) == "finished"
        tasks = {t["name"]: t for t in client.tasks(workflow_id)}
    assert (tasks["p1"]["site"], tasks["p2"]["site"], tasks["child"]["site"]) == ("alpha", "beta", "beta")
    made_at_alpha = (folder_of(fed, "alpha", tasks["p1"]["id"]) / "out.txt").read_bytes()
    assert made_at_alpha == b"first made at alpha"
    child = folder_of(fed, "beta", tasks["child"]["id"])
    # The bytes crossed sites intact, into the child's own folder, and the child read them.
    assert (child / "in" / "1.txt").read_bytes() == made_at_alpha
    assert (child / "merged.txt").read_text() == "merged: first made at alpha|second made at beta"
    history = [e.message for e in fed.sites["beta"].history(_job_id(fed, "beta", tasks["child"]["id"]))]
    # Both sites on this one filesystem: the files were hard-linked in the round that found the child.
    assert "staged in 2 file(s)" in history, history


def test_a_child_whose_parent_left_no_such_output_fails_with_the_reason(federation):
    fed = federation
    spec = {
        "name": "broken",
        "tasks": [
            # It declares an output its program never writes.
            {"name": "p", "app": "make", "site": "alpha", "params": {"word": "x"}, "outputs": ["missing.txt"]},
            {"name": "c", "app": "merge", "site": "beta", "params": {"label": "m"}, "parents": ["p"],
             "inputs": {"in/p.txt": "p/missing.txt"}},
        ],
    }  # fmt: skip
    with fed.client() as client:
        wait_for(lambda: {s["name"] for s in client.sites() if s["status"] == "up"} == {"alpha", "beta"}, 30, "both sites up")
        workflow_id = client.submit(spec)
        assert client.wait(workflow_id, timeout_s=150) == "failed"
        tasks = {t["name"]: t for t in client.tasks(workflow_id)}
    assert tasks["p"]["state"] == "JOB_FINISHED"
    assert tasks["c"]["state"] == "FAILED"
    assert "finished without leaving its output 'missing.txt'" in tasks["c"]["message"]
    assert not [j for j in fed.sites["beta"].jobs() if j.argo_task_id == tasks["c"]["id"]]  # never sent to beta


def _job_id(fed: Federation, site_name: str, task_id: str) -> int:
    (job,) = [j for j in fed.sites[site_name].jobs() if j.argo_task_id == task_id]
    return job.id
