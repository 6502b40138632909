"""The heartbeats of every site's sync stream, recorded together (``SyncEndpoint.heartbeats``).

Each stream hands its heartbeats here and awaits its lease. A batch is what arrived within
``GATHER_S`` of its first heartbeat, and what arrived while the one before was written; one is
written at a time, in the pool. So a hundred sites beating each second cost ten transactions a second
instead of a hundred. A site whose row another transaction holds is recorded alone
(``SyncEndpoint.heartbeat``), so that the next batch does not wait for that row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from balsam.protos import argo_pb2 as pb

# A lease lasts a minute (coordinator.lease_s) and is counted at the site from when it sent the
# heartbeat: a tenth of a second more before the grant shortens nothing that matters. Without the
# wait, heartbeats spread over the second each found the writer idle and went alone (measured: 1.8
# heartbeats a batch for 30 sites beating 5 times a second).
GATHER_S = 0.1

Write = Callable[[Sequence[tuple[str, pb.Heartbeat]]], list[Any]]  # SyncEndpoint.heartbeats
WriteOne = Callable[[str, pb.Heartbeat], pb.LeaseGrant]  # SyncEndpoint.heartbeat
Run = Callable[..., Any]  # runs a blocking call in the pool: rpc.Call.run


class HeartbeatBatcher:
    """Only the server's event loop touches it (no lock)."""

    def __init__(self, write: Write, write_one: WriteOne) -> None:
        self.write, self.write_one = write, write_one
        self._waiting: list[tuple[str, pb.Heartbeat, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None
        self._apart: set[asyncio.Task] = set()

    async def lease(self, site: str, heartbeat: pb.Heartbeat, run: Run) -> pb.LeaseGrant:
        """The lease answering ``heartbeat``, once it is recorded; raises what refused it."""
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((site, heartbeat, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(run), name="heartbeats")
        return await answer

    async def _write_all(self, run: Run) -> None:
        # ``run`` is the call of the stream that started this writer; it only reaches the pool, which
        # every stream shares, so a writer outliving that stream is no matter.
        while self._waiting:
            await asyncio.sleep(GATHER_S)
            batch, self._waiting = self._waiting, []
            try:
                results = await run(self.write, [(site, beat) for site, beat, _ in batch])
            except Exception as exc:  # noqa: BLE001 (the database is unreachable: each stream ends with it)
                results = [exc] * len(batch)
            for (site, beat, answer), result in zip(batch, results):
                if result is None:  # its row was held: recorded alone, without holding up the next batch
                    task = asyncio.create_task(self._write_apart(run, site, beat, answer), name=f"heartbeat-{site}")
                    self._apart.add(task)
                    task.add_done_callback(self._apart.discard)
                else:
                    _answer(answer, result)

    async def _write_apart(self, run: Run, site: str, beat: pb.Heartbeat, answer: asyncio.Future) -> None:
        try:
            result = await run(self.write_one, site, beat)
        except Exception as exc:  # noqa: BLE001 (NotFound for a site removed meanwhile, as alone before)
            result = exc
        _answer(answer, result)


def _answer(answer: asyncio.Future, result: Any) -> None:
    if answer.done():  # its stream ended meanwhile
        return
    if isinstance(result, BaseException):
        answer.set_exception(result)
    else:
        answer.set_result(result)
