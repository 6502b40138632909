"""The dashboard over HTTP, against a real coordinator process: who may see and do what (tokens,
roles, projects, CSRF, other origins, TLS), the JSON API's answers and refusals, and the live feed."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from argo_helpers import wait_for
from web_helpers import WebFederation, chain

from balsam.argo.certs import init_ca
from balsam.argo.web.access import COOKIE, csrf_value
from balsam.postgres import free_port

pytestmark = pytest.mark.timeout(300)
ARGO = [sys.executable, "-m", "balsam.argo.cli"]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    fed = WebFederation(tmp_path_factory.mktemp("web-http"), run_s=0.5)
    try:
        fed.p = fed.submit(chain("in-p", 3), project="p")
        fed.q = fed.submit(chain("in-q", 2), project="q")
        with fed.http("owner") as owner:
            wait_for(lambda: owner.get(f"/api/workflows/{fed.p}").json()["status"] == "finished", 60, "workflow p to finish")
        yield fed
    finally:
        fed.stop()


def test_an_unauthenticated_request_gets_nothing(web):
    with web.http() as anonymous:
        for path in ("/api/overview", "/api/workflows", f"/api/workflows/{web.p}/tasks", f"/api/tasks/{web.p}/t0", "/api/events"):
            reply = anonymous.get(path)
            assert reply.status_code == 401, path
            assert "no token" in reply.json()["error"]
        page = anonymous.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/signin")
        assert anonymous.post(f"/api/tasks/{web.p}/t0/kill").status_code == 401
    with httpx.Client(base_url=web.base, headers={"authorization": "Bearer argo-u-forged"}) as forged:
        assert forged.get("/api/overview").json()["error"].endswith("unknown or revoked token")


def test_a_site_token_cannot_use_the_dashboard(web):
    with web.http() as client:
        token = web.site.metadata[0][1].split(" ", 1)[1]
        reply = client.get("/api/overview", headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 403 and "only users may" in reply.json()["error"]


def test_the_api_answers_what_the_pages_show(web):
    with web.http("owner") as owner:
        overview = owner.get("/api/overview").json()
        assert [s["name"] for s in overview["sites"]] == ["sim"] and overview["sites"][0]["status"] == "up"
        mine = {w["id"]: w for w in overview["workflows"]}
        assert mine[web.p]["counts"] == {"JOB_FINISHED": 3} and mine[web.p]["owner"] == "owner" and mine[web.p]["project"] == "p"
        page = owner.get(f"/api/workflows/{web.p}/tasks", params={"sort": "name", "order": "desc", "per_page": 2}).json()
        assert [t["name"] for t in page["tasks"]] == ["t2", "t1"] and page["total"] == 3 and page["pages"] == 2
        assert all(t["started_at"] and t["ended_at"] and t["site"] == "sim" for t in page["tasks"])
        second = owner.get(f"/api/workflows/{web.p}/tasks", params={"sort": "name", "order": "desc", "per_page": 2, "page": 2}).json()
        assert [t["name"] for t in second["tasks"]] == ["t0"]
        assert owner.get(f"/api/workflows/{web.p}/tasks", params={"state": "RUNNING"}).json()["total"] == 0
        dag = owner.get(f"/api/workflows/{web.p}/dag").json()
        assert not dag["grouped"] and dag["levels"] == 3 and sorted(dag["edges"]) == [[f"{web.p}/t0", f"{web.p}/t1"], [f"{web.p}/t1", f"{web.p}/t2"]]
        task = owner.get(f"/api/tasks/{web.p}/t1").json()
        assert task["parents"] == [f"{web.p}/t0"] and task["children"] == [f"{web.p}/t2"]
        assert [a["site"] for a in task["attempts"]] == ["sim"] and task["events"][-1]["to"] == "JOB_FINISHED"
        assert not task["output_tail"]["available"] and "outputs" in task["output_tail"]["why"]
        plots = owner.get(f"/api/workflows/{web.p}/plots").json()
        assert sum(n for _, n in plots["throughput"]) == 3 and len(plots["gantt"]) == 3
        assert max(v for _, v in plots["utilisation"]["sim"]) == 1  # a chain: one task at a time
        assert len(plots["apps"]["run"]["runs"]) == 3


def test_bad_queries_get_one_clear_error(web):
    with web.http("owner") as owner:
        for params, said in (({"sort": "bogus"}, "sort must be one of"), ({"page": "abc"}, "page must be a whole number"),
                             ({"per_page": "100000"}, "per_page must be from 1 to 500"), ({"state": "DONE"}, "state must be one of")):  # fmt: skip
            reply = owner.get(f"/api/workflows/{web.p}/tasks", params=params)
            assert reply.status_code == 400 and said in reply.json()["error"], params
        missing = owner.get("/api/workflows/999999")
        assert missing.status_code == 404 and missing.json()["error"] == "no workflow 999999"
        assert owner.get("/api/tasks/999/none").status_code == 404


def test_a_user_sees_only_its_projects_in_every_endpoint(web):
    with web.http("mallory") as mallory:
        listed = [w["id"] for w in mallory.get("/api/workflows").json()]
        assert listed == [web.q]
        assert [w["id"] for w in mallory.get("/api/overview").json()["workflows"]] == [web.q]
        for path in (f"/api/workflows/{web.p}", f"/api/workflows/{web.p}/tasks", f"/api/workflows/{web.p}/dag",
                     f"/api/workflows/{web.p}/plots", f"/api/tasks/{web.p}/t0", f"/api/events?workflow={web.p}"):  # fmt: skip
            reply = mallory.get(path)
            assert reply.status_code == 403 and "project 'p'" in reply.json()["error"], path
        page = mallory.get(f"/workflows/{web.p}")
        assert page.status_code == 403 and "in-p" not in page.text
        # The feed of every workflow it may see: history from the start, none of project p's events.
        with mallory.stream("GET", "/api/events", params={"after": 0}) as feed:
            events = _read_events(feed, until=lambda found: any(e["workflow_id"] == web.q and e["to"] == "JOB_FINISHED" for e in found))
        assert events and {e["workflow_id"] for e in events} <= {web.q, 0}


def test_a_viewer_may_look_but_not_kill_or_cancel(web):
    # b is the last of a chain of 12 tasks of about 0.5 s each: not ended when the kill below comes, even on a slow machine
    spec = chain("long", 12)
    spec["tasks"][-1]["name"] = "b"
    running = web.submit(spec, project="p")
    with web.http("victor") as victor:
        assert victor.get(f"/api/workflows/{running}").status_code == 200
        assert victor.get(f"/api/tasks/{running}/b").json()["may_kill"] is False
        refused = victor.post(f"/api/tasks/{running}/b/kill")
        assert refused.status_code == 403 and "viewers can watch, not change" in refused.json()["error"]
        assert victor.post(f"/api/workflows/{running}/cancel").status_code == 403
        page = victor.get(f"/tasks/{running}/b").text
        assert 'id="kill"' not in page
    with web.http("alice") as alice:
        assert alice.get(f"/api/tasks/{running}/b").json()["may_kill"] is True
        killed = alice.post(f"/api/tasks/{running}/b/kill")
        assert killed.status_code == 200 and killed.json()["state"] == "USER_KILLED"
    with web.http("owner") as owner:
        assert owner.get(f"/api/tasks/{running}/b").json()["state"] == "USER_KILLED"


def test_actions_by_cookie_need_the_csrf_value_and_the_same_origin(web):
    running = web.submit({"name": "csrf", "tasks": [{"name": "a", "app": "run"}, {"name": "b", "app": "run", "parents": ["a"]}]}, project="p")
    token = web.tokens["alice"]
    with httpx.Client(base_url=web.base, timeout=30) as browser:
        signed = browser.post("/signin", data={"token": token, "next": f"/workflows/{running}"}, follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == f"/workflows/{running}"
        cookie = signed.headers["set-cookie"]
        assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = browser.get(f"/workflows/{running}")
        assert page.status_code == 200 and f'content="{csrf_value(token)}"' in page.text
        forged = browser.post(f"/api/tasks/{running}/b/kill")  # what another site's form could make the browser send
        assert forged.status_code == 403 and "CSRF" in forged.json()["error"]
        wrong = browser.post(f"/api/tasks/{running}/b/kill", headers={"x-csrf-token": csrf_value("argo-u-other")})
        assert wrong.status_code == 403
        other_origin = browser.post(f"/api/tasks/{running}/b/kill", headers={"x-csrf-token": csrf_value(token), "origin": "http://evil.example"})
        assert other_origin.status_code == 403 and "another origin" in other_origin.json()["error"]
        with web.http("owner") as owner:
            assert owner.get(f"/api/tasks/{running}/b").json()["state"] != "USER_KILLED"
        done = browser.post(f"/api/tasks/{running}/b/kill", headers={"x-csrf-token": csrf_value(token), "origin": web.base})
        assert done.status_code == 200 and done.json()["state"] == "USER_KILLED"
    with httpx.Client(base_url=web.base, timeout=30) as browser:
        refused = browser.post("/signin", data={"token": "argo-u-wrong"})
        assert refused.status_code == 401 and "unknown or revoked token" in refused.text and COOKIE not in refused.headers.get("set-cookie", "")
        assert browser.post("/signin", data={"token": token, "next": "//evil.example/"}, follow_redirects=False).headers["location"] == "/"


def test_the_live_feed_brings_a_change_within_a_second(web):
    with web.http("owner") as owner:
        after = max(e["id"] for e in _history(owner))
        workflow = None
        with owner.stream("GET", "/api/events", params={"after": after}) as feed:
            started = time.monotonic()
            workflow = web.submit({"name": "live", "tasks": [{"name": "x", "app": "run"}]}, project="p")
            submitted = time.monotonic()
            events = _read_events(feed, until=lambda found: any(e["workflow_id"] == workflow for e in found))
            arrived = time.monotonic()
        first = next(e for e in events if e["workflow_id"] == workflow)
        assert first["task_id"] == f"{workflow}/x" and first["to"] == "READY"
        print(f"\nsubmit call {submitted - started:.3f} s; its first event reached the feed {arrived - submitted:.3f} s after")
        assert arrived - submitted < 1.0


def test_tls_off_loopback_with_the_coordinators_certificates(tmp_path):
    certs = init_ca(tmp_path / "tls")
    web = WebFederation(tmp_path / "fed", tls=certs)
    try:
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with httpx.Client(base_url=web.base, verify=context, headers={"authorization": f"Bearer {web.tokens['owner']}"}) as client:
            assert client.get("/api/whoami").json()["name"] == "owner"
            signed = client.post("/signin", data={"token": web.tokens["owner"]}, follow_redirects=False)
            assert "Secure" in signed.headers["set-cookie"]
        with pytest.raises(httpx.TransportError):
            httpx.get(web.base.replace("https://", "http://") + "/api/whoami")  # plain text to a TLS port
    finally:
        web.stop()
    refused = subprocess.run([*ARGO, "server", "start", "--data", str(tmp_path / "d"), "--web", f"0.0.0.0:{free_port()}"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 1 and "the dashboard (--web): refusing to serve without TLS on 0.0.0.0" in refused.stderr


def _history(client: httpx.Client) -> list[dict]:
    with client.stream("GET", "/api/events", params={"after": 0}) as feed:
        return _read_events(feed, until=lambda found: bool(found))


def _read_events(feed: httpx.Response, until, timeout_s: float = 20.0) -> list[dict]:
    """The events of a feed's messages, read until ``until(events so far)`` holds."""
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/event-stream")
    found: list[dict] = []
    deadline = time.monotonic() + timeout_s
    kind = ""
    for line in feed.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "events":
            found.extend(json.loads(line[6:]))
            if until(found):
                return found
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"the feed did not bring what was awaited within {timeout_s} s: {found[-5:]}")


def test_the_task_table_sorts_ids_as_a_person_reads_them(web):
    names = ["t10", "t2", "t1", "prep", "t0", "t11", "t9"]
    workflow = web.submit({"name": "numbered", "tasks": [{"name": n, "app": "run"} for n in names]}, project="p")
    with web.http("owner") as owner:
        up = owner.get(f"/api/workflows/{workflow}/tasks", params={"sort": "id"}).json()
        assert [t["name"] for t in up["tasks"]] == ["prep", "t0", "t1", "t2", "t9", "t10", "t11"]  # t2 before t10: a number
        down = owner.get(f"/api/workflows/{workflow}/tasks", params={"sort": "id", "order": "desc", "per_page": 3}).json()
        assert [t["name"] for t in down["tasks"]] == ["t11", "t10", "t9"]
