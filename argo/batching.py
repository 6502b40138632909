"""Work of many sites' sync streams done together: one transaction for many sites' heartbeats
(``SyncEndpoint.heartbeats``), and one for many sites' envelopes of events and acknowledgements
(``SyncEndpoint.answer_many``).

Each stream hands its item here and awaits its answer. A batch is what waits when a writer starts
(after ``gather_s``, for heartbeats), up to ``max_weight``; at most ``writers`` batches are written
at once, in the pool, and what arrives meanwhile is the next batch. A hundred sites beating each
second cost ten transactions a second instead of a hundred, and a hundred sites' small batches of
events one wait for the workflows' locks instead of a hundred in a row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

# A lease lasts a minute (coordinator.lease_s) and is counted at the site from when it sent the
# heartbeat: a tenth of a second more before the grant shortens nothing that matters. Without the
# wait, heartbeats spread over the second each found the writer idle and went alone (measured: 1.8
# heartbeats a batch for 30 sites beating 5 times a second).
HEARTBEAT_GATHER_S = 0.1

Run = Callable[..., Any]  # runs a blocking call in the pool: rpc.Call.run


class Batcher:
    """Only the server's event loop touches it (no lock).

    ``write(items)`` answers each item: a result, an exception for that item alone, or None for one
    to be done by ``apart(*item)`` on its own (a row another transaction holds), without holding up
    the next batch."""

    def __init__(self, write: Callable[[Sequence[tuple]], list[Any]], apart: Callable[..., Any] | None = None, writers: int = 1,
                 gather_s: float = 0.0, weight: Callable[[tuple], int] = lambda item: 1, max_weight: int = 1_000_000) -> None:  # fmt: skip
        self.write, self.apart, self.writers, self.gather_s = write, apart, max(1, writers), gather_s
        self.weight, self.max_weight = weight, max_weight
        self._waiting: list[tuple[tuple, asyncio.Future]] = []
        self._running: set[asyncio.Task] = set()  # the writers
        self._apart: set[asyncio.Task] = set()

    async def answer(self, item: tuple, run: Run) -> Any:
        """``item``'s answer once its batch is written; raises what refused it."""
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        # A writer that found nothing more has returned (done) before any other coroutine runs, though
        # its removal from ``_running`` comes later, in a callback.
        if sum(1 for writer in self._running if not writer.done()) < self.writers:
            self._start(self._write_all(run))
        return await answer

    def _start(self, work) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _take(self) -> list[tuple[tuple, asyncio.Future]]:
        taken, weight = 0, 0
        for item, _ in self._waiting:
            weight += self.weight(item)
            if taken and weight > self.max_weight:
                break
            taken += 1
        batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return batch

    async def _write_all(self, run: Run) -> None:
        # ``run`` is the call of the stream that started this writer; it only reaches the pool, which
        # every stream shares, so a writer outliving that stream is no matter.
        while self._waiting:
            if self.gather_s:
                await asyncio.sleep(self.gather_s)
            batch = self._take()
            if not batch:
                continue
            try:
                results = await run(self.write, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 (the database is unreachable: each stream ends with it)
                results = [exc] * len(batch)
            for (item, answer), result in zip(batch, results):
                if result is None and self.apart is not None:
                    self._running_apart(run, item, answer)
                else:
                    _answer(answer, result)

    def _running_apart(self, run: Run, item: tuple, answer: asyncio.Future) -> None:
        async def alone() -> None:
            try:
                result = await run(self.apart, *item)
            except Exception as exc:  # noqa: BLE001 (NotFound for a site removed meanwhile, as alone before)
                result = exc
            _answer(answer, result)

        task = asyncio.create_task(alone())
        self._apart.add(task)  # the loop holds its tasks weakly: referenced here until done
        task.add_done_callback(self._apart.discard)


def _answer(answer: asyncio.Future, result: Any) -> None:
    if answer.done():  # its stream ended meanwhile
        return
    if isinstance(result, BaseException):
        answer.set_exception(result)
    else:
        answer.set_result(result)
