"""The same lease-table cases against both stores: `LeaseTable` on moto (which evaluates the
condition expressions as DynamoDB does) and streamsync.testing's `InMemoryLeases`. Each case
runs on both and they must agree, write for write: the in-memory store is what the fast unit
tests of the coordinator and readers trust, so it may not drift from the real conditions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiobotocore.credentials import AioCredentials

from streamsync.awsjson import AwsJsonClient
from streamsync.leases.heartbeats import Glance, Heartbeats
from streamsync.leases.model import LATEST, SHARD_END, Lease
from streamsync.leases.ports import HeartbeatStore, LeaseStore
from streamsync.leases.requests import LeaseLost
from streamsync.leases.table import LeaseTable
from streamsync.testing import InMemoryLeases
from tests.support import aws

Stores = tuple[LeaseStore, HeartbeatStore]


@pytest.fixture(params=["dynamodb", "memory"])
async def stores(request: pytest.FixtureRequest, moto_endpoint: str) -> AsyncIterator[Stores]:
    if request.param == "memory":
        memory = InMemoryLeases()
        yield memory, memory.heartbeats
        return
    name = aws.unique_name("leases")
    async with aiohttp.ClientSession() as http:
        client = AwsJsonClient(
            moto_endpoint, aws.REGION, AioCredentials("testing", "testing"), http
        )
        table = LeaseTable(client, name)
        await table.ensure_exists()
        yield table, Heartbeats(client, name)


def fresh(shard: str = "shardId-1") -> Lease:
    return Lease(stream_arn="arn:stream", shard_id=shard, table="t")


async def refused(write: Callable[[], Awaitable[object]]) -> bool:
    try:
        await write()
    except LeaseLost:
        return True
    return False


async def test_a_lease_is_created_once(stores: Stores) -> None:
    leases, _ = stores
    assert await leases.create(fresh())
    assert not await leases.create(fresh())
    (only,) = (await leases.scan()).leases
    assert only == fresh()


async def test_every_write_is_fenced_on_what_its_writer_saw(stores: Stores) -> None:
    leases, _ = stores
    await leases.create(fresh())
    mine = await leases.take(fresh(), "w1", "index-a")
    assert (mine.owner, mine.counter, mine.index) == ("w1", 1, "index-a")
    renewed = await leases.renew(mine, 1.5)
    assert await refused(lambda: leases.renew(mine)), "a write from a stale view"
    theirs = await leases.take(renewed, "w2")
    assert theirs.owner_switches == 2, "from nobody to w1, from w1 to w2"
    for write in (
        lambda: leases.renew(renewed),
        lambda: leases.checkpoint(renewed, "100", 3),
        lambda: leases.hold_version_floor(renewed, 9),
        lambda: leases.release(renewed),
        lambda: leases.finish(renewed, 3),
        lambda: leases.fail(renewed, "lost"),
    ):
        assert await refused(write), "w1 lost the lease to w2"
    checkpointed = await leases.checkpoint(theirs, "100", 3)
    (row,) = (await leases.scan()).leases
    assert row == checkpointed
    assert (row.checkpoint, row.checkpoint_version, row.owner_switches) == ("100", 3, 0)


async def test_a_finished_lease_is_never_checkpointed_again(stores: Stores) -> None:
    leases, _ = stores
    await leases.create(fresh())
    finished = await leases.finish(await leases.take(fresh(), "w1"), 42)
    assert finished.owner is None
    assert await refused(lambda: leases.checkpoint(finished, "12345", 43))
    taken = await leases.take(finished, "w2")
    assert await refused(lambda: leases.checkpoint(taken, "12345", 43))
    assert await refused(lambda: leases.finish(taken, 44))
    (row,) = (await leases.scan()).leases
    assert (row.checkpoint, row.checkpoint_version) == (SHARD_END, 42)


async def test_release_fail_take_and_delete(stores: Stores) -> None:
    leases, _ = stores
    await leases.create(fresh())
    await leases.create(Lease("arn:stream", "shardId-2", "t", checkpoint=LATEST))
    released = await leases.release(await leases.take(fresh(), "w1"))
    assert released.owner is None
    failed = await leases.fail(await leases.take(released, "w2"), "records lost")
    assert (failed.owner, failed.failure) == (None, "records lost")
    retaken = await leases.take(failed, "w3")
    assert retaken.failure is None, "a take clears the failure"
    latest = await leases.take(Lease("arn:stream", "shardId-2", "t", checkpoint=LATEST), "w1")
    assert latest.checkpoint == "TRIM_HORIZON"
    assert latest.start_after is not None, "a LATEST start made durable"
    assert await refused(lambda: leases.delete(failed)), "deleted only as last seen"
    await leases.delete(retaken)
    rows = {lease.shard_id: lease for lease in (await leases.scan()).leases}
    assert set(rows) == {"shardId-2"}
    assert rows["shardId-2"] == latest


async def test_heartbeats_count_up_and_are_deleted_only_as_seen(stores: Stores) -> None:
    leases, heartbeats = stores
    await heartbeats.beat("w1", ["arn:b", "arn:a"])
    (first,) = (await leases.scan()).workers
    assert (first.worker_id, first.counter, first.streams) == ("w1", 1, {"arn:a", "arn:b"})
    await heartbeats.beat("w1", ["arn:a"])
    await heartbeats.delete(first)  # it beat again since: kept
    (second,) = (await leases.scan()).workers
    assert (second.counter, second.streams) == (2, {"arn:a"})
    await heartbeats.delete(second)
    assert (await leases.scan()).workers == []
    await heartbeats.beat("w2", ["arn:a"])
    await heartbeats.remove("w2")
    assert (await leases.scan()).workers == []


async def test_the_roster_counts_joins_leaves_and_lease_changes(stores: Stores) -> None:
    """What a glance shows: who joined (and has not left), and a count that moves with every
    change that should make the others scan (not with checkpoints or a beat like the last)."""
    leases, heartbeats = stores
    assert await heartbeats.glance(["w1"]) == Glance(frozenset(), 0, []), "nothing yet"
    await heartbeats.beat("w1", ["arn:stream"])
    joined = await heartbeats.glance(["w1", "w2"])
    assert (joined.members, [b.worker_id for b in joined.beats]) == ({"w1"}, ["w1"])
    assert joined.changes >= 1

    async def counted(change: Callable[[], Awaitable[object]]) -> int:
        """How far the count moved: LeaseTable tells the roster in the background, at most
        once a second, so this waits up to two seconds for it to move."""
        before = (await heartbeats.glance([])).changes
        await change()
        for _ in range(20):
            if (await heartbeats.glance([])).changes != before:
                break
            await asyncio.sleep(0.1)
        return (await heartbeats.glance([])).changes - before

    assert await counted(lambda: heartbeats.beat("w1", ["arn:stream"])) == 0
    assert await counted(lambda: heartbeats.beat("w1", ["arn:stream", "arn:more"])) == 1
    assert await counted(lambda: leases.create(fresh())) == 1
    assert await counted(lambda: leases.create(fresh())) == 0, "it existed: nothing changed"
    took: list[Lease] = []

    async def take() -> None:
        took.append(await leases.take(fresh(), "w1"))

    assert await counted(take) == 1
    assert await counted(lambda: leases.checkpoint(took[0], "100", 1)) == 0
    checkpointed = (await leases.scan()).leases[0]
    assert await counted(lambda: leases.release(checkpointed)) == 1
    assert await counted(lambda: heartbeats.beat("w2", ["arn:stream"])) == 1, "w2 joins"
    (w2,) = (await heartbeats.glance(["w2"])).beats
    await heartbeats.beat("w2", ["arn:stream"])
    await heartbeats.delete(w2)  # it beat since: kept, and still in the roster
    assert (await heartbeats.glance([])).members == {"w1", "w2"}
    (w2,) = (await heartbeats.glance(["w2"])).beats
    assert await counted(lambda: heartbeats.delete(w2)) == 1
    assert await counted(lambda: heartbeats.remove("w1")) == 1
    left = await heartbeats.glance(["w1", "w2"])
    assert (left.members, left.beats) == (frozenset(), [])
