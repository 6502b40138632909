"""The Globus backend and login, against globus_sdk.testing's canned responses (no network here)."""

import io
import json
import os
import stat
import time

import globus_sdk
import pytest
import responses
from globus_sdk.testing import RegisteredResponse, get_last_request, load_response

from balsam.transfer import Item, Location, TransferError, globus_auth
from balsam.transfer.globus import GlobusBackend

SRC, DST = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
TID = "11111111-2222-4333-8444-555555555555"


@pytest.fixture(autouse=True)
def mocked():
    responses.start()
    yield
    responses.stop()
    responses.reset()


@pytest.fixture
def backend():
    return GlobusBackend(globus_sdk.TransferClient(), sync_level="size", deadline_min=30)


def gitem(src_path, dst_path, src=SRC, dst=DST) -> Item:
    return Item(Location("globus", src, src_path), Location("globus", dst, dst_path))


def task_doc(status, **extra):
    doc = {"DATA_TYPE": "task", "task_id": TID, "status": status, "type": "TRANSFER", "nice_status": None,
           "bytes_transferred": 0, "files_transferred": 0, "faults": 0, "fatal_error": None}
    doc.update(extra)
    return doc


def register_task(doc, events=()):
    RegisteredResponse(service="transfer", path=f"/v0.10/task/{TID}", json=doc).add()
    RegisteredResponse(service="transfer", path=f"/v0.10/task/{TID}/event_list",
                       json={"DATA_TYPE": "event_list", "DATA": list(events), "offset": 0, "limit": 20,
                             "total": len(events)}).add()  # fmt: skip
    RegisteredResponse(service="transfer", method="POST", path=f"/v0.10/task/{TID}/cancel",
                       json={"DATA_TYPE": "result", "code": "Canceled", "message": "cancelled"}).add()  # fmt: skip


def requests_to(suffix, method=None):
    return [c.request for c in responses.calls
            if c.request.url.split("?")[0].endswith(suffix) and (method is None or c.request.method == method)]  # fmt: skip


def event(code, description, details="", is_error=True):
    return {"DATA_TYPE": "event", "code": code, "description": description, "details": details,
            "is_error": is_error, "time": "2025-01-01T00:00:00+00:00"}  # fmt: skip


# -- submit ----------------------------------------------------------------------------------------


def test_submit_batches_every_item_into_one_task(backend):
    load_response(globus_sdk.TransferClient.get_submission_id)
    meta = load_response(globus_sdk.TransferClient.submit_transfer).metadata
    items = [gitem(f"/src/f{i}.dat", f"/dst/run/f{i}.dat") for i in range(250)] + [gitem("/src/folder", "/dst/folder")]
    task_id = backend.submit(items, label="balsam stage-in: job 12/13 (x)", verify_checksum=True)
    assert task_id == meta["task_id"]
    (sent,) = requests_to("/v0.10/transfer", "POST")
    body = json.loads(sent.body)
    assert body["DATA_TYPE"] == "transfer"
    assert body["source_endpoint"] == SRC and body["destination_endpoint"] == DST
    assert len(body["DATA"]) == 251
    assert body["DATA"][0]["source_path"] == "/src/f0.dat" and body["DATA"][0]["destination_path"] == "/dst/run/f0.dat"
    assert all("recursive" not in d for d in body["DATA"])  # Globus detects folders itself
    assert body["sync_level"] == 1 and body["verify_checksum"] is True  # the SDK sends "size" as its code, 1
    assert body["label"] == "balsam stage-in_ job 12_13 _x_"
    assert body["submission_id"] == meta["submission_id"]
    assert "deadline" in body


def test_submit_rejects_mixed_collections_and_schemes(backend):
    with pytest.raises(TransferError, match="one source and one destination collection"):
        backend.submit([gitem("/a", "/b"), gitem("/c", "/d", src="other")], label="x")
    with pytest.raises(TransferError, match="only globus://"):
        backend.submit([Item(Location.local("/a"), Location("globus", DST, "/b"))], label="x")
    with pytest.raises(TransferError, match="at least one item"):
        backend.submit([], label="x")
    assert len(responses.calls) == 0


def test_submit_api_errors(backend):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(globus_sdk.TransferClient.submit_transfer, case="failure")
    with pytest.raises(TransferError, match="Globus refused the transfer .*400.*NoTransferItems.*at least one item"):
        backend.submit([gitem("/a", "/b")], label="x")

    responses.reset()
    load_response(globus_sdk.TransferClient.get_submission_id)
    RegisteredResponse(service="transfer", method="POST", path="/v0.10/transfer", status=404,
                       json={"code": "EndpointNotFound", "message": f"No such endpoint '{SRC}'"}).add()  # fmt: skip
    with pytest.raises(TransferError, match=f"cannot find a collection.*{SRC}.*globus_endpoint"):
        backend.submit([gitem("/a", "/b")], label="x")

    responses.reset()
    load_response(globus_sdk.TransferClient.get_submission_id)
    RegisteredResponse(service="transfer", method="POST", path="/v0.10/transfer", status=403,
                       json={"code": "ConsentRequired", "message": "Missing required data_access consent",
                             "required_scopes": [f"urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/{SRC}/data_access]"]}).add()  # fmt: skip
    with pytest.raises(TransferError, match=r"needs your consent.*data_access.*balsam globus login --collection"):
        backend.submit([gitem("/a", "/b")], label="x")

    responses.reset()
    load_response(globus_sdk.TransferClient.get_submission_id)
    RegisteredResponse(service="transfer", method="POST", path="/v0.10/transfer", status=401,
                       json={"code": "AuthenticationFailed", "message": "Token is not active"}).add()  # fmt: skip
    with pytest.raises(TransferError, match="refused the credentials.*balsam globus login"):
        backend.submit([gitem("/a", "/b")], label="x")


def test_client_factory_errors_are_transfer_errors(tmp_path):
    b = GlobusBackend.from_token_file(tmp_path / "none.json", "client-id")
    with pytest.raises(TransferError, match="not logged in to Globus.*balsam globus login"):
        b.submit([gitem("/a", "/b")], label="x")
    assert b.poll(TID).state == "failed"
    with pytest.raises(TransferError, match="globus_client_id"):
        GlobusBackend.from_token_file(tmp_path / "none.json", "").submit([gitem("/a", "/b")], label="x")


# -- poll ------------------------------------------------------------------------------------------


def test_succeeded_is_done(backend):
    register_task(task_doc("SUCCEEDED", bytes_transferred=12345, files_transferred=7))
    status = backend.poll(TID)
    assert (status.state, status.failed, status.bytes_done, status.files_done) == ("done", {}, 12345, 7)
    assert not requests_to("/cancel")


def test_failed_with_reason(backend):
    register_task(task_doc("FAILED", nice_status=None, fatal_error={"code": "DEADLINE_EXCEEDED", "description": "deadline reached"}))
    status = backend.poll(TID)
    assert status.state == "failed" and "DEADLINE_EXCEEDED: deadline reached" in status.message


def test_failed_reason_from_last_error_event(backend):
    register_task(task_doc("FAILED"), events=[event("PROGRESS", "ok", is_error=False), event("ENDPOINT_ERROR", "disk on fire")])
    status = backend.poll(TID)
    assert status.state == "failed" and "ENDPOINT_ERROR: disk on fire" in status.message


def test_active_with_fatal_nice_status_is_cancelled(backend):
    register_task(task_doc("ACTIVE", nice_status="FILE_NOT_FOUND", faults=1, bytes_transferred=10,
                           nice_status_short_description="file not found",
                           nice_status_details="/src/missing.dat: No such file or directory"))  # fmt: skip
    status = backend.poll(TID)
    assert status.state == "failed"
    assert "FILE_NOT_FOUND" in status.message and "/src/missing.dat" in status.message
    assert len(requests_to(f"/task/{TID}/cancel", "POST")) == 1
    assert status.bytes_done == 10


@pytest.mark.parametrize(("code", "details"), [
    ("PERMISSION_DENIED", "open /dst/x: permission denied"),
    ("CONSENT_REQUIRED", "data_access consent missing"),
    ("ENDPOINT_ERROR", "Command failed: 500 /src/gone.dat: No such file or directory"),
])  # fmt: skip
def test_active_with_fatal_event_is_cancelled(backend, code, details):
    register_task(task_doc("ACTIVE", nice_status="OK", faults=2),
                  events=[event("CONNECT_FAILED", "connection failed"), event(code, "error", details)])  # fmt: skip
    status = backend.poll(TID)
    assert status.state == "failed" and code in status.message and details in status.message
    assert len(requests_to(f"/task/{TID}/cancel", "POST")) == 1


def test_active_with_transient_error_stays_active(backend):
    register_task(task_doc("ACTIVE", nice_status="CONNECT_FAILED", faults=3, bytes_transferred=99,
                           nice_status_short_description="could not connect"),
                  events=[event("CONNECT_FAILED", "connection refused", "gridftp timeout"),
                          event("ENDPOINT_ERROR", "transient", "Connection timed out")])  # fmt: skip
    status = backend.poll(TID)
    assert status.state == "active" and "CONNECT_FAILED" in status.message and status.bytes_done == 99
    assert len(requests_to("/event_list")) == 1
    status = backend.poll(TID)  # no new faults: the event list is not read again
    assert status.state == "active" and len(requests_to("/event_list")) == 1
    assert not requests_to("/cancel")


def test_active_ok_is_active(backend):
    register_task(task_doc("ACTIVE", nice_status="Queued"))
    status = backend.poll(TID)
    assert status.state == "active" and status.message == ""
    assert not requests_to("/event_list")


def test_inactive_asks_for_login(backend):
    register_task(task_doc("INACTIVE", nice_status="AUTH", nice_status_short_description="credentials expired"))
    status = backend.poll(TID)
    assert status.state == "failed" and "balsam globus login" in status.message and "inactive" in status.message
    assert len(requests_to(f"/task/{TID}/cancel", "POST")) == 1


def test_poll_unknown_task_and_auth_error(backend):
    RegisteredResponse(service="transfer", path=f"/v0.10/task/{TID}", status=404,
                       json={"code": "TaskNotFound", "message": "no such task"}).add()  # fmt: skip
    status = backend.poll(TID)
    assert status.state == "failed" and f"unknown Globus task {TID}" in status.message
    responses.reset()
    RegisteredResponse(service="transfer", path=f"/v0.10/task/{TID}", status=401,
                       json={"code": "AuthenticationFailed", "message": "Token expired"}).add()  # fmt: skip
    status = backend.poll(TID)
    assert status.state == "failed" and "balsam globus login" in status.message


def test_cancel(backend):
    register_task(task_doc("ACTIVE"))
    backend.cancel(TID)
    assert len(requests_to(f"/task/{TID}/cancel", "POST")) == 1
    responses.reset()
    RegisteredResponse(service="transfer", method="POST", path=f"/v0.10/task/{TID}/cancel", status=409,
                       json={"code": "Conflict", "message": "task already complete"}).add()  # fmt: skip
    backend.cancel(TID)  # already ended: fine


# -- tokens and login ------------------------------------------------------------------------------

TOKENS = {"client_id": "cid", "resource_server": "transfer.api.globus.org", "access_token": "AT1",
          "refresh_token": "RT1", "expires_at_seconds": int(time.time()) + 3600, "scope": "s"}  # fmt: skip


def token_response(access, refresh):
    return RegisteredResponse(service="auth", method="POST", path="/v2/oauth2/token", json={
        "access_token": access, "refresh_token": refresh, "expires_in": 172800, "token_type": "Bearer",
        "scope": "urn:globus:auth:scope:transfer.api.globus.org:all", "resource_server": "transfer.api.globus.org",
        "state": "_default", "other_tokens": []})  # fmt: skip


def test_token_file_mode_and_refusal(tmp_path):
    path = tmp_path / "site" / "globus-tokens.json"
    old_umask = os.umask(0)  # even with a permissive umask the file is 0600
    try:
        globus_auth.save_tokens(path, TOKENS)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert globus_auth.load_tokens(path)["refresh_token"] == "RT1"
    assert [p.name for p in path.parent.iterdir()] == ["globus-tokens.json"]  # no temp left
    os.chmod(path, 0o644)
    with pytest.raises(TransferError, match=rf"read by group or others \(mode 644\).*chmod 600 {path}"):
        globus_auth.load_tokens(path)
    os.chmod(path, 0o600)
    assert globus_auth.token_status(path)["logged_in"] is True
    assert globus_auth.delete_tokens(path) and not globus_auth.delete_tokens(path)
    assert globus_auth.load_tokens(path) is None and globus_auth.token_status(path)["logged_in"] is False
    path.write_text("{not json")
    os.chmod(path, 0o600)
    with pytest.raises(TransferError, match="not valid JSON"):
        globus_auth.load_tokens(path)


def test_refresh_writes_new_tokens_back(tmp_path):
    path = tmp_path / "tokens.json"
    globus_auth.save_tokens(path, {**TOKENS, "expires_at_seconds": int(time.time()) - 10})  # expired
    token_response("AT2", "RT2").add()
    authorizer = globus_auth.make_authorizer(path, "cid")
    assert authorizer.get_authorization_header() == "Bearer AT2"
    stored = globus_auth.load_tokens(path)
    assert (stored["access_token"], stored["refresh_token"]) == ("AT2", "RT2")
    assert stored["expires_at_seconds"] > time.time() + 3600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    body = get_last_request().body
    assert "grant_type=refresh_token" in body and "refresh_token=RT1" in body


def test_authorizer_errors(tmp_path):
    path = tmp_path / "tokens.json"
    with pytest.raises(TransferError, match="not logged in"):
        globus_auth.make_authorizer(path, "cid")
    globus_auth.save_tokens(path, TOKENS)
    with pytest.raises(TransferError, match="issued to client cid"):
        globus_auth.make_authorizer(path, "another")
    with pytest.raises(TransferError, match=r'\[transfer\] globus_client_id = "..."'):
        globus_auth.make_authorizer(path, "")


def test_login_flow(tmp_path):
    path = tmp_path / "tokens.json"
    token_response("AT-login", "RT-login").add()
    shown = []
    tokens = globus_auth.login("cid", path, collections=[DST], read_code=lambda prompt: " the-code \n", show=shown.append)
    assert "https://auth.globus.org/v2/oauth2/authorize?client_id=cid" in shown[0]
    assert "access_type=offline" in shown[0] and f"{DST}%2Fdata_access" in shown[0]
    assert tokens["access_token"] == "AT-login" and tokens["refresh_token"] == "RT-login"
    assert globus_auth.load_tokens(path)["refresh_token"] == "RT-login"
    body = get_last_request().body
    assert "grant_type=authorization_code" in body and "code=the-code" in body and "code_verifier=" in body


def test_login_failures(tmp_path):
    path = tmp_path / "tokens.json"
    load_response(globus_sdk.NativeAppAuthClient.oauth2_exchange_code_for_tokens)  # the SDK's: no refresh token
    with pytest.raises(TransferError, match="no refresh token"):
        globus_auth.login("cid", path, read_code=lambda p: "code", show=lambda s: None)
    load_response(globus_sdk.NativeAppAuthClient.oauth2_exchange_code_for_tokens, case="invalid_grant")
    with pytest.raises(TransferError, match="refused the authorization code.*invalid_grant"):
        globus_auth.login("cid", path, read_code=lambda p: "bad", show=lambda s: None)
    with pytest.raises(TransferError, match="no authorization code"):
        globus_auth.login("cid", path, read_code=lambda p: "  ", show=lambda s: None)
    assert not path.exists()


# -- the CLI -----------------------------------------------------------------------------------------


def make_site(tmp_path, client_id="cid"):
    from balsam.site.settings import SiteSettings, TransferSettings

    settings = SiteSettings(path=tmp_path / "site", name="s",
                            transfer=TransferSettings(globus_client_id=client_id, globus_endpoint=SRC))  # fmt: skip
    settings.path.mkdir()
    settings.save()
    return settings


def test_cli_login_status_logout(tmp_path, balsam, monkeypatch):
    settings = make_site(tmp_path)
    site = f"--site {settings.path}"
    result = balsam(f"globus status {site}")
    assert result.code == 0 and "not logged in" in result.out and SRC in result.out
    token_response("AT-cli", "RT-cli").add()
    monkeypatch.setattr("sys.stdin", io.StringIO("cli-code\n"))
    result = balsam(f"globus login {site}")
    assert result.code == 0, result.err
    assert "oauth2/authorize" in result.out and "logged in to Globus" in result.out
    assert stat.S_IMODE(settings.globus_tokens_file.stat().st_mode) == 0o600
    result = balsam(f"globus status {site} --json")
    info = json.loads(result.out)
    assert info["logged_in"] is True and info["client_id"] == "cid" and info["endpoint"] == SRC
    result = balsam(f"globus logout {site}")
    assert result.code == 0 and "deleted" in result.out and not settings.globus_tokens_file.exists()


def test_cli_login_without_client_id(tmp_path, balsam):
    settings = make_site(tmp_path, client_id="")
    result = balsam(f"globus login --site {settings.path}")
    assert result.code == 1 and "globus_client_id" in result.err and "balsam-site.toml" in result.err
