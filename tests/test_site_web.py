"""A lone site's dashboard (``balsam site start --web``), served by the real agent over the site's own
database: its token (a 0600 secret file), what the pages and API show (jobs by state, the table, a
job's events and output tail), the live feed, CSRF and origin on the kill button, plain text off
loopback refused, and the pages in a real browser."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time

import httpx
import pytest
from conftest import active_site, balsam_script, fresh_database
from launcher_helpers import run_launcher
from web_helpers import chromium, screenshot, sign_in, wait_in_page

from balsam.postgres import free_port
from balsam.site.web.app import COOKIE
from balsam.web.guard import csrf_value

pytestmark = pytest.mark.timeout(300)


def balsam(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([balsam_script(), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert run.returncode == 0, run.stdout + run.stderr
    return run


@pytest.fixture(scope="module")
def site_of_module(pg_server, tmp_path_factory):
    with fresh_database(pg_server) as url, active_site(tmp_path_factory.mktemp("site-web") / "site", url) as site:
        yield site


@pytest.fixture(scope="module")
def served(site_of_module):
    """The site with three jobs run (their output written) and two waiting, its agent serving the
    dashboard. Tests that add or kill jobs do so in workflows of their own."""
    site = site_of_module
    site.add_app("say", f"{sys.executable} -c 'import sys; print(\"said\", sys.argv[1]); print(\"oops\", file=sys.stderr)' {{n}}")
    site.add_jobs([{"app": "say", "name": f"done{i}", "params": {"n": str(i)}} for i in range(3)])
    ran = run_launcher(site, "--job-mode", "serial", "--until-idle")
    assert ran.returncode == 0, ran.stderr[-2000:]
    site.add_jobs([{"app": "say", "name": f"wait{i}", "params": {"n": str(i)}, "workflow": "later"} for i in range(2)])
    port = free_port()
    started = balsam("site", "start", "--web", f"127.0.0.1:{port}")
    try:
        assert f"dashboard on http://127.0.0.1:{port}/" in started.stdout, started.stdout
        site.base = f"http://127.0.0.1:{port}"
        site.token = site.settings.web_token_file.read_text().strip()
        yield site
    finally:
        balsam("site", "stop", check=False)


def test_the_token_is_a_private_file_and_nothing_is_served_without_it(served):
    assert stat.S_IMODE(os.stat(served.settings.web_token_file).st_mode) == 0o600
    assert len(served.token) >= 32
    with httpx.Client(base_url=served.base) as anonymous:
        for path in ("/api/summary", "/api/jobs", "/api/jobs/1", "/api/events"):
            reply = anonymous.get(path)
            assert reply.status_code == 401 and "no token" in reply.json()["error"], path
        assert anonymous.get("/", follow_redirects=False).headers["location"].startswith("/signin")
        forged = anonymous.get("/api/summary", headers={"authorization": "Bearer " + "x" * 43})
        assert forged.status_code == 401 and "not this site's dashboard token" in forged.json()["error"]
    status = balsam("site", "status", "--json")
    assert json.loads(status.stdout)["web"] == served.base + "/"


def test_the_api_shows_jobs_by_state_the_table_and_a_job_with_its_events_and_output(served):
    with httpx.Client(base_url=served.base, headers={"authorization": f"Bearer {served.token}"}) as owner:
        summary = owner.get("/api/summary").json()
        assert summary["counts"] == served.count_jobs() and summary["counts"]["JOB_FINISHED"] == 3
        page = owner.get("/api/jobs", params={"workflow": "later", "sort": "id", "order": "desc", "per_page": 1}).json()
        assert [j["name"] for j in page["jobs"]] == ["wait1"] and page["total"] == 2 and page["pages"] == 2
        later = owner.get("/api/jobs", params={"workflow": "later"}).json()
        assert {j["state"] for j in later["jobs"]} == {"READY"} and later["total"] == 2
        assert owner.get("/api/jobs", params={"state": "RUNNING"}).json()["total"] == 0
        done = next(j for j in owner.get("/api/jobs", params={"q": "done"}).json()["jobs"] if j["name"] == "done1")
        job = owner.get(f"/api/jobs/{done['id']}").json()
        assert [e["to"] for e in job["events"]][-1] == "JOB_FINISHED" and job["events"][0]["from"] == "CREATED"
        assert job["output_tail"]["available"] and job["output_tail"]["job.out"].strip() == "said 1"
        assert job["output_tail"]["job.err"].strip() == "oops"
        bad = owner.get("/api/jobs", params={"sort": "nope"})
        assert bad.status_code == 400 and "sort must be one of" in bad.json()["error"]
        assert owner.get("/api/jobs/999999").status_code == 404
        page = owner.get(f"/jobs/{done['id']}")
        assert page.status_code == 200 and "said 1" in page.text and "content-security-policy" in page.headers


def test_kill_by_cookie_needs_the_csrf_value_and_the_same_origin(served):
    waiting = served.add_job("say", name="to-kill", params={"n": "1"}, workflow="kills")
    with httpx.Client(base_url=served.base) as browser:
        signed = browser.post("/signin", data={"token": served.token, "next": "/"}, follow_redirects=False)
        assert signed.status_code == 303 and "HttpOnly" in signed.headers["set-cookie"] and COOKIE in signed.headers["set-cookie"]
        assert browser.post(f"/api/jobs/{waiting.id}/kill").status_code == 403  # no CSRF value
        other = browser.post(f"/api/jobs/{waiting.id}/kill", headers={"x-csrf-token": csrf_value(served.token), "origin": "http://evil.example"})
        assert other.status_code == 403 and "another origin" in other.json()["error"]
        assert served.job(waiting.id).state == "READY"
        killed = browser.post(f"/api/jobs/{waiting.id}/kill", headers={"x-csrf-token": csrf_value(served.token)})
        assert killed.status_code == 200 and killed.json()["state"] == "USER_KILLED"
        refused = httpx.post(f"{served.base}/signin", data={"token": "wrong"}, follow_redirects=False)
        assert refused.status_code == 401 and COOKIE not in refused.headers.get("set-cookie", "")


def test_the_live_feed_brings_a_new_job_within_a_second(served):
    with httpx.Client(base_url=served.base, headers={"authorization": f"Bearer {served.token}"}, timeout=30) as owner:
        after = max(e["id"] for e in owner.get(f"/api/jobs/{served.jobs()[-1].id}").json()["events"])
        with owner.stream("GET", "/api/events", params={"after": after}) as feed:
            lines = feed.iter_lines()
            assert next(lines).startswith("retry:")
            created = served.add_job("say", name="fresh", params={"n": "9"}, workflow="fed")
            made = time.monotonic()
            for line in lines:
                if line.startswith("data: "):
                    events = json.loads(line[6:])
                    break
            arrived = time.monotonic()
    assert events[0]["job_id"] == created.id and events[0]["to"] == "READY"
    assert arrived - made < 1.0


def test_plain_text_off_loopback_is_refused(site):
    refused = balsam("site", "start", "--web", "0.0.0.0:8181", check=False)
    assert refused.returncode == 1 and "refusing to serve the site's dashboard without TLS on 0.0.0.0:8181" in refused.stderr
    assert "Traceback" not in refused.stderr and site.settings.web.address == ""
    bad = balsam("site", "start", "--web", "nowhere", check=False)
    assert bad.returncode == 1 and "web.address must be HOST:PORT" in bad.stderr


def test_the_pages_in_a_real_browser(served, tmp_path):
    with chromium() as driver:
        from selenium.webdriver.common.by import By

        sign_in(driver, served.base, served.token)
        wait_in_page(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-job]"), 30, "the jobs' rows")
        # The counts are redrawn as the page hears of changes: read them whole, again if one was redrawn meanwhile.
        counts = wait_in_page(driver, lambda d: {b.get_attribute("data-count"): int(b.text)
                                                 for b in d.find_elements(By.CSS_SELECTOR, "#counts b[data-count]")}, 10, "the counts")  # fmt: skip
        assert counts == served.count_jobs() and counts["JOB_FINISHED"] == 3
        screenshot(driver, tmp_path, "site-jobs")
        ready = str(counts["READY"] + 1)
        job = served.add_job("say", name="seen-live", params={"n": "7"}, workflow="browser")
        # Live, no reload: the page redraws the count when it hears of the new job.
        wait_in_page(driver, lambda d: d.find_element(By.CSS_SELECTOR, '#counts b[data-count="READY"]').text == ready, 10,
                     f"the READY count to become {ready}")  # fmt: skip
        driver.get(f"{served.base}/jobs/{job.id}")
        assert re.search("READY", driver.find_element(By.ID, "job-state").text)
        assert driver.find_elements(By.ID, "kill")
        screenshot(driver, tmp_path, "site-job")
