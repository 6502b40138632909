"""The cyclic garbage collector: held off while a bulk request builds its many small objects
(``paused_gc``), and set for a long-running server once it has started (``settle_for_serving``).

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


# A server's young objects are collected every this many allocations (Python's default: 700).
SERVING_THRESHOLD = 20_000


def settle_for_serving() -> None:
    """For a long-running server, once it has started: what starting made (modules, classes,
    settings; about 100,000 objects for the Argo server) is frozen out of every collection, and the
    young objects are collected every ``SERVING_THRESHOLD`` allocations instead of every 700.

    Measured in the Argo server under ``bench/federation_scale.py`` (10 sites, 30,000 tasks): with
    Python's defaults, 19 full collections of 200,000-270,000 objects took 2.3 s, up to 231 ms each,
    while every thread waited (a unary call's p99 is such a pause); young objects mostly die before
    the next collection at the larger threshold, so few reach the old generation: 0.7 s in all,
    no full collection, 43 ms at most."""
    gc.freeze()
    gc.set_threshold(SERVING_THRESHOLD, *gc.get_threshold()[1:])
