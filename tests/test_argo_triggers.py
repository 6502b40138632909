"""Filesystem triggers at the coordinator: a real server process watching real folders; its tasks
join the global graph and are placed on a (played) site like any other."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from argo_helpers import Federation, wait_for
from balsam.argo.client import ArgoError
from balsam.protos import argo_pb2 as pb

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fed = Federation(tmp_path_factory.mktemp("argo-triggers"), site_timeout_s=3600)
    fed.start_server()
    with fed.client() as client:
        client.sites_stub.Register(pb.RegisterRequest(name="fake", apps=["sim"], nodes=2))
    try:
        yield fed
    finally:
        fed.stop()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def _by_file(client, workflow_id: int) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for task in client.tasks(workflow_id):
        found.setdefault(task["params"]["infile"], []).append(task)
    return found


def test_files_become_tasks_of_the_rules_workflow_placed_like_any_other(client, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    rule = client.add_trigger("raw", inbox, "sim", {"infile": "{path}", "label": "{stem}"}, patterns=["*.dat"],
                              tags={"campaign": "c"}, resources={"nodes": 1})  # fmt: skip
    assert rule["workflow_id"] and rule["workflow"] == "raw"
    time.sleep(1.5)  # the server reloads its rules every second
    (inbox / "one.dat").write_text("1")
    (inbox / "skip.txt").write_text("no")
    (inbox / "two.dat.part").write_text("partial")
    tasks = wait_for(lambda: client.tasks(rule["workflow_id"]), 10, "the task", 0.05)
    assert len(tasks) == 1
    task = tasks[0]
    assert task["params"] == {"infile": str(inbox / "one.dat"), "label": "one"} and task["app"] == "sim"
    assert task["id"].startswith(f"{rule['workflow_id']}/one.dat-")
    wait_for(lambda: client.task(task["id"])["site"] == "fake", 10, "placement on the site", 0.1)
    # A burst: one task per file, in batches.
    for i in range(200):
        (inbox / f"b{i:03d}.dat").write_bytes(b"x")
    wait_for(lambda: len(client.tasks(rule["workflow_id"])) == 201, 20, "201 tasks", 0.2)
    time.sleep(0.5)
    by_file = _by_file(client, rule["workflow_id"])
    assert len(by_file) == 201 and all(len(t) == 1 for t in by_file.values())
    listed = {r["name"]: r for r in client.triggers()}
    assert listed["raw"]["files"] == 201
    assert client.remove_trigger("raw") == 201


def test_files_that_came_while_the_server_was_down_get_their_tasks_once_at_restart(server, client, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "old.dat").write_text("there before the rule")
    rule = client.add_trigger("restart", inbox, "sim", {"infile": "{path}", "label": "{name}"}, settle_s=0.2, skip_existing=True)
    time.sleep(1.5)
    (inbox / "before.dat").write_text("x")
    wait_for(lambda: client.tasks(rule["workflow_id"]), 10, "the first task", 0.05)
    server.argo("server", "stop", "--data", str(server.data))
    for i in range(10):
        (inbox / f"down{i}.dat").write_text("y")
    server.start_server()
    with server.client() as again:
        wait_for(lambda: len(again.tasks(rule["workflow_id"])) == 11, 20, "the tasks of the files that came while down", 0.2)
        time.sleep(1.0)
        by_file = _by_file(again, rule["workflow_id"])
        assert len(by_file) == 11 and all(len(t) == 1 for t in by_file.values())
        assert str(inbox / "old.dat") not in by_file  # skipped: it was there when the rule was added
        again.remove_trigger("restart")


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"folder": "MISSING"}, "does not exist"),
        ({"folder": "relative/in"}, "must be an absolute path"),
        ({"app": "paint"}, "app 'paint' is offered by no registered site"),
        ({"params": {"infile": "{size}"}}, "unknown placeholder {size}"),
        ({"patterns": ["run["]}, "unclosed '['"),
        ({"site": "mars"}, "mars"),
        ({"name": "bad name!"}, "trigger rule name"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_problem_and_nothing_is_stored(client, tmp_path, change, expected):
    args = {"name": "bad", "folder": str(tmp_path), "app": "sim", "params": {"infile": "{path}"}, **change}
    if args["folder"] == "MISSING":
        args["folder"] = str(tmp_path / "nope")
    before = client.triggers()
    with pytest.raises(ArgoError) as refused:
        client.add_trigger(args.pop("name"), args.pop("folder"), args.pop("app"), args.pop("params"), **args)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in str(refused.value)
    assert client.triggers() == before


def test_a_malformed_request_is_invalid_argument(server, client):
    channel = client.channel
    call = channel.unary_unary("/balsam.v1.Triggers/Add", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as refused:
        call(b"\xff\xff\xff", timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "balsam.v1.TriggerRule" in refused.value.details()
    with pytest.raises(ArgoError) as missing:
        client.remove_trigger("ghost")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


def test_the_cli_adds_lists_and_removes(server, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    added = server.argo("trigger", "add", "cli", "--folder", str(inbox), "--app", "sim", "-p", "infile={path}", "--pattern", "*.h5",
                        "--address", server.address)  # fmt: skip
    assert "trigger rule 'cli' added" in added.stdout
    listed = json.loads(server.argo("trigger", "ls", "--json", "--address", server.address).stdout)
    assert [r["name"] for r in listed] == ["cli"] and listed[0]["patterns"] == ["*.h5"]
    refused = server.argo("trigger", "add", "x", "--folder", str(inbox / "nope"), "--app", "sim", "--address", server.address, check=False)
    assert refused.returncode == 1 and "does not exist" in refused.stderr
    assert "removed" in server.argo("trigger", "rm", "cli", "--address", server.address).stdout
