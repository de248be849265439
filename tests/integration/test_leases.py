"""Many workers, one stream: balance, failover, hand-off and fencing through the lease table,
with real `streamsync run` processes (or embedded engines), real Elasticsearch and moto.

moto never splits a shard, so the 12+ shards and their lineage are made by
tests/support/streams_sim.py; stalls are injected as delays in front of moto
(tests/support/moto_server.py), which also tells the workers' requests apart by access key.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiobotocore.credentials import AioCredentials

from streamsync.awsjson import AwsJsonClient
from streamsync.leases.held import HeldLease
from streamsync.leases.model import Lease, Position
from streamsync.leases.table import LeaseTable
from tests.support import aws, streams_sim
from tests.support.moto_server import Request, StreamsServer
from tests.support.pipeline import STREAMSYNC, make_config, running, wait_until_equal
from tests.support.search import Probe, Target
from tests.support.workload import TableShape, Workload, expected_id, in_background, writing

FAILOVER = 6.0  # seconds; renewals every 2 s, taker cycles every 3 s
TAKER_CYCLE = FAILOVER / 2


async def sharded_table(
    clients: aws.Clients, shards: int, keys: int
) -> tuple[TableShape, Workload]:
    """A table whose root shard holds some records and then split into `shards` children."""
    shape = TableShape(aws.unique_name("fleet"))
    await aws.create_stream_table(clients.dynamodb, shape.name)
    workload = Workload(clients.dynamodb, shape, keys=keys, seed=11)
    await workload.populate()
    sim = streams_sim.stream_of(shape.name)
    sim.split(sim.open_shards()[0].shard_id, shards)
    return shape, workload


async def lease_rows(clients: aws.Clients, lease_table: str) -> list[dict[str, Any]]:
    try:
        page = await clients.dynamodb.scan(TableName=lease_table, ConsistentRead=True)
    except clients.dynamodb.exceptions.ResourceNotFoundException:
        return []  # not created yet
    return [
        {
            "shard": item["shardId"]["S"],
            "owner": item.get("leaseOwner", {}).get("S"),
            "checkpoint": item["checkpoint"]["S"],
        }
        for item in page["Items"]
        if "shardId" in item  # not a worker's heartbeat
    ]


def active(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row["checkpoint"] != "SHARD_END"]


def load(rows: list[dict[str, Any]]) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for row in active(rows):
        counts[row["owner"]] = counts.get(row["owner"], 0) + 1
    return counts


async def wait_for(condition: Any, within: float, what: str) -> float:
    """Polls an async condition; returns how long it took to hold."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while not await condition():  # noqa: ASYNC110
                await asyncio.sleep(0.25)
            return loop.time() - started
    raise AssertionError(f"not within {within} s: {what}")


class Worker:
    def __init__(self, name: str, config: Path, logs: Path) -> None:
        self.name = name
        self._log = (logs / f"{name}.log").open("w")
        self.popen = subprocess.Popen(
            [STREAMSYNC, "run", "--config", str(config), "--log-format", "json"],
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, "AWS_ACCESS_KEY_ID": name, "WORKER": name},
        )

    def stop(self, signum: int) -> int:
        self.popen.send_signal(signum)
        code = self.popen.wait(timeout=60)
        self._log.close()
        return code


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.popen.poll() is None:
            worker.popen.kill()
            worker.popen.wait()


class ReaderLog:
    """Which worker (access key) read which shard when, from the GetRecords requests."""

    def __init__(self) -> None:
        self.reads: list[tuple[float, str, str]] = []

    def __call__(self, request: Request) -> None:
        if request.action != "GetRecords" or request.access_key is None:
            return
        iterator = streams_sim._ITERATORS.get(request.body.get("ShardIterator", ""))
        if iterator is not None:
            self.reads.append((request.time, iterator.shard_id, request.access_key))

    def most_concurrent_readers(self, gap: float = 3.0) -> int:
        """The most workers reading one shard at the same moment; a worker's reading of a shard
        is one interval until it pauses longer than `gap` (idle polls are at most 1 s apart)."""
        intervals: dict[str, list[tuple[float, float]]] = {}
        spans: dict[tuple[str, str], list[float]] = {}
        for at, shard, key in sorted(self.reads):
            span = spans.get((shard, key))
            if span is not None and at - span[1] <= gap:
                span[1] = at
                continue
            if span is not None:
                intervals.setdefault(shard, []).append((span[0], span[1]))
            spans[(shard, key)] = [at, at]
        for (shard, _), span in spans.items():
            intervals.setdefault(shard, []).append((span[0], span[1]))
        most = 0
        for spans_of_shard in intervals.values():
            edges = sorted(
                itertools.chain.from_iterable(((s, 1), (e, -1)) for s, e in spans_of_shard),
                key=lambda edge: (edge[0], -edge[1]),
            )
            level = 0
            for _, step in edges:
                level += step
                most = max(most, level)
        return most


@pytest.mark.slow
async def test_workers_balance_fail_over_and_hand_off(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
    workers: list[Worker],
) -> None:
    shape, workload = await sharded_table(clients, shards=12, keys=120)
    lease_table = aws.unique_name("leases")
    config = tmp_path / "tables.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "aws": {"region": "us-east-1", "endpoint_url": moto_endpoint},
                **target.section(),
                "leases": {
                    "table": lease_table,
                    "failover_seconds": FAILOVER,
                    "worker_id": "${WORKER}",
                },
                "tables": [
                    {
                        "table": shape.name,
                        "index": index_name,
                        "index_mappings": {"dynamic": False},
                    }
                ],
                "observability": {"listen": "127.0.0.1:0"},
            }
        )
    )
    readers = ReaderLog()
    streams_server.faults.observers.append(readers)
    figures: dict[str, float] = {}

    async def balanced_among(names: set[str]) -> bool:
        rows = await lease_rows(clients, lease_table)
        counts = load(rows)
        return (
            len(active(rows)) == 12
            and set(counts) == names
            and max(counts.values()) - min(counts.values()) <= 1
        )

    async def all_taken_from(name: str) -> bool:
        rows = await lease_rows(clients, lease_table)
        return all(row["owner"] not in (name, None) for row in active(rows))

    loop = asyncio.get_running_loop()
    async with writing(workload, every=0.01):
        for name in ("w1", "w2", "w3"):
            workers.append(Worker(name, config, tmp_path))
        figures["balanced, 3 workers (s)"] = await wait_for(
            lambda: balanced_among({"w1", "w2", "w3"}), 60, "3 workers balanced within 1"
        )

        # A fourth worker gets its share (the others give leases up for it, or it steals one
        # per cycle) while no record waits longer than one lease hand-off to be checkpointed.
        waits = RecordWaits(clients, lease_table, shape.name)
        async with waits.watching():
            workers.append(Worker("w4", config, tmp_path))
            figures["balanced after a 4th joined (s)"] = await wait_for(
                lambda: balanced_among({"w1", "w2", "w3", "w4"}), 90, "4 workers balanced"
            )
            await asyncio.sleep(FAILOVER)  # let the last hand-off settle before measuring
        figures["longest wait for a checkpoint while the 4th joined (s)"] = waits.longest()
        assert waits.longest() <= FAILOVER, "no record waited longer than one lease hand-off"

        # kill -9: the others take its leases once they stood still for a failover time.
        assert workers[0].stop(signal.SIGKILL) == -signal.SIGKILL
        figures["failover after kill -9 (s)"] = await wait_for(
            lambda: all_taken_from("w1"), 60, "the killed worker's leases taken"
        )
        assert figures["failover after kill -9 (s)"] <= FAILOVER + TAKER_CYCLE + 2

        # SIGTERM: leases are released after the final checkpoint and taken within a cycle,
        # without waiting for a failover time.
        asked = loop.time()
        workers[1].popen.send_signal(signal.SIGTERM)

        async def released_by(name: str) -> bool:
            rows = await lease_rows(clients, lease_table)
            return all(row["owner"] != name for row in active(rows))

        figures["drain and release after SIGTERM (s)"] = await wait_for(
            lambda: released_by("w2"), 60, "the stopping worker released its leases"
        )
        released = loop.time()
        await wait_for(lambda: all_taken_from("w2"), 60, "the released leases taken")
        figures["released leases taken after (s)"] = loop.time() - released
        assert workers[1].stop(signal.SIGTERM) == 0
        assert figures["released leases taken after (s)"] < FAILOVER, "no failover wait"
        figures["hand-off after SIGTERM (s)"] = loop.time() - asked

    await wait_until_equal(
        clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
    )
    figures["most workers reading one shard at once"] = readers.most_concurrent_readers()
    print("\nlease figures:", figures)
    assert figures["most workers reading one shard at once"] <= 2


class RecordWaits:
    """The longest time a record stood in a shard before a checkpoint covered it.

    A shard's checkpoint standing still says nothing by itself (no record may have come to
    that shard meanwhile); a record waiting is a pause. Records are seen by polling the
    simulated stream (tests/support/streams_sim.py) and checkpoints by scanning the lease
    table, each every quarter second, so a wait is measured to about half a second.
    """

    def __init__(self, clients: aws.Clients, lease_table: str, table: str) -> None:
        self._clients = clients
        self._lease_table = lease_table
        self._stream = streams_sim.stream_of(table)
        self._waiting: dict[str, list[tuple[int, float]]] = {}  # shard -> (sequence, seen at)
        self._newest: dict[str, int] = {}
        self._longest = 0.0

    def longest(self) -> float:
        """Counts the records still waiting too, so a shard that stopped for good shows."""
        now = asyncio.get_running_loop().time()
        still = [now - seen for waiting in self._waiting.values() for _, seen in waiting]
        return max([self._longest, *still])

    def _see_records(self, now: float) -> None:
        with streams_sim.SIM_LOCK:
            newest = {
                shard.shard_id: shard.records[-1][0]
                for shard in self._stream.shards
                if shard.records
            }
        for shard, sequence in newest.items():
            if sequence != self._newest.get(shard):
                self._newest[shard] = sequence
                self._waiting.setdefault(shard, []).append((sequence, now))

    def _see_checkpoint(self, shard: str, checkpoint: str, now: float) -> None:
        waiting = self._waiting.get(shard, [])
        covered = (
            len(waiting)
            if checkpoint == "SHARD_END"
            else sum(
                1 for sequence, _ in waiting if checkpoint.isdigit() and sequence <= int(checkpoint)
            )
        )
        for _, seen in waiting[:covered]:
            self._longest = max(self._longest, now - seen)
        del waiting[:covered]

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        self._see_records(loop.time())
        self._waiting.clear()  # only records that arrive while watching count

        async def watch() -> None:
            while True:
                self._see_records(loop.time())
                rows = await lease_rows(self._clients, self._lease_table)
                now = loop.time()
                for row in rows:
                    self._see_checkpoint(row["shard"], row["checkpoint"], now)
                await asyncio.sleep(0.25)

        async with in_background(watch()):
            yield


def _writer(request: Request) -> str | None:
    """The worker a lease write claims to come from (its fencing condition names it)."""
    values = request.body.get("ExpressionAttributeValues", {})
    owner = values.get(":seen_owner") or values.get(":owner")
    return owner["S"] if owner else None


async def test_a_stalled_worker_never_checkpoints_a_lease_it_lost(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    """Worker A's lease writes are held up (a delay injected in front of moto) past its failover
    time; B takes A's leases; A's late renewals and checkpoints must all be refused, which the
    lease table's write history (taken under the server's lock) shows."""
    shape, workload = await sharded_table(clients, shards=4, keys=40)
    lease_table = aws.unique_name("leases")
    history = streams_server.faults.record_writes(lease_table)

    def config(worker: str) -> Any:
        return make_config(
            moto_endpoint,
            target,
            lease_table,
            [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
            leases={"worker_id": worker, "failover_seconds": 3},
            checkpoint_interval_seconds=0.5,
        )

    async with contextlib.AsyncExitStack() as engines:
        await engines.enter_async_context(running(config("worker-a")))
        async with writing(workload, every=0.01):
            await wait_for(
                lambda: _owned_by(clients, lease_table, "worker-a", 4), 30, "A holds all 4"
            )
            stall = streams_server.faults.inject(
                "UpdateItem",
                table=lease_table,
                delay=8.0,
                times=1000,
                match=lambda request: _writer(request) == "worker-a",
            )
            await engines.enter_async_context(running(config("worker-b")))
            await wait_for(
                lambda: _owned_by(clients, lease_table, "worker-b", 4), 30, "B took all 4"
            )
            await asyncio.sleep(10)  # A's stalled writes land meanwhile, and are refused
            stall.remaining = 0
        await wait_until_equal(
            clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
        )

    checkpoints = [w for w in history if w.request.action == "UpdateItem" and w.status == 200]
    refused_from_a = [w for w in history if w.status == 400 and _writer(w.request) == "worker-a"]
    assert refused_from_a, "A's stalled writes reached the table and were refused"
    for write in checkpoints:
        before = write.before or {}
        after = write.after or {}
        if before.get("checkpoint") != after.get("checkpoint"):
            # Every checkpoint was written by the lease's owner at that moment.
            assert before.get("leaseOwner", {}).get("S") == _writer(write.request), write
    taken_by_b = {
        (w.after or {})["shardId"]["S"]
        for w in history
        if w.status == 200
        and (w.after or {}).get("leaseOwner", {}).get("S") == "worker-b"
        and (w.before or {}).get("leaseOwner", {}).get("S") == "worker-a"
    }
    assert len(taken_by_b) == 4, "B took over every lease A stalled on"
    for write in history:
        fenced = ":seen_owner" in write.request.body.get("ExpressionAttributeValues", {})
        if write.status == 200 and fenced:
            # Renewals, checkpoints, finishes and releases only ever succeed for the owner.
            owner = (write.before or {}).get("leaseOwner", {}).get("S")
            assert owner == _writer(write.request), write


async def _owned_by(clients: aws.Clients, lease_table: str, worker: str, count: int) -> bool:
    rows = active(await lease_rows(clients, lease_table))
    return len(rows) == count and all(row["owner"] == worker for row in rows)


async def test_finished_leases_are_deleted_only_once_safe(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    """A finished parent's lease stays while the parent is still listed in the stream (else
    discovery would lease and read it again), and goes once it left the stream, its children
    started and the retention time passed."""
    shape = TableShape(aws.unique_name("cleanup"))
    await aws.create_stream_table(clients.dynamodb, shape.name)
    workload = Workload(clients.dynamodb, shape, keys=20, seed=5)
    await workload.populate()
    sim = streams_sim.stream_of(shape.name)
    root = sim.open_shards()[0].shard_id
    lease_table = aws.unique_name("leases")
    config = make_config(
        moto_endpoint,
        target,
        lease_table,
        [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
        leases={
            "discovery_interval_seconds": 0.5,
            "cleanup_after_seconds": 0,
            "worker_id": "cleaner",
        },
    )

    async def root_lease() -> dict[str, Any] | None:
        rows = await lease_rows(clients, lease_table)
        return next((row for row in rows if row["shard"] == root), None)

    async def finished() -> bool:
        lease = await root_lease()
        return lease is not None and lease["checkpoint"] == "SHARD_END"

    async def gone() -> bool:
        return await root_lease() is None

    async with running(config):
        await wait_for(
            lambda: _owned_by(clients, lease_table, "cleaner", 1),
            30,
            "root read",
        )
        sim.split(root, 2)
        await workload.run(40)
        await wait_for(finished, 30, "root finished")
        await asyncio.sleep(3)  # several discoveries while the root is still listed
        assert await root_lease() is not None, "kept while the shard is still in the stream"
        sim.drop(root)
        await wait_for(gone, 30, "root lease deleted after it left the stream")
        await wait_until_equal(
            clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
        )


async def test_a_finished_lease_stays_finished_while_its_children_are_looked_up(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    """Looking up an ended shard's children is slowed down (a delay on DescribeStream with a
    ShardFilter); meanwhile no periodic checkpoint or renewal may touch the finished lease, or
    SHARD_END would be overwritten and the closed shard read again (found by the chaos test)."""
    shape = TableShape(aws.unique_name("finish"))
    await aws.create_stream_table(clients.dynamodb, shape.name)
    workload = Workload(clients.dynamodb, shape, keys=20, seed=1)
    lease_table = aws.unique_name("leases")
    history = streams_server.faults.record_writes(lease_table)
    streams_server.faults.inject(
        "DescribeStream", delay=2.0, times=100, match=lambda r: "ShardFilter" in r.body
    )
    config = make_config(
        moto_endpoint,
        target,
        lease_table,
        [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
        leases={"worker_id": "solo"},
        checkpoint_interval_seconds=0.5,
    )
    sim = streams_sim.stream_of(shape.name)
    async with running(config):
        await workload.run(100)
        root = sim.open_shards()[0].shard_id
        sim.split(root, 2)
        await workload.run(30)
        await wait_until_equal(
            clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
        )
        await asyncio.sleep(3)  # checkpoint and renewal rounds after the end
    root_writes = [
        w
        for w in history
        if w.status == 200 and (w.after or {}).get("shardId", {}).get("S") == root
    ]
    ended = [
        i for i, w in enumerate(root_writes) if (w.after or {})["checkpoint"]["S"] == "SHARD_END"
    ]
    assert ended, "the root was read to its end"
    after_end = root_writes[ended[0] + 1 :]
    assert after_end == [], f"the finished lease was written again: {after_end}"


async def test_a_write_cancelled_in_flight_does_not_fence_out_the_next(
    clients: aws.Clients, moto_endpoint: str, streams_server: StreamsServer
) -> None:
    """A checkpoint is delayed in front of moto (the injector holds the request, then moto
    applies it) and its caller is cancelled meanwhile, as a stopping poller cancels its periodic
    checkpoints. The write still lands, before the release that follows (held up longer); the
    release must know the counter the checkpoint set, or the lease would stay owned, unread, for
    a failover time."""
    name = aws.unique_name("leases")
    async with aiohttp.ClientSession() as http:
        credentials = AioCredentials("testing", "testing")
        table = LeaseTable(AwsJsonClient(moto_endpoint, aws.REGION, credentials, http), name)
        await table.ensure_exists()
        lease = Lease(stream_arn="arn:stream", shard_id="shardId-1", table="t")
        assert await table.create(lease)
        held = HeldLease(table, await table.take(lease, "w1"), failover_seconds=60)
        streams_server.faults.inject("UpdateItem", table=name, delay=1.0)  # the checkpoint
        streams_server.faults.inject("UpdateItem", table=name, delay=2.0)  # then the release
        checkpoint = asyncio.create_task(held.checkpoint(Position(12345, 7)))
        await asyncio.sleep(0.3)
        checkpoint.cancel()
        assert await held.release(), "the release was fenced out by this worker's own write"
        (row,) = (await table.scan()).leases  # the store's transport lives as long as `http`
    assert row.owner is None
    assert row.checkpoint == "12345"


async def test_idle_workers_glance_each_cycle_and_scan_the_lease_table_only_now_and_then(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    index_name: str,
) -> None:
    """Two workers on four idle shards (failover 2 s: a cycle a second, the periodic full scan
    every 12 s), counted at the moto endpoint once no lease item has been written for two
    failover times: each cycle reads the roster and heartbeats (BatchGetItem), the whole lease
    table is scanned about once per worker per 12 s, and nothing but heartbeats is written.
    Scanning every cycle, as before, would be some 24 scans in the window."""
    shape, _ = await sharded_table(clients, shards=4, keys=4)
    lease_table = aws.unique_name("leases")
    history = streams_server.faults.record_writes(lease_table)
    calls: list[Request] = []
    streams_server.faults.observers.append(
        lambda request: calls.append(request) if request.table == lease_table else None
    )

    def config(worker: str) -> Any:
        return make_config(
            moto_endpoint,
            target,
            lease_table,
            [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
            leases={"worker_id": worker, "failover_seconds": 2},
        )

    def lease_writes() -> int:
        return sum(1 for w in history if "shardId" in (w.after or w.before or {}))

    async with running(config("worker-a")), running(config("worker-b")):

        async def two_each() -> bool:
            return load(await lease_rows(clients, lease_table)) == {"worker-a": 2, "worker-b": 2}

        await wait_for(two_each, 30, "2 each")
        quiet_since, writes = time.monotonic(), lease_writes()
        while time.monotonic() - quiet_since < 4:
            await asyncio.sleep(0.2)
            if lease_writes() != writes:
                quiet_since, writes = time.monotonic(), lease_writes()
        seen = len(calls)
        await asyncio.sleep(12)
        window = [request.action for request in calls[seen:]]
        assert lease_writes() == writes, "no lease item written while nothing moves"
    # About a glance per worker and second; half of that leaves room for a loaded machine.
    assert window.count("BatchGetItem") >= 2 * 12 / 2, window
    assert 1 <= window.count("Scan") <= 4, window
    assert set(window) <= {"BatchGetItem", "Scan", "UpdateItem"}, "heartbeats are the writes"
