"""The README's main command: `balsam demo` on embedded defaults, as a separate process."""

import json
import os
import subprocess

from balsam.site.postgres import EmbeddedPostgres
from balsam.site.settings import SiteSettings
from conftest import balsam_script


def test_demo_makes_a_site_with_a_workflow_and_leaves_no_server_running(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_SITE"}
    demo = subprocess.run([balsam_script(), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    path = tmp_path / "balsam-demo-site"
    assert f"export BALSAM_SITE={path}" in demo.stdout
    settings = SiteSettings.load(path)
    assert not EmbeddedPostgres(settings).is_running()

    env["BALSAM_SITE"] = str(path)
    try:
        listing = subprocess.run([balsam_script(), "job", "ls", "-w", "demo", "--json"], env=env,
                                 capture_output=True, text=True, check=True)  # fmt: skip
        jobs = {j["name"]: j for j in json.loads(listing.stdout)["jobs"]}
        assert jobs["hello"]["params"]["who"] == "world; rm -rf ~"
        assert [jobs[n]["state"] for n in ("hello", "goodbye", "merge", "count")] == ["JOB_FINISHED"] * 4
        sweep = subprocess.run([balsam_script(), "job", "ls", "-w", "sweep", "--json", "--limit", "1"], env=env,
                               capture_output=True, text=True, check=True)  # fmt: skip
        assert json.loads(sweep.stdout)["counts"] == {"JOB_FINISHED": 1000}
        merged = (path / "data" / "demo" / str(jobs["merge"]["id"]) / "job.out").read_text()
        assert merged == "Hello, world; rm -rf ~\nHello, Argo\n"
    finally:
        EmbeddedPostgres(settings).stop()
    # a second run beside the first makes a new site rather than touching it
    again = subprocess.run([balsam_script(), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and (tmp_path / "balsam-demo-site-2").is_dir()
