"""The cyclic garbage collector held off while a bulk request builds its many small objects.

A request of 100,000 jobs makes about a million dicts, lists and specs, none of them in a cycle.
The collector runs every 700 new objects and walks the young ones, and every tenth run the older
ones too: about a third of the time spent checking a request went to it. Reference counting still
frees everything as usual; only the search for cycles waits until the request is done.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic collection inside the block (nested blocks leave it to the outermost)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
