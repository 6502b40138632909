"""The coordinator's API against a real server process: generic gRPC tools, bad input, the sync
protocol's numbering, and the `argo` CLI. Sites here are played by the test over the real API."""

from __future__ import annotations

import json
import queue
import subprocess
import sys

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from argo_helpers import Federation, wait_for
from balsam.argo.client import ArgoClient, ArgoError
from balsam.protos import argo_pb2 as pb
from balsam.states import JobState as S

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fed = Federation(tmp_path_factory.mktemp("argo"), site_timeout_s=3600)
    fed.start_server()
    with fed.client() as client:
        client.sites_stub.Register(pb.RegisterRequest(name="fake", apps=["sim", "use"], nodes=2))
        client.sites_stub.Register(pb.RegisterRequest(name="other", apps=["sim"], nodes=1))
    try:
        yield fed
    finally:
        fed.stop()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def test_generic_grpc_tools_can_list_the_services_and_check_health(server):
    channel = grpc.insecure_channel(server.address)
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"balsam.v1.Workflows", "balsam.v1.Monitor", "balsam.v1.Sites", "grpc.health.v1.Health"} <= services
    monitor = DescriptorPool(database).FindServiceByName("balsam.v1.Monitor")
    assert {m.name for m in monitor.methods} == {"Watch", "WatchBatches", "Summary", "ListSites"}
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "balsam.v1.Workflows"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


GOOD = {"name": "good", "tasks": [
    {"name": "produce", "app": "sim", "site": "fake", "params": {"n": 3}, "outputs": ["out.txt"]},
    {"name": "consume", "app": "use", "parents": ["produce"], "inputs": {"in.txt": "produce/out.txt"}},
]}  # fmt: skip


@pytest.mark.parametrize(
    "tasks, expected",
    [
        ([{"name": "a", "app": "sim", "parents": ["b"]}, {"name": "b", "app": "sim", "parents": ["a"]}], "cycle: a -> b -> a"),
        ([{"name": "a", "app": "sim", "parents": ["ghost"]}], "task 'a': parent 'ghost'"),
        ([{"name": "a", "app": "paint"}], "task 'a': app 'paint' is offered by no registered site"),
        ([{"name": "a", "app": "sim", "resources": {"nodes": -2}}], "task 'a': resources.nodes"),
        ([{"name": "a", "app": "use", "site": "other"}], "task 'a'"),
        ([{"name": "a", "app": "sim", "site": "mars"}], "task 'a'"),
        ([{"name": "a", "app": "sim"}, {"name": "b", "app": "sim", "inputs": {"x": "a/out.txt"}}], "task 'b'"),
        ([{"name": "a", "app": "sim", "inputs": {"../../etc/passwd": "file:///tmp/x"}}], "task 'a'"),
    ],
)
def test_a_bad_workflow_is_refused_naming_the_task_and_nothing_is_stored(client, tasks, expected):
    before = client.list(limit=1000)
    # Straight to the wire, as any gRPC client could: the server checks everything itself.
    chunk = pb.SubmitChunk(name="bad", tasks=[_wire(task) for task in tasks])
    with pytest.raises(grpc.RpcError) as refused:
        client.workflows.Submit(iter([chunk]), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in refused.value.details()
    assert client.list(limit=1000) == before


def _wire(task: dict) -> pb.TaskSpec:
    return pb.TaskSpec(
        name=task["name"], app=task["app"], params_json=json.dumps(task.get("params", {})), parents=task.get("parents", []),
        resources=pb.Resources(**task.get("resources", {})), inputs=task.get("inputs", {}), site=task.get("site", ""),
    )  # fmt: skip


def test_malformed_and_oversized_requests_get_their_status_and_the_server_keeps_serving(server, client):
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 << 20)])
    get = channel.unary_unary("/balsam.v1.Workflows/Get")  # raw bytes, no serializer
    with pytest.raises(grpc.RpcError) as garbage:
        get(b"\xff\xff\xff\xff\xff", timeout=10)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "balsam.v1.WorkflowRef" in garbage.value.details()
    kill = channel.unary_unary("/balsam.v1.Workflows/GetTask")
    with pytest.raises(grpc.RpcError) as bad_text:
        kill(b"\x0a\x02\xc3\x28", timeout=10)  # field 1 (a string) holding invalid UTF-8
    assert bad_text.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as huge:
        get(b"\x08\x01" + b"\x00" * (17 << 20), timeout=30)
    assert huge.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    channel.close()
    with pytest.raises(ArgoError) as missing:
        client.status(999_999)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ArgoError) as unknown_task:
        client.kill("no/such")
    assert unknown_task.value.code == grpc.StatusCode.NOT_FOUND
    assert client.healthy()
    assert client.submit(GOOD) > 0


def _stream(client: ArgoClient, site: str, applied: int):
    """A sync stream played by the test: (send queue, responses)."""
    outgoing: queue.Queue = queue.Queue()

    def envelopes():
        yield pb.SiteEnvelope(hello=pb.Hello(site=site, last_applied=applied))
        while (envelope := outgoing.get()) is not None:
            yield envelope

    return outgoing, client.sites_stub.Sync(envelopes(), timeout=60)


CHAIN = [S.CREATED, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED]


def _events(task_id: str, start: int, stop: int) -> list[pb.SiteMessage]:
    return [
        pb.SiteMessage(seq=n + 1, event=pb.TaskEvent(task_id=task_id, attempt=1, job_id=42, from_state=CHAIN[n].number,
                                                     to_state=CHAIN[n + 1].number, message=f"step {n + 1}"))
        for n in range(start, stop)
    ]  # fmt: skip


def test_the_sync_applies_each_message_once_and_resumes_from_the_last_acknowledgement(client):
    client.sites_stub.Register(pb.RegisterRequest(name="proto", apps=["solo"], nodes=1))
    workflow_id = client.submit({"name": "proto", "tasks": [{"name": "a", "app": "solo"}]})
    task_id = f"{workflow_id}/a"

    outgoing, responses = _stream(client, "proto", applied=0)
    assert next(responses).welcome.last_applied == 0
    assigned = next(responses).messages
    assert [(m.seq, m.assign.task_id, m.assign.attempt, m.assign.spec.app) for m in assigned] == [(1, task_id, 1, "solo")]
    outgoing.put(pb.SiteEnvelope(messages=_events(task_id, 0, 3), ack=1))
    assert next(responses).ack == 3
    outgoing.put(None)
    responses.cancel()

    # Reconnect as if the acknowledgement of 1..3 was lost: the site sends them again, then more.
    outgoing, responses = _stream(client, "proto", applied=1)
    assert next(responses).welcome.last_applied == 3
    outgoing.put(pb.SiteEnvelope(messages=_events(task_id, 0, 8)))
    assert next(responses).ack == 8
    # A gap in the numbering is refused: the site must resend from the last acknowledgement.
    outgoing.put(pb.SiteEnvelope(messages=[pb.SiteMessage(seq=10, event=_events(task_id, 0, 1)[0].event)]))
    with pytest.raises(grpc.RpcError) as gap:
        next(responses)
    assert gap.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expected message 9" in gap.value.details()
    outgoing.put(None)

    assert client.task(task_id)["state"] == "JOB_FINISHED"
    history = [(e.from_state, e.to_state, e.message) for e in client.watch(workflow_id) if e.site == "proto"]
    # The coordinator's own move first (placed there), then the site's reports, each once, in order.
    assert history[0] == (S.READY.number, S.READY.number, "placed at site proto (attempt 1)")
    assert [h[:2] for h in history[1:]] == [(CHAIN[n].number, CHAIN[n + 1].number) for n in range(8)]
    assert client.status(workflow_id)["status"] == "finished"


def test_a_sync_stream_must_start_with_hello_from_a_registered_site(client):
    outgoing, responses = _stream(client, "never-registered", applied=0)
    with pytest.raises(grpc.RpcError) as unknown:
        next(responses)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    outgoing.put(None)


def argo(server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balsam.argo.cli", *args, "--address", server.address],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_the_cli_submits_shows_kills_and_cancels(server, tmp_path):
    spec_file = tmp_path / "wf.yaml"
    spec_file.write_text(json.dumps({**GOOD, "name": "cli"}))
    submitted = argo(server, "submit", str(spec_file))
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = int(submitted.stdout.strip())
    status = json.loads(argo(server, "status", str(workflow_id), "--json").stdout)
    assert status["name"] == "cli" and status["tasks"] == 2 and status["status"] == "running"
    assert any(w["id"] == workflow_id for w in json.loads(argo(server, "ls", "--json").stdout))
    sites = {s["name"]: s for s in json.loads(argo(server, "sites", "--json").stdout)}
    assert sites["fake"]["apps"] == ["sim", "use"] and sites["fake"]["status"] == "up"
    wait_for(lambda: ArgoClient(server.address).task(f"{workflow_id}/produce")["site"] == "fake", 30, "placement on the pin")

    killed = argo(server, "kill", f"{workflow_id}/produce")
    assert killed.returncode == 0 and "USER_KILLED" in killed.stdout
    # Its child can never run now, so the workflow has ended.
    assert json.loads(argo(server, "status", str(workflow_id), "--json").stdout)["status"] == "failed"
    again = argo(server, "kill", f"{workflow_id}/produce")
    assert again.returncode == 1 and "already ended" in again.stderr

    second = int(argo(server, "submit", str(spec_file)).stdout.strip())
    cancelled = argo(server, "cancel", str(second))
    assert cancelled.returncode == 0 and "2 task(s) killed" in cancelled.stdout
    # Its counts, kept in its row by the cancel, are those of its killed tasks.
    assert json.loads(argo(server, "status", str(second), "--json").stdout)["counts"] == {"USER_KILLED": 2}
    watched = argo(server, "watch", str(second))
    assert watched.returncode == 0 and "workflow" in watched.stdout and "cancelled" in watched.stdout.splitlines()[-1]

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntasks:\n  - {name: a, app: sim, parents: [a]}\n")
    refused = argo(server, "submit", str(bad))
    assert refused.returncode == 1 and "task 'a'" in refused.stderr
    down = subprocess.run([sys.executable, "-m", "balsam.argo.cli", "ls", "--address", "127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert down.returncode == 1 and "cannot reach the Argo server at 127.0.0.1:9" in down.stderr


def test_server_status_and_a_second_server_on_the_same_data_is_refused(server):
    status = subprocess.run([sys.executable, "-m", "balsam.argo.cli", "server", "status", "--data", str(server.data), "--json"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    report = json.loads(status.stdout)
    assert report["running"] and report["serving"] and report["address"] == server.address
    again = server.argo("server", "start", "--data", str(server.data), check=False)
    assert again.returncode == 1 and "already runs" in again.stderr


def test_the_coordinators_migrated_schema_matches_its_models(server):
    from sqlalchemy import create_engine
    from test_migrations import check_schema

    from balsam.argo.config import ServerSettings
    from balsam.argo.db.engine import MIGRATIONS, SCHEMA_REVISION, database_url
    from balsam.argo.db.models import Base

    check_schema(create_engine(database_url(ServerSettings.load(server.data))), MIGRATIONS, SCHEMA_REVISION, Base.metadata)


def test_a_site_keeps_events_only_while_linked_and_a_new_coordinator_starts_afresh(site):
    from sqlalchemy import text

    from balsam.site.argo_sync import link, unlink

    def raw_events() -> int:
        with site.session() as session:
            return session.execute(text("SELECT count(*) FROM argo_raw_events")).scalar_one()

    def numbers() -> tuple[int, int] | None:
        with site.session() as session:
            return session.execute(text("SELECT last_applied, last_seq FROM argo_link")).one_or_none()

    site.add_app("noop", "true")
    site.add_job("noop")
    assert raw_events() == 0 and numbers() is None  # a site alone keeps nothing for Argo
    link(site, "127.0.0.1:1")
    site.add_job("noop")
    assert raw_events() == 1  # its CREATED -> READY, kept in the same transaction
    with site.session() as session:
        session.execute(text("UPDATE argo_link SET last_applied = 5, last_seq = 3"))
    link(site, "127.0.0.1:1")
    assert tuple(numbers()) == (5, 3)  # the same coordinator: the numbering goes on
    link(site, "127.0.0.1:2")
    assert tuple(numbers()) == (0, 0) and raw_events() == 0  # another one: afresh
    unlink(site)
    site.add_job("noop")
    assert numbers() is None and raw_events() == 0


def test_tasks_added_to_a_running_workflow_join_its_graph_and_an_ended_one_refuses_them(client):
    workflow_id = client.submit({**GOOD, "name": "grow"})
    added = client.add_tasks(workflow_id, [{"name": "more", "app": "use", "parents": ["produce"], "inputs": {"in": "produce/out.txt"}}])
    assert added == 1
    more = client.task(f"{workflow_id}/more")
    assert more["state"] == "AWAITING_PARENTS" and more["parents"] == [f"{workflow_id}/produce"]
    with pytest.raises(ArgoError) as unknown:
        client.add_tasks(workflow_id, [{"name": "orphan", "app": "use", "parents": ["ghost"]}])
    assert unknown.value.code == grpc.StatusCode.INVALID_ARGUMENT and "task 'orphan'" in str(unknown.value)
    with pytest.raises(ArgoError) as twice:
        client.add_tasks(workflow_id, [{"name": "more", "app": "use"}])
    assert twice.value.code == grpc.StatusCode.INVALID_ARGUMENT and "more" in str(twice.value)
    assert client.status(workflow_id)["tasks"] == 3
    assert client.cancel(workflow_id) == 3
    with pytest.raises(ArgoError) as ended:
        client.add_tasks(workflow_id, [{"name": "late", "app": "sim"}])
    assert ended.value.code == grpc.StatusCode.FAILED_PRECONDITION and "cancelled" in str(ended.value)
    # A watch filtered by state sees only those transitions, then the workflow's end.
    killed = list(client.watch(workflow_id, states=["USER_KILLED"]))
    assert sorted(e.task_id for e in killed[:-1]) == [f"{workflow_id}/{n}" for n in ("consume", "more", "produce")]
    assert all(e.to_state == S.USER_KILLED.number for e in killed[:-1]) and killed[-1].workflow_status == "cancelled"
