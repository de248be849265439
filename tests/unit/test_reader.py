"""The shard reader (ShardPoller) on a fake clock, against streamsync.testing's in-memory stream,
lease table and sink: checkpoints only behind acknowledgements, shard ends, stops, lost leases
and idle back-off, each in milliseconds of real time. looptime fast-forwards the event loop's
clock whenever every task waits, so "a failover time later" costs nothing. The same reader
against moto and a real node: tests/integration (test_engine, test_robustness, test_leases)."""

from __future__ import annotations

import asyncio

import pytest

from streamsync.leases.model import SHARD_END, lease_key
from streamsync.observability.metrics import Metrics
from streamsync.testing import InMemoryLeases, InMemorySink, InMemoryStream
from tests.support.inmemory import FAILOVER, STREAM, TABLE, indexed, start_reading, write

pytestmark = pytest.mark.looptime


def services(*, settle_at_once: bool = True) -> tuple[InMemoryStream, InMemoryLeases, InMemorySink]:
    stream = InMemoryStream()
    stream.add_shard(STREAM, "shard-1")
    return stream, InMemoryLeases(), InMemorySink(settle_at_once=settle_at_once)


async def test_a_closed_shard_is_read_to_its_end_then_finished_for_its_children() -> None:
    stream, leases, sink = services()
    for n in range(3):
        write(stream, "shard-1", f"k{n}", n=str(n))
    stream.close(STREAM, "shard-1")
    reading = await start_reading(stream, leases, sink, "shard-1")
    async with asyncio.timeout(5):
        await reading.task
    lease = leases.leases[lease_key(STREAM, "shard-1")]
    assert (lease.checkpoint, lease.owner) == (SHARD_END, None)
    assert [e.shard_id for e in reading.ended] == ["shard-1"]
    assert [indexed(sink, f"k{n}") for n in range(3)] == [
        {"pk": f"k{n}", "n": str(n)} for n in (0, 1, 2)
    ]
    assert leases.writes[-1][:2] == ("finish", lease.key), "the shard's end is the last write"


async def test_checkpoints_never_pass_what_the_sink_has_acknowledged() -> None:
    stream, leases, sink = services(settle_at_once=False)
    sequence = [write(stream, "shard-1", f"k{n}") for n in range(5)]
    reading = await start_reading(stream, leases, sink, "shard-1")
    key = lease_key(STREAM, "shard-1")
    await asyncio.sleep(3)  # three checkpoint intervals, nothing acknowledged
    assert len(sink.pending) == 5
    assert leases.leases[key].checkpoint == "TRIM_HORIZON"
    sink.settle(2)
    await asyncio.sleep(1.5)
    assert leases.leases[key].checkpoint == str(sequence[1])
    sink.settle()
    await asyncio.sleep(1.5)
    assert leases.leases[key].checkpoint == str(sequence[4])
    reading.stopping.set()
    await reading.task


async def test_a_stop_waits_for_the_acknowledgements_then_checkpoints_and_releases() -> None:
    stream, leases, sink = services(settle_at_once=False)
    last = [write(stream, "shard-1", f"k{n}") for n in range(4)][-1]
    reading = await start_reading(stream, leases, sink, "shard-1", checkpoint_interval=60)
    await asyncio.sleep(0.5)
    reading.stopping.set()
    await asyncio.sleep(20)
    assert not reading.task.done(), "a reader never leaves records unacknowledged behind it"
    sink.settle()
    async with asyncio.timeout(1):
        await reading.task
    lease = leases.leases[lease_key(STREAM, "shard-1")]
    assert (lease.checkpoint, lease.owner) == (str(last), None)
    assert [w.operation for w in leases.writes[-2:]] == ["checkpoint", "release"]


async def test_a_lease_lost_mid_batch_stops_the_reader_and_nothing_more_is_written() -> None:
    """Another worker takes the lease while the reader's actions are still in the sink; the
    checkpoint after the first acknowledgements is refused on its condition, the reader stops
    (no release: the lease is someone else's), and later acknowledgements write nothing."""
    stream, leases, sink = services(settle_at_once=False)
    for n in range(4):
        write(stream, "shard-1", f"k{n}")
    reading = await start_reading(stream, leases, sink, "shard-1")
    await asyncio.sleep(0.5)
    key = lease_key(STREAM, "shard-1")
    leases.steal(key, "w2")
    sink.settle(2)
    async with asyncio.timeout(3):
        await reading.task
    assert reading.held.lost
    written = list(leases.writes)
    sink.settle()
    await asyncio.sleep(10)
    assert leases.writes == written
    assert leases.leases[key].owner == "w2"


async def test_a_lease_not_renewed_for_a_failover_time_stops_its_reader() -> None:
    """No renewer runs here, as when renewals hang: the reader stops by its own clock once
    another worker may have taken the lease, even with nothing to checkpoint."""
    stream, leases, sink = services(settle_at_once=False)
    write(stream, "shard-1", "k0")
    reading = await start_reading(stream, leases, sink, "shard-1", renewing=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(FAILOVER + 2):
        await reading.task
    assert loop.time() - started >= FAILOVER
    assert not reading.held.usable


async def test_an_idle_shard_is_polled_less_and_less_down_to_the_pickup_bound() -> None:
    """Empty polls back off from 50 ms to one per pickup bound (2 s by default: at most 1,800
    GetRecords per idle shard-hour, counted in a metric), and a record written into the idle
    shard is still read within that bound."""
    stream, leases, sink = services()
    metrics = Metrics()
    reading = await start_reading(
        stream, leases, sink, "shard-1", checkpoint_interval=60, metrics=metrics
    )
    await asyncio.sleep(600)
    assert 300 <= stream.get_records_calls <= 310
    per_hour = metrics.value("streamsync_get_records_per_shard_hour", table=TABLE)
    assert 1800 <= per_hour <= 1860
    write(stream, "shard-1", "late")
    await asyncio.sleep(2.01)
    assert indexed(sink, "late") == {"pk": "late"}
    reading.stopping.set()
    await reading.task


async def test_idle_wait_max_seconds_is_read_as_the_pickup_bound() -> None:
    """Its name before pickup_seconds: a configuration that set it keeps its meaning."""
    stream, leases, sink = services()
    polling = {"idle_wait_max_seconds": 1.0}
    reading = await start_reading(
        stream, leases, sink, "shard-1", checkpoint_interval=60, polling=polling
    )
    await asyncio.sleep(60)
    assert 55 <= stream.get_records_calls <= 70
    reading.stopping.set()
    await reading.task


async def test_a_shard_at_its_tip_is_read_every_tip_wait_not_once_per_record() -> None:
    """Records arriving one every 10 ms: after a page that was not full the reader waits
    tip_wait_seconds (50 ms), so a GetRecords call brings about five records, instead of a
    page and an empty call after each (about 400 calls in 10 s). Every record is still indexed
    within that wait."""
    stream, leases, sink = services()
    reading = await start_reading(stream, leases, sink, "shard-1", checkpoint_interval=60)
    for n in range(1000):
        write(stream, "shard-1", f"k{n}")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.06)
    assert all(indexed(sink, f"k{n}") == {"pk": f"k{n}"} for n in range(1000))
    assert 190 <= stream.get_records_calls <= 210
    reading.stopping.set()
    await reading.task


async def test_full_pages_are_read_back_to_back() -> None:
    """A backlog is read at full speed: a full page is followed by the next call at once; only
    the last, partial page waits for more."""
    stream, leases, sink = services()
    for n in range(2500):
        write(stream, "shard-1", f"k{n}")
    reading = await start_reading(
        stream, leases, sink, "shard-1", checkpoint_interval=60, polling={"max_records": 1000}
    )
    await asyncio.sleep(0.01)
    assert indexed(sink, "k2499") is not None
    assert stream.get_records_calls == 3
    reading.stopping.set()
    await reading.task


async def test_tip_wait_zero_reads_again_at_once() -> None:
    """tip_wait_seconds: 0 is the eager reader: every page with records is followed by a call at
    once, which here comes back empty and starts the idle back-off (two calls per 50 ms where
    the default makes one)."""
    stream, leases, sink = services()
    polling = {"tip_wait_seconds": 0}
    reading = await start_reading(
        stream, leases, sink, "shard-1", checkpoint_interval=60, polling=polling
    )
    for n in range(1000):
        write(stream, "shard-1", f"k{n}")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.06)
    assert all(indexed(sink, f"k{n}") is not None for n in range(1000))
    assert stream.get_records_calls >= 380
    reading.stopping.set()
    await reading.task
