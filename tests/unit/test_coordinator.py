"""The coordinator (taker, renewer, discovery, readers) on a fake clock, with two workers sharing
streamsync.testing's in-memory stream and lease table: balance, hand-off, a renewal that hangs,
shard ends, each in well under a second of real time though the workers live through minutes of
loop time. The same flows against moto, real nodes and worker processes: tests/integration
(test_leases, test_lease_sharing, test_robustness, test_chaos)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import pytest

from streamsync.awsjson import AwsError
from streamsync.coordinator.scan import FULL_SCAN_FAILOVERS
from streamsync.leases.model import SHARD_END, Lease, lease_key
from streamsync.testing import InMemoryLeases, InMemorySink, InMemoryStream
from tests.support.inmemory import (
    FAILOVER,
    INDEX,
    STREAM,
    Running,
    indexed,
    start_worker,
    write,
)

pytestmark = pytest.mark.looptime


def stream_of(shards: int) -> InMemoryStream:
    stream = InMemoryStream()
    for n in range(shards):
        stream.add_shard(STREAM, f"shard-{n}")
    return stream


async def until(condition: Callable[[], bool], within: float, what: str) -> float:
    """Loop seconds until `condition` holds (checked every 0.1 s of loop time)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > within:
            raise AssertionError(f"not within {within} s of loop time: {what}")
        await asyncio.sleep(0.1)
    return loop.time() - started


async def settled(workers: list[Running], each: int) -> None:
    """Until every worker holds `each` shards, and still the same ones a failover time later:
    while they balance, a shard can be given up by one and stolen by another in the same cycle."""
    while True:
        await until(lambda: all(len(w.held()) == each for w in workers), 60, f"{each} each")
        held = [w.held() for w in workers]
        await asyncio.sleep(FAILOVER)
        if [w.held() for w in workers] == held:
            return


async def two_workers_a_record_read() -> tuple[
    InMemoryStream, InMemoryLeases, Running, Running, str
]:
    """Workers a and b on two shards, one each, settled; the record "before" written into a's
    shard and read."""
    stream, leases = stream_of(2), InMemoryLeases()
    a, b = start_worker("a", stream, leases), start_worker("b", stream, leases)
    await settled([a, b], 1)
    (shard,) = a.held()
    write(stream, shard, "before")
    await asyncio.sleep(2)
    return stream, leases, a, b, shard


async def test_two_workers_share_the_shards_evenly_and_read_them_all() -> None:
    stream, leases = stream_of(4), InMemoryLeases()
    a, b = start_worker("a", stream, leases), start_worker("b", stream, leases)
    await settled([a, b], 2)
    assert a.held().isdisjoint(b.held())
    for n in range(4):
        write(stream, f"shard-{n}", f"k{n}")
    await asyncio.sleep(2)
    for n in range(4):
        reader = a if f"shard-{n}" in a.held() else b
        assert indexed(reader.sink, f"k{n}") == {"pk": f"k{n}"}
    await asyncio.gather(a.stop(), b.stop())


async def test_a_stopping_worker_hands_its_shards_over_without_a_failover_wait() -> None:
    """a stops gracefully: its readers checkpoint and release, b takes the shards within one of
    its cycles (half a failover time), not after the leases expire, and reads on from a's
    checkpoints: nothing a read is read again, nothing written meanwhile is missed."""
    stream, leases, a, b, shard = await two_workers_a_record_read()
    await a.stop()
    assert leases.leases[lease_key(STREAM, shard)].owner is None, "released"
    write(stream, shard, "after")
    took = await until(lambda: shard in b.held(), FAILOVER, "b takes a's shard")
    assert took <= FAILOVER / 2 + 0.5
    await asyncio.sleep(2)
    assert indexed(b.sink, "after") == {"pk": "after"}
    assert indexed(b.sink, "before") is None, "b starts after a's checkpoint"
    await b.stop()


async def test_a_worker_whose_renewals_hang_stops_reading_and_the_other_takes_over() -> None:
    """Every lease-table write of worker a hangs (a black-holed connection to DynamoDB): its
    heartbeat, renewals, checkpoints, takes, releases. a's readers stop once their
    leases go a failover time unrenewed, before b may take them (b waits for the lease counter
    to stand still for a failover time by its own clock), and b reads on from a's last
    checkpoint. Written during the outage or after, every record reaches b's index."""
    stream, leases, a, b, shard = await two_workers_a_record_read()
    leases.hang("renew", "checkpoint", "take", "release", "finish", "beat", owner="a")
    write(stream, shard, "during")
    loop = asyncio.get_running_loop()
    hung_at = loop.time()
    taken = await until(lambda: shard in b.held(), 4 * FAILOVER, "b takes a's shard")
    assert taken >= FAILOVER, "never before the lease could have expired at a"
    assert not any(r.held.usable for r in a.coordinator._readers.values())
    assert loop.time() - hung_at >= FAILOVER
    write(stream, shard, "after")
    await asyncio.sleep(2)
    assert indexed(b.sink, "during") == {"pk": "during"}
    assert indexed(b.sink, "after") == {"pk": "after"}
    leases.resume()
    await asyncio.gather(a.stop(), b.stop())


async def test_a_split_shard_finishes_before_its_children_are_read() -> None:
    """The parent is read to its end and finished; only then are its children leased and read
    (so an item changed in the parent, then in a child, ends at the child's version)."""
    stream, leases = stream_of(1), InMemoryLeases()
    sink = InMemorySink()
    a = start_worker("a", stream, leases, sink)
    await until(lambda: a.held() == {"shard-0"}, 30, "a reads the shard")
    write(stream, "shard-0", "k", state="old")
    stream.split(STREAM, "shard-0", "shard-1", "shard-2")
    write(stream, "shard-1", "k", state="new")
    await until(lambda: a.held() == {"shard-1", "shard-2"}, 30, "a reads both children")
    await asyncio.sleep(2)
    assert leases.leases[lease_key(STREAM, "shard-0")].checkpoint == SHARD_END
    assert indexed(sink, "k") == {"pk": "k", "state": "new"}
    versions = [a.version for a in sink.actions if a.doc_id == "k" and a.index == INDEX]
    assert len(versions) == 2
    assert versions == sorted(versions)
    await a.stop()


async def test_a_fourth_worker_takes_its_share_with_short_pauses() -> None:
    """Three workers hold 12 shards, records keep coming; a fourth joins. It gets its three
    shards while no shard's checkpoint stands still longer than half a failover time (a hand-off:
    the old owner's last checkpoint, the new owner's first). The others give up a shard each for
    it at their next cycle; it used to find them only at its own next cycle, up to half a
    failover time later, so the pause of a released shard alone could reach half a failover time
    before the hand-off's own delays (over a failover time in tests/integration/test_leases.py
    on a loaded machine). A worker below its share while others are above it now looks again
    every twelfth of a failover time, for one failover time at most."""
    stream, leases = stream_of(12), InMemoryLeases()
    workers = [start_worker(name, stream, leases) for name in ("w1", "w2", "w3")]
    await settled(workers, 4)
    loop = asyncio.get_running_loop()
    last: dict[str, tuple[str, float]] = {}
    longest = 0.0

    async def write_and_watch() -> None:
        nonlocal longest
        n = 0
        while True:
            n += 1
            for shard in range(12):
                write(stream, f"shard-{shard}", f"k{shard}-{n % 5}", n=str(n))
            now = loop.time()
            for lease in leases.leases.values():
                checkpoint, since = last.get(lease.shard_id, (lease.checkpoint, now))
                if checkpoint != lease.checkpoint:
                    since = now
                last[lease.shard_id] = (lease.checkpoint, since)
                longest = max(longest, now - since)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(write_and_watch())
    await asyncio.sleep(5)
    # From here on: before, the first records of the quiet shards waited up to the pickup
    # bound (polling.pickup_seconds, 2 s), which is not a hand-off's pause.
    longest = 0.0
    before = len(leases.writes)
    workers.append(start_worker("w4", stream, leases))
    took = await until(lambda: all(len(w.held()) == 3 for w in workers), 60, "three each")
    await asyncio.sleep(FAILOVER)
    watcher.cancel()
    moves = [w.operation for w in leases.writes[before:] if w.operation in ("take", "release")]
    assert moves.count("take") == 3, "a lease moves once: the share of the 4th, no more"
    assert took <= FAILOVER / 2
    assert longest <= FAILOVER / 4
    await asyncio.gather(*(w.stop() for w in workers))


async def test_a_take_lost_to_a_release_is_tried_again_at_once() -> None:
    """Worker a takes a lease it saw expired; before its take lands, the old owner releases the
    lease (a graceful hand-off racing a steal). The take is refused on its condition; a scans
    again at once and takes the now free lease, instead of leaving it unread for a cycle (half
    a failover time)."""
    stream, leases = stream_of(1), InMemoryLeases()
    key = lease_key(STREAM, "shard-0")
    await leases.create(Lease(STREAM, "shard-0", "orders"))
    leases.steal(key, "z")  # z holds it, and never renews it: expired after a failover time
    leases.hang("take", owner="a")
    a = start_worker("a", stream, leases)
    await until(lambda: ("take", "a") in leases.held_up, 3 * FAILOVER, "a saw it expire")
    assert a.held() == set()
    await leases.release(leases.leases[key])  # z lets it go meanwhile
    leases.resume()
    took = await until(lambda: a.held() == {"shard-0"}, FAILOVER, "a takes the released lease")
    assert took <= FAILOVER / 12
    await a.stop()


async def test_a_worker_whose_heartbeats_fail_stops_checkpointing_before_its_leases_are_taken() -> (
    None
):
    """Idle leases are not renewed one by one: they live by their owner's heartbeat. Worker a's
    heartbeats hang from some moment (its other writes still go through): its readers stop, and
    with them its checkpoints, before b may take any of its leases (b waits until a's heartbeat
    stood still for a failover time by b's clock; a's leases count only from a's last beat that
    landed). Records keep coming throughout, and all of them reach an index."""
    stream, leases = stream_of(2), InMemoryLeases()
    a, b = start_worker("a", stream, leases), start_worker("b", stream, leases)
    await settled([a, b], 1)
    (shard,) = a.held()
    key = lease_key(STREAM, shard)

    async def keep_writing() -> None:
        for n in range(400):
            write(stream, shard, f"k{n}")
            await asyncio.sleep(0.1)

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(3)
    leases.hang("beat", owner="a")
    await until(lambda: shard in b.held(), 4 * FAILOVER, "b takes a's shard")
    taken_at = min(
        w.at for w in leases.writes if w.key == key and w.operation == "take" and w.by == "b"
    )
    a_checkpoints = [
        w.at for w in leases.writes if w.key == key and w.operation == "checkpoint" and w.by == "a"
    ]
    assert a_checkpoints, "a checkpointed while it was alive"
    assert max(a_checkpoints) < taken_at
    await writer
    await asyncio.sleep(3)
    assert all(indexed(a.sink, f"k{n}") or indexed(b.sink, f"k{n}") for n in range(400))
    leases.resume()
    await asyncio.gather(a.stop(), b.stop())


async def test_failed_heartbeats_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose heartbeats fail loses its leases a failover time later: each failure is
    counted (streamsync_heartbeat_failures_total, for an alert before that happens), whether
    throttled, refused for good or cut off."""
    stream, leases = stream_of(1), InMemoryLeases()
    a = start_worker("a", stream, leases)
    await settled([a], 1)
    errors = iter(
        [
            AwsError("ThrottlingException", "slow down", 400),
            AwsError("AccessDeniedException", "not allowed", 400),
            ConnectionResetError("reset by peer"),
        ]
    )
    failed: list[BaseException] = []

    async def failing_beat(worker_id: str, streams: Iterable[str]) -> None:
        error = next(errors, None)
        if error is None:
            return  # landed again
        failed.append(error)
        raise error

    monkeypatch.setattr(leases.heartbeats, "beat", failing_beat)
    await until(lambda: len(failed) == 3, 2 * FAILOVER, "three failed heartbeats")
    await asyncio.sleep(FAILOVER)
    assert a.metrics.value("streamsync_heartbeat_failures_total") == 3
    await a.stop()


async def test_idle_leases_cost_no_lease_writes() -> None:
    """Two workers, eight idle shards, ten minutes of loop time: the only lease-table writes
    are the heartbeats (one per worker every third of a failover time); the lease items are
    written only when they change (here: the takes that balanced them)."""
    stream, leases = stream_of(8), InMemoryLeases()
    a, b = start_worker("a", stream, leases), start_worker("b", stream, leases)
    await settled([a, b], 4)
    before = len(leases.writes)
    beats = {name: leases.heartbeats.beats[name].counter for name in ("a", "b")}
    await asyncio.sleep(600)
    assert leases.writes[before:] == []
    assert a.held() | b.held() == {f"shard-{n}" for n in range(8)}, "and still held, read"
    for name, counter in beats.items():
        beaten = leases.heartbeats.beats[name].counter - counter
        assert 600 / (FAILOVER / 3) - 2 <= beaten <= 600 / (FAILOVER / 3) + 2
    await asyncio.gather(a.stop(), b.stop())


async def test_idle_workers_read_the_whole_lease_table_only_now_and_then() -> None:
    """Balanced and idle, a worker reads the roster and the heartbeats it knows of each cycle (a
    glance, a few items) and scans the whole lease table only every FULL_SCAN_FAILOVERS failover
    times, eventually consistent. A worker joining is still seen at the others' next cycle: the
    roster counts it, they scan, and give it its share (releases: it need not steal)."""
    stream, leases = stream_of(6), InMemoryLeases()
    a, b = start_worker("a", stream, leases), start_worker("b", stream, leases)
    await settled([a, b], 3)
    loop = asyncio.get_running_loop()
    since, glances = loop.time(), leases.heartbeats.glances
    await asyncio.sleep(600)
    scans = [consistent for at, consistent in leases.scans if at > since]
    assert not any(scans), "no strongly consistent scan while nothing changes"
    periodic = 600 / (FULL_SCAN_FAILOVERS * FAILOVER)
    assert 2 * (periodic - 1) <= len(scans) <= 2 * (periodic + 1)
    cycles = 600 / (FAILOVER / 2)
    assert leases.heartbeats.glances - glances >= 2 * (cycles - 2)
    assert a.held() | b.held() == {f"shard-{n}" for n in range(6)}

    # Just after both periodic scans, so that none is due while c joins.
    scanned = len(leases.scans)
    await until(lambda: len(leases.scans) >= scanned + 2, FULL_SCAN_FAILOVERS * FAILOVER, "scans")
    joined = loop.time()
    leases.hang("take", owner="c")  # c cannot steal: only the roster tells a and b of it
    c = start_worker("c", stream, leases)
    given = await until(
        lambda: any(w.operation == "release" for w in leases.writes if w.at > joined),
        FULL_SCAN_FAILOVERS * FAILOVER,
        "a or b gives a lease up for c",
    )
    assert given <= FAILOVER / 2 + 0.5, "at their next cycle, not at a periodic scan"
    leases.resume()
    await settled([a, b, c], 2)
    await asyncio.gather(a.stop(), b.stop(), c.stop())
