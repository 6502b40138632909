"""TLS, authentication and authorisation of the Argo coordinator, against real server processes on
loopback with real certificates: who may connect, who may call what, and that a refusal of one
caller leaves everyone else served."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from collections import Counter
from concurrent import futures
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from argo_helpers import Federation, wait_for
from balsam.argo.certs import init_ca, issue_client
from balsam.argo.client import ArgoClient, ArgoError
from balsam.argo.config import ServerSettings, is_loopback, plaintext_refusal
from balsam.errors import BalsamError
from balsam.postgres import free_port
from balsam.protos import argo_pb2 as pb
from balsam.protos import argo_pb2_grpc as rpc
from balsam.protos import auth_pb2 as apb
from balsam.protos import auth_pb2_grpc as arpc
from balsam.states import JobState as S

pytestmark = pytest.mark.timeout(240)
ARGO = [sys.executable, "-m", "balsam.argo.cli"]


def md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A coordinator serving TLS with its own CA; the owner's client."""
    root = tmp_path_factory.mktemp("argo-tls")
    certs = init_ca(root / "tls")
    fed = Federation(root, site_timeout_s=3600)
    fed.start_server("--tls-dir", str(certs))
    fed.ca = str(certs / "ca.pem")
    fed.owner = ArgoClient(fed.address, ca_file=fed.ca, token=fed.owner_token(), timeout_s=30)
    try:
        yield fed
    finally:
        fed.owner.close()
        fed.stop()
        os.environ.pop("ARGO_TOKEN", None)


def client(fed, token: str, **kw) -> ArgoClient:
    return ArgoClient(fed.address, ca_file=fed.ca, token=token, timeout_s=30, **kw)


def test_plain_text_is_refused_on_an_address_other_machines_reach(tmp_path):
    assert is_loopback("127.0.0.1:1") and is_loopback("localhost:1") and is_loopback("[::1]:1")
    assert not is_loopback("0.0.0.0:1") and not is_loopback("10.1.2.3:1") and not is_loopback("login1.example.org:1")
    assert plaintext_refusal("127.0.0.1:5", tls=False, insecure=False) is None
    assert plaintext_refusal("0.0.0.0:5", tls=True, insecure=False) is None
    assert plaintext_refusal("0.0.0.0:5", tls=False, insecure=True) is None
    assert "without TLS on 0.0.0.0:5" in plaintext_refusal("0.0.0.0:5", tls=False, insecure=False)
    refused = subprocess.run([*ARGO, "server", "start", "--data", str(tmp_path / "d"), "--address", f"0.0.0.0:{free_port()}"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 1 and "refusing to serve without TLS" in refused.stderr and "--insecure" in refused.stderr


def test_a_client_trusting_another_ca_or_none_cannot_connect(tls, tmp_path):
    assert tls.owner.sites() == []  # the right CA and token: served
    other = init_ca(tmp_path / "other")
    with ArgoClient(tls.address, ca_file=other / "ca.pem", token=tls.owner_token(), timeout_s=10) as wrong:
        with pytest.raises(ArgoError) as failed:
            wrong.sites()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE and "TLS failure" in str(failed.value)
    with ArgoClient(tls.address, token=tls.owner_token(), timeout_s=10) as plain:
        with pytest.raises(ArgoError) as failed:
            plain.sites()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE


def test_an_expired_server_certificate_is_refused(tmp_path):
    past = datetime.now(UTC) - timedelta(days=30)
    certs = init_ca(tmp_path / "old", not_before=past, not_after=past + timedelta(days=1))
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    creds = grpc.ssl_server_credentials([((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        with ArgoClient(f"127.0.0.1:{port}", ca_file=certs / "ca.pem", token="x", timeout_s=5) as stale:
            assert not stale.healthy()
            with pytest.raises(ArgoError) as failed:
                stale.sites()
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_a_call_without_a_token_or_with_an_unknown_one_is_unauthenticated(tls):
    channel = grpc.secure_channel(tls.address, grpc.ssl_channel_credentials(open(tls.ca, "rb").read()))
    with pytest.raises(grpc.RpcError) as missing:
        rpc.WorkflowsStub(channel).List(pb.ListWorkflowsRequest(), timeout=10)
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED and "no token" in missing.value.details()
    with pytest.raises(grpc.RpcError) as bogus:
        rpc.MonitorStub(channel).ListSites(pb.ListSitesRequest(), timeout=10, metadata=md("argo-u-nonsense"))
    assert bogus.value.code() == grpc.StatusCode.UNAUTHENTICATED
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1  # no token needed
    channel.close()
    with client(tls, "") as anonymous, pytest.raises(ArgoError) as refused:
        anonymous.list()
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED and "argo login" in str(refused.value)


def test_a_revoked_token_stops_working_at_once(tls):
    token = tls.owner.add_user("leaver", "viewer", ["p1"])["token"]
    with client(tls, token) as leaver:
        assert leaver.whoami()["role"] == "viewer"
        assert tls.owner.revoke_user("leaver") == 1
        with pytest.raises(ArgoError) as refused:
            leaver.list()
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_the_owner_cannot_be_demoted_or_revoked_through_a_user_of_the_same_name(tls, argo_cli):
    """`argo user add owner --role viewer` and `argo user revoke owner` would reach the server's own
    owner token (user 'owner'): both are refused, and the owner's token keeps working."""
    where = ["--data", str(tls.data)]
    demoted = argo_cli(["user", "add", "owner", "--role", "viewer", *where])
    assert demoted.code == 1 and demoted.out == ""
    assert demoted.err == "error: 'owner' is the server's own owner (its token is DATA/owner-token); give the new user another name\n"
    revoked = argo_cli(["user", "revoke", "owner", *where])
    assert revoked.code == 1 and revoked.err == "error: the server's own owner ('owner', DATA/owner-token) cannot be revoked\n"
    with pytest.raises(ArgoError) as refused:
        tls.owner.revoke_user("owner")
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    with client(tls, tls.owner_token()) as owner:  # a fresh client: nothing cached
        assert owner.whoami() == {**owner.whoami(), "name": "owner", "role": "owner"}
        assert owner.list() is not None
    # Other users of the owner role are still the owner's to manage.
    assert tls.owner.add_user("deputy", "owner")["token"] and tls.owner.revoke_user("deputy") == 1


SPEC = {"name": "w", "tasks": [{"name": "a", "app": "sim"}]}


def _site(fed, name: str, apps=("sim",)) -> str:
    """A site enrolled as an operator would: a one-time token exchanged for its own credential."""
    enrolment = fed.owner.enrol_site(name)["token"]
    channel = grpc.secure_channel(fed.address, grpc.ssl_channel_credentials(open(fed.ca, "rb").read()))
    auth = arpc.AuthStub(channel)
    token = auth.Enrol(apb.EnrolRequest(site=name), metadata=md(enrolment), timeout=10).token
    with pytest.raises(grpc.RpcError) as again:
        auth.Enrol(apb.EnrolRequest(site=name), metadata=md(enrolment), timeout=10)
    assert again.value.code() == grpc.StatusCode.UNAUTHENTICATED  # used up
    rpc.SitesStub(channel).Register(pb.RegisterRequest(name=name, apps=list(apps), nodes=1), metadata=md(token), timeout=10)
    channel.close()
    return token


def test_viewers_watch_collaborators_submit_to_their_projects_and_see_only_them(tls):
    _site(tls, "roles")
    viewer = client(tls, tls.owner.add_user("vic", "viewer", ["p1"])["token"])
    alice = client(tls, tls.owner.add_user("alice", "collaborator", ["p1"])["token"])
    bob = client(tls, tls.owner.add_user("bob", "collaborator", ["p2"])["token"])
    with viewer, alice, bob:
        with pytest.raises(ArgoError) as denied:
            viewer.submit(SPEC)
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED and "viewers" in str(denied.value)
        mine = alice.submit({**SPEC, "name": "alices"})
        theirs = bob.submit({**SPEC, "name": "bobs"})
        owners = tls.owner.submit({**SPEC, "name": "owners"})
        with pytest.raises(ArgoError) as elsewhere:
            alice.submit(SPEC, project="p2")
        assert elsewhere.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert {w["id"] for w in alice.list()} == {mine} and {w["id"] for w in viewer.list()} == {mine}
        assert {mine, theirs, owners} <= {w["id"] for w in tls.owner.list()}
        for call in (lambda: alice.status(theirs), lambda: alice.tasks(owners), lambda: alice.cancel(theirs),
                     lambda: viewer.cancel(mine), lambda: viewer.kill(f"{mine}/a"), lambda: list(alice.watch(theirs))):  # fmt: skip
            with pytest.raises(ArgoError) as refused:
                call()
            assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert viewer.status(mine)["name"] == "alices"
        assert {row["workflow_id"] for row in viewer.summary()} == {mine}
        assert alice.cancel(mine) == 1


def _sync(fed, token: str, site: str):
    outgoing: queue.Queue = queue.Queue()

    def envelopes():
        yield pb.SiteEnvelope(hello=pb.Hello(site=site, last_applied=0))
        while (envelope := outgoing.get()) is not None:
            yield envelope

    channel = grpc.secure_channel(fed.address, grpc.ssl_channel_credentials(open(fed.ca, "rb").read()))
    return outgoing, rpc.SitesStub(channel).Sync(envelopes(), metadata=md(token), timeout=60), channel


def test_a_site_reporting_on_another_sites_task_is_refused_and_everyone_else_is_served(tls):
    east, west = _site(tls, "east", ["east-app"]), _site(tls, "west", ["west-app"])
    workflow_id = tls.owner.submit({"name": "two", "tasks": [{"name": "e", "app": "east-app"}, {"name": "w", "app": "west-app"}]})
    wait_for(lambda: tls.owner.task(f"{workflow_id}/e")["site"] == "east", 30, "placement at east")
    # A site speaks only as itself.
    for call in (lambda: _sync(tls, west, "east")[1].__next__(),
                 lambda: arpc_register(tls, west, "east")):  # fmt: skip
        with pytest.raises(grpc.RpcError) as impostor:
            call()
        assert impostor.value.code() == grpc.StatusCode.PERMISSION_DENIED
    out_e, in_e, ch_e = _sync(tls, east, "east")
    out_w, in_w, ch_w = _sync(tls, west, "west")
    assert next(in_e).HasField("welcome") and next(in_w).HasField("welcome")
    assert [m.assign.task_id for m in next(in_w).messages] == [f"{workflow_id}/w"]  # only its own app's task
    forged = pb.TaskEvent(task_id=f"{workflow_id}/e", attempt=1, from_state=S.READY.number, to_state=S.FAILED.number, message="forged")
    out_w.put(pb.SiteEnvelope(messages=[pb.SiteMessage(seq=1, event=forged)]))
    with pytest.raises(grpc.RpcError) as denied:
        next(in_w)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED and "never assigned to it" in denied.value.details()
    assert tls.owner.task(f"{workflow_id}/e")["state"] != "FAILED"
    # East goes on: its own news is applied.
    assert [m.assign.task_id for m in next(in_e).messages] == [f"{workflow_id}/e"]
    out_e.put(pb.SiteEnvelope(messages=[pb.SiteMessage(seq=1, event=pb.TaskEvent(task_id=f"{workflow_id}/e", attempt=1,
                                                                                   from_state=S.READY.number, to_state=S.STAGED_IN.number))], ack=1))  # fmt: skip
    assert next(in_e).ack == 1
    assert tls.owner.task(f"{workflow_id}/e")["state"] == "STAGED_IN"
    # A site's credential is not a user's.
    with client(tls, west) as as_user, pytest.raises(ArgoError) as not_user:
        as_user.list()
    assert not_user.value.code == grpc.StatusCode.PERMISSION_DENIED
    out_e.put(None)
    out_w.put(None)
    for ch in (ch_e, ch_w):
        ch.close()
    log = (tls.data / "logs" / "server.log").read_text()
    assert "Sites.Sync refused (PERMISSION_DENIED) for site 'west'" in log


def arpc_register(fed, token: str, name: str):
    channel = grpc.secure_channel(fed.address, grpc.ssl_channel_credentials(open(fed.ca, "rb").read()))
    try:
        return rpc.SitesStub(channel).Register(pb.RegisterRequest(name=name, apps=["x"]), metadata=md(token), timeout=10)
    finally:
        channel.close()


def test_mutual_tls_refuses_clients_without_a_valid_certificate(tmp_path):
    certs = init_ca(tmp_path / "tls")
    good_cert, good_key = issue_client(certs, "alpha")
    past = datetime.now(UTC) - timedelta(days=30)
    old_cert, old_key = issue_client(certs, "stale", not_before=past, not_after=past + timedelta(days=1))
    fed = Federation(tmp_path, site_timeout_s=3600)
    try:
        fed.start_server("--tls-dir", str(certs), "--mtls")
        ca = certs / "ca.pem"
        with ArgoClient(fed.address, ca_file=ca, token=fed.owner_token(), timeout_s=10) as no_cert, pytest.raises(ArgoError) as refused:
            no_cert.sites()
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        with ArgoClient(fed.address, ca_file=ca, cert_file=old_cert, key_file=old_key, token=fed.owner_token(), timeout_s=10) as old:
            with pytest.raises(ArgoError):
                old.sites()
        with ArgoClient(fed.address, ca_file=ca, cert_file=good_cert, key_file=good_key, token=fed.owner_token(), timeout_s=10) as ok:
            assert ok.sites() == []
        # `argo server status` finds the CA in the server's settings.
        status = subprocess.run([*ARGO, "server", "status", "--data", str(fed.data), "--json"], capture_output=True, text=True, timeout=60)
        assert json.loads(status.stdout)["running"]
    finally:
        fed.stop()
        os.environ.pop("ARGO_TOKEN", None)


def test_secret_files_readable_by_others_are_refused(tmp_path):
    data = tmp_path / "argo"
    ServerSettings(data=data, address=f"127.0.0.1:{free_port()}").save()
    token = data / "owner-token"
    token.write_text("argo-u-x\n")
    token.chmod(0o644)
    started = subprocess.run([*ARGO, "server", "start", "--data", str(data)], capture_output=True, text=True, timeout=120)
    assert started.returncode == 1 and f"chmod 600 {token}" in started.stderr
    certs = init_ca(tmp_path / "tls")
    cert, key = issue_client(certs, "c")
    assert oct(key.stat().st_mode & 0o777) == "0o600" and oct((certs / "server.key").stat().st_mode & 0o777) == "0o600"
    key.chmod(0o640)
    with pytest.raises(BalsamError, match="chmod 600"):
        ArgoClient("127.0.0.1:1", ca_file=certs / "ca.pem", cert_file=cert, key_file=key, token="")


def test_a_sites_credential_is_refreshed_mid_run_with_nothing_lost_or_run_twice(tmp_path):
    fed = Federation(tmp_path, site_timeout_s=30)
    fed.start_server("--token-ttl", "4")  # the agent renews at 2 s; each stream ends at its token's 4 s
    try:
        site = fed.add_site("alpha")
        cred_file = site.settings.argo_credential_file
        assert oct(cred_file.stat().st_mode & 0o777) == "0o600"
        first = json.loads(cred_file.read_text())["token"]
        tokens = {first}
        with fed.client() as client:
            wait_for(lambda: [s["status"] for s in client.sites()] == ["up"], 30, "alpha up")
            tasks = [{"name": f"t{i}", "app": "run", "params": {"log": str(fed.runs_log), "task": f"t{i}", "seconds": 0.5}}
                     for i in range(8)]  # fmt: skip
            workflow_id = client.submit({"name": "refresh", "tasks": tasks})
            deadline = time.monotonic() + 150
            while client.status(workflow_id)["status"] == "running" and time.monotonic() < deadline:
                tokens.add(json.loads(cred_file.read_text())["token"])
                time.sleep(0.5)
            assert client.wait(workflow_id, timeout_s=30) == "finished"
            events = list(client.watch(workflow_id))
            finishes = Counter(e.task_id for e in events if e.to_state == 10)
        assert len(tokens) >= 3, "the credential was not renewed during the run"
        assert finishes == Counter({f"{workflow_id}/t{i}": 1 for i in range(8)})
        assert Counter(task for _, task in fed.runs()) == Counter({f"t{i}": 1 for i in range(8)})
        # The first token expired long ago: it is refused, the current one works.
        with ArgoClient(fed.address, token=first) as old, pytest.raises(ArgoError) as expired:
            old.whoami()
        assert expired.value.code == grpc.StatusCode.UNAUTHENTICATED
        # A credential others can read: the agent refuses to start, naming the fix.
        from balsam.site.agent import stop_agent

        stop_agent(site.settings)
        cred_file.chmod(0o644)
        with pytest.raises(BalsamError, match=f"chmod 600 {cred_file}"):
            fed.start_agent("alpha")
        cred_file.chmod(0o600)
        # Revoking the site ends its stream at once; it stays disconnected.
        fed.start_agent("alpha")
        assert "revoked" in fed.argo("site", "revoke", "alpha", "--data", str(fed.data)).stdout
        wait_for(lambda: "unknown or revoked token" in (site.settings.logs_dir / "agent.log").read_text(), 30, "the site refused")
    finally:
        fed.stop()
        os.environ.pop("ARGO_TOKEN", None)


def test_the_cli_adds_a_user_who_logs_in_and_is_known_from_the_client_config(tls, tmp_path):
    env = {**os.environ, "ARGO_CLIENT_CONFIG": str(tmp_path / "client.toml")}
    env.pop("ARGO_TOKEN", None)
    made = subprocess.run([*ARGO, "user", "add", "carol", "--role", "collaborator", "--project", "p9", "--data", str(tls.data)],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    login = subprocess.run([*ARGO, "login", "--address", tls.address, "--ca", tls.ca], input=token + "\n",
                           capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert login.returncode == 0 and "collaborator" in login.stdout, login.stderr
    assert oct((tmp_path / "client.toml").stat().st_mode & 0o777) == "0o600"
    who = subprocess.run([*ARGO, "whoami", "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert json.loads(who.stdout)["name"] == "carol" and json.loads(who.stdout)["projects"] == ["p9"]
    bad = subprocess.run([*ARGO, "login", "--token", "argo-u-wrong", "--address", tls.address, "--ca", tls.ca],
                         capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert bad.returncode == 1 and "not authenticated" in bad.stderr
