"""bench/web_speed.py at its --smoke size, so that the benchmark cannot rot: it runs end to end (a
coordinator, a real chromium, the feed beside the raw Watch stream) and prints every figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from web_helpers import REQUIRE_BROWSER, browser_missing

pytestmark = pytest.mark.timeout(600)
BENCH = Path(__file__).resolve().parent.parent / "bench" / "web_speed.py"


def test_the_web_speed_bench_runs_and_prints_its_figures():
    import os

    missing = browser_missing()
    if missing:
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(f"{REQUIRE_BROWSER}=1 but {missing}")
        pytest.skip(missing)
    run = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    print(out)
    fcp = re.search(r"workflow page, first contentful paint\s+median\s+([0-9.]+) s", out)
    assert fcp and float(fcp.group(1)) > 0, out  # a number, measured by the browser: not nan
    assert re.search(r"baseline: sign-in page \(no data\), its FCP\s+median\s+[0-9.]+ s", out), out
    for reader in ("dashboard feed \\(SSE\\)", "baseline: gRPC Watch"):
        line = re.search(reader + r"\s+median\s+([0-9,]+) events/s.*events received ([0-9,]+)\.\.([0-9,]+) of ([0-9,]+)", out)
        assert line, out
        # every event of the run reached both readers (the feed also sends the workflow's own end)
        assert int(line.group(2).replace(",", "")) >= int(line.group(4).replace(",", "")), line.group(0)
    stored = re.search(r"baseline: the coordinator stored them\s+median\s+([0-9,]+) events/s", out)
    assert stored and int(stored.group(1).replace(",", "")) > 0, out
    replays = re.findall(r"^  (?:dashboard feed \(SSE\)|baseline: gRPC Watch)\s+median\s+([0-9,]+) events/s   \(from the request", out, re.M)
    assert len(replays) == 2 and all(int(r.replace(",", "")) > 0 for r in replays), out  # each reader's own ceiling, measured
