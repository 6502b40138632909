"""The README's main command: `argo demo` on embedded defaults, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

from balsam.argo.config import ServerSettings
from balsam.argo.db.engine import cluster
from balsam.argo.server import server_pid
from balsam.site.agent import agent_pid
from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings


def test_argo_demo_runs_a_workflow_across_two_sites_and_stops_everything(tmp_path):
    argo = Path(sys.executable).parent / "argo"
    demo = subprocess.run([str(argo), "demo", "--path", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "workflow 1: finished" in out
    for x in range(1, 7):
        assert f"{x} squared is {x * x}" in out
    # The report, at beta, read every square's file, those made at alpha too: its sum proves it.
    assert "read 6 of 6 square files, sum 91" in out
    moved = sum(1 for line in out.splitlines() if line.strip().startswith("square-") and line.split()[1] == "alpha")
    assert f"the report read {moved} square file(s) fetched from alpha" in out
    assert moved >= 1
    # Placement used both sites; the report ran where it was pinned.
    report = next(line for line in out.splitlines() if line.strip().startswith("report ") and "JOB_FINISHED" in line)
    assert report.split()[1] == "beta"
    squares = [line.split()[1] for line in out.splitlines() if line.strip().startswith("square-")]
    assert sorted(set(squares)) == ["alpha", "beta"]
    # Nothing is left running.
    assert server_pid(tmp_path / "argo") is None
    assert not cluster(ServerSettings.load(tmp_path / "argo")).is_running()
    for name in ("alpha", "beta"):
        settings = SiteSettings.load(tmp_path / name)
        assert agent_pid(settings) is None
        assert not EmbeddedPostgres(settings).is_running()
    # Nor any launcher: the sites' elastic queues started them, and each went with its site, not
    # later against a database that was gone.
    assert _processes_in(tmp_path) == []


def _processes_in(folder: Path) -> list[str]:
    """The processes of this host started from ``folder`` or working in it (their command lines)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if str(folder) in cmdline or Path(cwd).is_relative_to(folder):
            found.append(f"{pid}: {cmdline}")
    return found
