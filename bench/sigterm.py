"""A benchmark ended by SIGTERM (pkill, a timeout) stops what it started, as it does after Ctrl-C.

Python's default for SIGTERM ends the process at once, past its ``finally`` blocks: an interrupted
benchmark left its coordinator, its site agents and their databases running, and the runs after it
measured beside them (found by their CPU, half an hour later). A SIGTERM that comes while a service is
being started (before its ``try``) or while those blocks already run still leaves what they had not
reached.
"""

from __future__ import annotations

import signal
import sys


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises SystemExit in the main thread: the ``finally`` blocks stop what was started."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
