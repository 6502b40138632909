"""The Python API page's example runs as written and prints what the page shows."""

import os
import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_api_example_runs_and_prints_what_the_page_shows(tmp_path):
    script = DOCS / "examples" / "site_api_example.py"
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_SITE"}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    page = (DOCS / "python-api.md").read_text()
    assert script.read_text().strip() in page, "docs/python-api.md must show the example file as it is"
    # Every line the example printed appears in the page's output block, except the temporary path.
    for line in run.stdout.splitlines():
        if line.strip() and not re.search(r"/tmp/|tmp\w{6,}", line):
            assert line in page, f"the page does not show this output line: {line!r}"
