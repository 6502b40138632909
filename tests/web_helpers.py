"""The dashboard for tests: a real coordinator process serving it, a simulated site speaking the real
sync protocol (bench/simsite.py: its tasks run for ``run_s`` and finish), users of each role, and a
real browser (Debian's chromium through chromedriver, driven by selenium)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from argo_helpers import Federation, wait_for

from balsam.argo.client import ArgoClient
from balsam.postgres import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from simsite import SimulatedSite, site_token  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REQUIRE_BROWSER = "BALSAM_REQUIRE_BROWSER"


class WebFederation:
    """A coordinator with its dashboard on ``base``, one simulated site ``sim`` and users:
    ``tokens['owner']``, ``tokens['alice']`` (collaborator of project p), ``tokens['victor']``
    (viewer of p), ``tokens['mallory']`` (collaborator of project q)."""

    def __init__(self, root: Path, run_s: float = 2.0, tls: Path | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.fed = Federation(root, site_timeout_s=3600)
        self.web_port = free_port()
        self.ca = str(tls / "ca.pem") if tls else None
        self.fed.start_server("--web", f"127.0.0.1:{self.web_port}", *(("--tls-dir", str(tls)) if tls else ()))
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.web_port}"
        self.site = None
        if not tls:  # the simulated site speaks plain text only
            enrolment = self.fed.argo("site", "enrol", "sim", "--data", str(self.fed.data)).stdout.strip()
            self.site = SimulatedSite(self.fed.address, "sim", site_token(self.fed.address, enrolment, "sim"), heartbeat_s=0.5, run_s=run_s)
            self.site.start()
        self.tokens = {"owner": self.fed.owner_token()}
        with ArgoClient(self.fed.address, ca_file=self.ca, timeout_s=30) as owner:
            for name, role, project in (("alice", "collaborator", "p"), ("victor", "viewer", "p"), ("mallory", "collaborator", "q")):
                self.tokens[name] = owner.add_user(name, role, [project])["token"]

    def submit(self, spec: dict, project: str = "p") -> int:
        with self.fed.client() as owner:
            return owner.submit(spec, project=project)

    def http(self, who: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def stop(self) -> None:
        try:
            if self.site is not None:
                self.site.stop()
        finally:
            self.fed.stop()
            os.environ.pop("ARGO_TOKEN", None)


@contextmanager
def web_federation(root: Path, run_s: float = 2.0):
    """A ``WebFederation`` for the length of the block, stopped whatever happens."""
    federation = WebFederation(root, run_s=run_s)
    try:
        yield federation
    finally:
        federation.stop()


def chain(name: str, length: int, app: str = "run") -> dict:
    """A workflow of ``length`` tasks, each the child of the one before."""
    tasks = [{"name": "t0", "app": app}] + [{"name": f"t{i}", "app": app, "parents": [f"t{i - 1}"]} for i in range(1, length)]
    return {"name": name, "tasks": tasks}


def browser_missing() -> str:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is not installed (Debian: apt-get install chromium chromium-driver)"
    return ""


@contextmanager
def chromium(window: str = "1400,1000"):
    """A headless chromium from Debian, driven through its chromedriver, in a profile of its own."""
    missing = browser_missing()
    if missing:
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(f"{REQUIRE_BROWSER}=1 but {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 f"--window-size={window}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def sign_in(driver, base: str, token: str, path: str = "/") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(f"{base}/signin?next={path}")
    driver.find_element(By.ID, "token").send_keys(token)
    button = driver.find_element(By.ID, "signin")
    button.click()
    # The form posts and the answer is a new document (the page asked for, or the sign-in page again with
    # its error): wait until this one is gone, so what the caller looks for next is on the answer.
    WebDriverWait(driver, 20).until(expected_conditions.staleness_of(button))


def screenshot(driver, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def wait_in_page(driver, condition, timeout_s: float, what: str):
    """Wait until ``condition(driver)`` holds (its value), reading the page again while it changes."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def holds():
        try:
            return condition(driver)
        # The page redrew the element while we read it, or the next page has not loaded yet (a sign-in's
        # redirect still on its way, so the element is not there): look again.
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    return wait_for(holds, timeout_s, what, interval_s=0.05)
