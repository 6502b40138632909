"""Starting real launcher processes against a test site, and waiting on the database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import balsam_script

from balsam.site.api import Site


def launcher_env(site: Site, **extra: str) -> dict[str, str]:
    # The venv's bin first, so jobs find `python` and `mpirun` of this install.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "BALSAM_SITE": str(site.settings.path), "PATH": path, **extra}


def start_launcher(site: Site, *args: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [balsam_script(), "launcher", *args], env=launcher_env(site), stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip


def run_launcher(site: Site, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [balsam_script(), "launcher", *args], env=launcher_env(site), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

