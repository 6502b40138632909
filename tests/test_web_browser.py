"""The dashboard in a real browser: Debian's chromium, driven through chromedriver by selenium,
against a real coordinator process and a site speaking the real sync protocol. Each test saves
screenshots in its tmp folder (their paths are printed)."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from argo_helpers import wait_for
from web_helpers import WebFederation, chain, chromium, screenshot, sign_in, wait_in_page

pytestmark = pytest.mark.timeout(300)
GREEN = "rgb(46, 158, 68)"  # .st-JOB_FINISHED in static/style.css


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    fed = WebFederation(tmp_path_factory.mktemp("web-browser"), run_s=3.0)
    try:
        yield fed
    finally:
        fed.stop()


def _by(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def test_the_pages_render_with_their_data(web, tmp_path):
    small = web.submit(chain("render-chain", 4), project="p")
    large = web.submit({"name": "render-fan", "tasks": [{"name": f"m{i}", "app": "run"} for i in range(600)]}, project="p")
    with web.http("owner") as owner:
        wait_for(lambda: owner.get(f"/api/workflows/{small}").json()["status"] == "finished", 60, "the chain to finish")
    with chromium() as driver:
        sign_in(driver, web.base, web.tokens["owner"])
        wait_in_page(driver, lambda d: _by(d, f'#workflows tr[data-workflow="{small}"]'), 10, "the overview's workflows")
        assert _by(driver, '#sites tr[data-site="sim"] .health')[0].text == "up"
        row = _by(driver, f'#workflows tr[data-workflow="{small}"]')[0]
        assert "render-chain" in row.text and "finished" in row.text and "owner" in row.text
        assert _by(driver, f'#workflows tr[data-workflow="{small}"] svg.progress rect.st-JOB_FINISHED')
        wait_in_page(driver, lambda d: "live" == d.find_element("id", "live").text, 10, "the live feed to connect")
        screenshot(driver, tmp_path, "overview")

        driver.get(f"{web.base}/workflows/{small}")
        wait_in_page(driver, lambda d: len(_by(d, "#dag rect.node")) == 4, 10, "the chain's DAG")
        assert {n.get_attribute("data-state") for n in _by(driver, "#dag rect.node")} == {"JOB_FINISHED"}
        assert len(_by(driver, "#dag path.edge")) == 3
        assert [r.get_attribute("data-task") for r in _by(driver, "#tasks tbody tr")] == [f"{small}/t{i}" for i in range(4)]
        wait_in_page(driver, lambda d: _by(d, "#plot-gantt svg rect.st-JOB_FINISHED"), 10, "the Gantt chart")
        assert len(_by(driver, "#plot-gantt svg rect.st-JOB_FINISHED")) == 4
        assert _by(driver, "#plot-throughput svg rect.bar") and _by(driver, '#plot-utilisation svg path[data-site="sim"]')
        assert _by(driver, '#plot-models [data-app="run"] svg circle')
        # sorting by name, descending, is the database's: the first row is t3
        _by(driver, '#tasks th[data-sort="name"]')[0].click()
        _by(driver, '#tasks th[data-sort="name"]')[0].click()
        wait_in_page(driver, lambda d: _by(d, "#tasks tbody tr")[0].get_attribute("data-task") == f"{small}/t3", 10, "the table sorted")
        screenshot(driver, tmp_path, "workflow")

        driver.get(f"{web.base}/workflows/{large}")
        wait_in_page(driver, lambda d: _by(d, "#dag g[data-group]"), 15, "the large workflow's grouped DAG")
        assert "600 tasks in 1 groups" in driver.find_element("id", "dag-note").text
        assert driver.find_element("id", "total").text == "600" and len(_by(driver, "#tasks tbody tr")) == 50
        first = [r.get_attribute("data-task") for r in _by(driver, "#tasks tbody tr")]
        driver.find_element("id", "next").click()
        wait_in_page(driver, lambda d: d.find_element("id", "page-no").text == "2", 10, "page 2")
        second = [r.get_attribute("data-task") for r in _by(driver, "#tasks tbody tr")]
        with web.http("owner") as owner:
            assert second == [t["id"] for t in owner.get(f"/api/workflows/{large}/tasks", params={"page": 2}).json()["tasks"]]
        assert len(second) == 50 and not set(first) & set(second)
        screenshot(driver, tmp_path, "workflow-large")

        driver.get(f"{web.base}/tasks/{small}/t1")
        history = [r.text for r in _by(driver, "#history tbody tr")]
        # t1 could go nowhere but sim, where its parent was: sent ahead there (balsam.argo.ahead)
        assert any("JOB_FINISHED" in line for line in history) and any("sent ahead to site sim" in line for line in history)
        assert "sim" in _by(driver, "#attempts tbody tr")[0].text
        assert _by(driver, "#no-tail") and not _by(driver, "#kill")  # finished: nothing to kill
        screenshot(driver, tmp_path, "task")


def test_a_finishing_task_changes_colour_in_the_dag_and_the_table_without_a_reload(web, tmp_path):
    with chromium() as driver:
        sign_in(driver, web.base, web.tokens["alice"])
        workflow = web.submit({"name": "colour", "tasks": [{"name": "slow", "app": "run"}]}, project="p")
        task = f"{workflow}/slow"
        driver.get(f"{web.base}/workflows/{workflow}")
        wait_in_page(driver, lambda d: d.find_element("id", "live").text == "live", 10, "the live feed to connect")
        node = wait_in_page(driver, lambda d: _by(d, f'#dag rect.node[data-task="{task}"]'), 10, "the task's node")[0]
        before = node.get_attribute("data-state")
        fill_before = driver.execute_script("return getComputedStyle(arguments[0]).fill", node)
        assert before != "JOB_FINISHED" and fill_before != GREEN
        driver.execute_script("window.notReloaded = true")
        screenshot(driver, tmp_path, "before-finish")
        wait_in_page(driver, lambda d: _by(d, f'#dag rect.node[data-task="{task}"]')[0].get_attribute("data-state") == "JOB_FINISHED", 20,
              "the node to turn JOB_FINISHED")  # fmt: skip
        seen = datetime.now().astimezone()
        node = _by(driver, f'#dag rect.node[data-task="{task}"]')[0]
        assert driver.execute_script("return getComputedStyle(arguments[0]).fill", node) == GREEN
        assert driver.execute_script("return window.notReloaded === true")  # the same page, updated in place
        wait_in_page(driver, lambda d: _by(d, f'#tasks tr[data-task="{task}"]')[0].get_attribute("data-state") == "JOB_FINISHED", 5, "the row")
        wait_in_page(driver, lambda d: d.find_element("id", "wf-status").text == "finished", 5, "the workflow's status")
        screenshot(driver, tmp_path, "after-finish")
    with web.http("owner") as owner:
        finished = next(e for e in owner.get(f"/api/tasks/{task}").json()["events"] if e["to"] == "JOB_FINISHED")
    lag = (seen - datetime.fromisoformat(finished["at"].replace("Z", "+00:00"))).total_seconds()
    print(f"\nthe finish was recorded at the coordinator and seen in the browser {lag:.3f} s later (polled every 50 ms)")
    assert lag < 1.0


def test_the_live_feed_brings_a_new_workflow_to_the_overview(web, tmp_path):
    with chromium() as driver:
        sign_in(driver, web.base, web.tokens["victor"])
        wait_in_page(driver, lambda d: d.find_element("id", "live").text == "live", 10, "the live feed to connect")
        driver.execute_script("window.notReloaded = true")
        workflow = web.submit({"name": "arrives", "tasks": [{"name": "a", "app": "run"}]}, project="p")
        hidden = web.submit({"name": "other-project", "tasks": [{"name": "a", "app": "run"}]}, project="q")
        started = time.monotonic()
        wait_in_page(driver, lambda d: _by(d, f'#workflows tr[data-workflow="{workflow}"]'), 5, "the new workflow on the overview")
        print(f"\nthe new workflow appeared on the overview {time.monotonic() - started:.3f} s after its submission returned")
        assert driver.execute_script("return window.notReloaded === true")
        assert not _by(driver, f'#workflows tr[data-workflow="{hidden}"]')  # another project's: never shown
        screenshot(driver, tmp_path, "overview-live")


def test_a_viewer_gets_no_buttons_and_cannot_kill(web, tmp_path):
    workflow = web.submit({"name": "guarded", "tasks": [{"name": "a", "app": "run"}, {"name": "b", "app": "run", "parents": ["a"]}]}, project="p")
    with chromium() as driver:
        sign_in(driver, web.base, web.tokens["victor"], f"/tasks/{workflow}/b")
        wait_in_page(driver, lambda d: _by(d, "#history tbody tr"), 10, "the task page")
        assert not _by(driver, "#kill") and not _by(driver, "button.danger")
        screenshot(driver, tmp_path, "viewer-task")
        driver.get(f"{web.base}/workflows/{workflow}")
        assert not _by(driver, "#cancel")
        # What the button would send, sent from the viewer's own page (its cookie and CSRF value): refused.
        reply = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0], {method: 'POST', headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf]').content}})"
            ".then(r => r.json().then(body => done([r.status, body.error])));",
            f"/api/tasks/{workflow}/b/kill",
        )
        assert reply[0] == 403 and "viewers can watch, not change" in reply[1]
    with web.http("owner") as owner:
        assert owner.get(f"/api/tasks/{workflow}/b").json()["state"] != "USER_KILLED"


def test_a_collaborator_kills_a_task_with_its_button_and_sees_it_happen(web, tmp_path):
    spec = chain("killable", 5)  # b last of five tasks of about 3 s: not ended when the button is clicked, even on a slow machine
    spec["tasks"][-1]["name"] = "b"
    workflow = web.submit(spec, project="p")
    with chromium() as driver:
        sign_in(driver, web.base, web.tokens["alice"], f"/tasks/{workflow}/b")
        wait_in_page(driver, lambda d: d.find_element("id", "live").text == "live", 10, "the live feed to connect")
        kill = driver.find_element("id", "kill")
        kill.click()
        assert "Really" in kill.text  # a second click confirms
        kill.click()
        wait_in_page(driver, lambda d: d.find_element("id", "task-state").get_attribute("data-state") == "USER_KILLED", 10, "the kill shown live")
        assert not _by(driver, "#kill")
        screenshot(driver, tmp_path, "killed")
    with web.http("owner") as owner:
        assert owner.get(f"/api/tasks/{workflow}/b").json()["state"] == "USER_KILLED"


def test_an_unauthenticated_visit_is_sent_to_sign_in_and_shown_nothing(web, tmp_path):
    workflow = web.submit(chain("secret-name", 1), project="p")
    with chromium() as driver:
        driver.get(f"{web.base}/workflows/{workflow}")
        assert driver.current_url.startswith(f"{web.base}/signin?next=/workflows/{workflow}")
        assert "secret-name" not in driver.page_source
        sign_in(driver, web.base, "argo-u-not-a-token", f"/workflows/{workflow}")
        assert "unknown or revoked token" in driver.find_element("id", "signin-error").text
        screenshot(driver, tmp_path, "signin-refused")
        sign_in(driver, web.base, web.tokens["mallory"], f"/workflows/{workflow}")  # a user of another project
        assert "may not see this workflow" in driver.find_element("id", "error").text and "secret-name" not in driver.page_source
        screenshot(driver, tmp_path, "other-project")
