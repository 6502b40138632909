"""A benchmark ended by SIGTERM (pkill, a timeout) stops what it started, as it does after Ctrl-C.

Python's default for SIGTERM ends the process at once, past its ``finally`` blocks: an interrupted
benchmark left its coordinator, its site agents and their databases running, and the runs after it
measured beside them (found by their CPU, half an hour later). A SIGTERM that comes while a service is
being started (before its ``try``) still leaves it running. Only the first SIGTERM counts: a second one
(``timeout`` passes on the one ``pkill`` sent it too) once ended the ``finally`` blocks half way, and
left a coordinator and its database running.
"""

from __future__ import annotations

import signal
import sys


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises SystemExit in the main thread: the ``finally`` blocks stop what was started."""
    def stop(signum: int, _frame) -> None:
        # The cleanup that follows is not cut short by another. (A handler, not SIG_IGN: a process the
        # cleanup starts would inherit an ignored SIGTERM, and a handler is reset in it.)
        signal.signal(signal.SIGTERM, lambda *_: None)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
