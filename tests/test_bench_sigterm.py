"""bench/sigterm.py: a benchmark ended by SIGTERM runs its cleanup to the end, however many come."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

SCRIPT = f"""
import os, signal, sys, time
sys.path.insert(0, {str(BENCH)!r})
from sigterm import stop_on_sigterm
stop_on_sigterm()
try:
    print("running", flush=True)
    time.sleep(60)
finally:
    os.kill(os.getpid(), signal.SIGTERM)  # a second one, as `timeout` passes on the one pkill sent it
    time.sleep(0.5)
    print("cleaned up", flush=True)
"""


def test_a_second_sigterm_does_not_cut_the_cleanup_short():
    bench = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    assert bench.stdout.readline().strip() == "running"
    bench.send_signal(signal.SIGTERM)
    out, _ = bench.communicate(timeout=30)
    assert out.strip() == "cleaned up", "the second SIGTERM ended the cleanup"
    assert bench.returncode == 128 + signal.SIGTERM
