"""What the transfer service does next, as pure functions over plain data (no I/O, no clock).

- ``batches``: pending files grouped into transfer tasks, one per (backend, direction, source
  collection, destination collection), oldest first, at most ``max_items`` each and no more tasks
  than there are free transfer slots. Files of many jobs that go the same way share a task:
  one Globus task for a thousand files costs one submission and one poll, not a thousand.
- ``after_attempt``: where a file goes after its task ended badly for it: tried again after a
  delay that doubles each time, or failed for good once its retries are used.
- ``job_outcome``: whether a job's files are all there, one failed, or some are still moving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PendingItem:
    id: int
    backend: str
    direction: str  # in | out
    source_endpoint: str  # "" for a local location
    dest_endpoint: str
    order: int = 0  # smaller first: the id of the item, or when it became due


@dataclass(frozen=True)
class Batch:
    backend: str
    direction: str
    source_endpoint: str
    dest_endpoint: str
    item_ids: tuple[int, ...]


def batches(pending: Sequence[PendingItem], free_slots: int, max_items: int) -> list[Batch]:
    """Transfer tasks to submit now; the group with the oldest waiting file goes first."""
    if free_slots <= 0 or max_items <= 0:
        return []
    groups: dict[tuple[str, str, str, str], list[PendingItem]] = {}
    for item in sorted(pending, key=lambda i: (i.order, i.id)):
        groups.setdefault((item.backend, item.direction, item.source_endpoint, item.dest_endpoint), []).append(item)
    chunks = []
    for key, items in groups.items():
        for start in range(0, len(items), max_items):
            chunk = items[start : start + max_items]
            chunks.append((chunk[0].order, chunk[0].id, key, chunk))
    chunks.sort(key=lambda c: (c[0], c[1]))
    return [Batch(*key, item_ids=tuple(i.id for i in chunk)) for _, _, key, chunk in chunks[:free_slots]]


@dataclass(frozen=True)
class Retry:
    state: str  # "pending" (tried again after delay_s) | "failed" (for good)
    attempts: int
    delay_s: float = 0.0


def after_attempt(attempts_before: int, retries: int, retry_delay_s: float, fatal: bool = False) -> Retry:
    """A file's next state after a failed attempt: ``retries`` more tries, each delay twice the last."""
    attempts = attempts_before + 1
    if fatal or attempts > retries:
        return Retry("failed", attempts)
    return Retry("pending", attempts, retry_delay_s * 2 ** (attempts - 1))


def job_outcome(states: Sequence[str]) -> str:
    """"waiting" while any file is pending or moving; then "failed" if one failed, else "done"."""
    if any(state in ("pending", "active") for state in states):
        return "waiting"
    return "failed" if "failed" in states else "done"
