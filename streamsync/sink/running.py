"""A bulk indexer's lanes for the length of one command.

Everything that writes (run, backfill, verify --repair) needs the same ending: a checkpoint or a
backfill segment only ever covers acknowledged actions, so the lanes must get to send what was
put before the command returns, yet a cluster that stopped answering must not hold a stop past
its grace. And while the command waits for acknowledgements, the lanes must not have ended (they
end only once closed): that wait would never end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

from streamsync.sink.bulk import BulkIndexer
from streamsync.supervise import spawn

T = TypeVar("T")

log = logging.getLogger("streamsync")


class Lanes:
    """The lanes of a bulk indexer while `running` runs them."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    @property
    def ended(self) -> bool:
        return self._task.done()

    async def until(self, work: Awaitable[T]) -> T:
        """Awaits `work`; should the lanes end first, cancels it and raises why they ended,
        since whatever `work` waits to be acknowledged never will be."""
        main = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({main, self._task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            main.cancel()  # as an `await work` would be
            raise
        if main not in done:
            main.cancel()
            error = self._task.exception()
            raise error if error is not None else RuntimeError("the bulk indexer stopped early")
        return main.result()


@asynccontextmanager
async def running(
    indexer: BulkIndexer, *, stopping: asyncio.Event, grace: float, worker: str
) -> AsyncIterator[Lanes]:
    """Runs `indexer`'s lanes (a supervised task) for the block. Leaving it normally closes
    them once they have sent what was put, within what is left of `grace` seconds since
    `stopping` was set (at least a second: a command that drained first loses nothing to the
    bound); leaving it with an error, or past the bound, cancels them, and what they had not
    sent was never acknowledged."""
    loop = asyncio.get_running_loop()
    asked: list[float] = []
    stop_asked = asyncio.ensure_future(stopping.wait())
    stop_asked.add_done_callback(lambda _: asked.append(loop.time()))
    lanes = spawn(indexer.run(), "bulk_indexer", ends=True, name="bulk indexer")
    try:
        yield Lanes(lanes)
        left = asked[0] + grace - loop.time() if asked else 0.0
        try:
            async with asyncio.timeout(max(left, 1.0)):
                await indexer.close()
                await lanes
        except TimeoutError:
            log.warning(
                "stopping: the cluster did not take the last bulk requests within "
                "shutdown_grace_seconds (%s s); they were not acknowledged, so no checkpoint "
                "covers them and the next owner of their shards reads them again",
                grace,
                extra={"worker": worker, "unsent_actions": indexer.outstanding},
            )
    finally:
        stop_asked.cancel()
        lanes.cancel()
        await asyncio.wait([lanes], timeout=1)
