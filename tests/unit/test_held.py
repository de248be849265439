"""HeldLease: what may and may not be written once a lease's last write was asked for, and how
fast a lease gone stale refuses. The lease table is a fake recording each write in the order it
reaches "DynamoDB" (each write can be held up by an event, as a slow or black-holed request
would be), since what matters is the order and the existence of writes, not DynamoDB itself
(the conditions on the real table are tested in tests/integration/test_robustness.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, cast

import pytest

from streamsync.leases.held import HeldLease
from streamsync.leases.model import SHARD_END, Lease, Position
from streamsync.leases.table import LeaseTable


class FakeTable:
    """Records the writes that land; `hold[name]` (an event) holds a kind of write until set."""

    def __init__(self) -> None:
        self.landed: list[str] = []
        self.sent: list[str] = []
        self.hold: dict[str, asyncio.Event] = {}

    async def _land(self, name: str, lease: Lease, **changes: Any) -> Lease:
        self.sent.append(name)
        if name in self.hold:
            await self.hold[name].wait()
        self.landed.append(name)
        return replace(lease, counter=lease.counter + 1, **changes)

    async def renew(self, held: Lease, iterator_age: float = 0.0) -> Lease:
        return await self._land("renew", held)

    async def checkpoint(
        self, held: Lease, checkpoint: str, version: int, iterator_age: float = 0.0
    ) -> Lease:
        return await self._land("checkpoint", held, checkpoint=checkpoint)

    async def finish(self, held: Lease, version: int) -> Lease:
        return await self._land("finish", held, owner=None, checkpoint=SHARD_END)

    async def fail(self, held: Lease, reason: str) -> Lease:
        return await self._land("fail", held, owner=None, failure=reason)

    async def release(self, held: Lease) -> Lease:
        return await self._land("release", held, owner=None)


def held_lease(table: FakeTable, failover: float = 60) -> HeldLease:
    lease = Lease(stream_arn="arn:stream", shard_id="shardId-1", table="t", owner="w1", counter=3)
    return HeldLease(cast(LeaseTable, table), lease, failover)


async def test_nothing_is_written_after_a_final_write_whose_caller_was_cancelled() -> None:
    """A poller cancelled while its shard's end is being written (the grace period ends) used to
    checkpoint and release from its CancelledError handler: the checkpoint landed after the
    finish and replaced SHARD_END (the shard was read again). The finish is held up here by an
    event, as a slow request would be, and its caller cancelled."""
    table = FakeTable()
    table.hold["finish"] = asyncio.Event()
    held = held_lease(table)
    finishing = asyncio.create_task(held.finish(7))
    await asyncio.sleep(0.01)
    assert table.sent == ["finish"]
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    checkpoint = asyncio.create_task(held.checkpoint(Position(12345, 9)))
    release = asyncio.create_task(held.release())
    renewal = asyncio.create_task(held.renew())
    table.hold["finish"].set()  # the finish lands after all
    assert await checkpoint is False
    assert await release is False
    assert await renewal is False
    await asyncio.sleep(0.01)
    assert table.landed == ["finish"], "no write followed the shard's end"
    assert held.lease.checkpoint == SHARD_END


async def test_a_write_asked_for_before_the_final_one_lands_before_it() -> None:
    table = FakeTable()
    table.hold["checkpoint"] = asyncio.Event()
    held = held_lease(table)
    checkpoint = asyncio.create_task(held.checkpoint(Position(100, 1)))
    await asyncio.sleep(0.01)
    release = asyncio.create_task(held.release())
    await asyncio.sleep(0.01)
    table.hold["checkpoint"].set()
    assert await checkpoint is True
    assert await release is True
    assert table.landed == ["checkpoint", "release"]
    assert await held.checkpoint(Position(200, 2)) is False
    assert await held.finish(3) is False, "a second last write is refused too"
    assert table.landed == ["checkpoint", "release"]


async def test_a_stale_lease_refuses_at_once_instead_of_queueing_behind_a_stuck_write() -> None:
    """A renewal hangs (a black-holed connection holds the lease's lock for a whole request
    timeout); once the lease went a failover time without a write, a checkpoint or release must
    be refused at once, so the reader being stopped ends now and its lease can be taken again,
    instead of waiting for the stuck request."""
    table = FakeTable()
    table.hold["renew"] = asyncio.Event()
    held = held_lease(table, failover=0.2)
    renewal = asyncio.create_task(held.renew())
    await asyncio.sleep(0.3)
    assert not held.usable
    async with asyncio.timeout(0.1):
        assert await held.checkpoint(Position(1, 1)) is False
        assert await held.release() is False
    assert held.writing, "the renewal is still in flight (the renewer skips such a lease)"
    table.hold["renew"].set()
    await renewal
    assert not held.writing
    assert table.landed == ["renew"]
