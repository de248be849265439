"""Chaos: two tables under >= 20,000 random writes while two `streamsync run` workers keep their
indexes in sync through everything at once: a worker killed with -9 (and a replacement started),
Elasticsearch down for (at least) 30 s, AWS throttling (GetRecords, DescribeStream, lease writes),
iterator expiry, shard splits, and 1% poison documents (mapping conflicts).

Afterwards every non-poison item's document equals the table, deleted items are absent, every poison
item's current image is in the dead letters (index and file), and no document is stale. One summary
line is printed; the workers' logs and the chaos timeline stay in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support import aws, streams_sim
from tests.support.chaos import (
    TARGET_MAPPINGS,
    PoisonWorkload,
    Verdict,
    Worker,
    dead_letters_in_file,
    dead_letters_in_index,
    verdict,
)
from tests.support.elasticsearch import EsNode
from tests.support.moto_server import Fault, Request, StreamsServer
from tests.support.search import Probe, Target
from tests.support.workload import TableShape

TARGET_OPERATIONS = 20_000
KEYS_PER_TABLE = 1000
WRITERS_PER_TABLE = 6
FAILOVER = 5.0
OUTAGE = 30.0
THROTTLES = 50  # injected answers per throttled API
CONVERGE_WITHIN = 180.0
EXPIRED = "iterator expired; resuming after the last record read"


@dataclass
class Chaos:
    """What the schedule did, for the summary and for restoring Elasticsearch on failure."""

    started: float = field(default_factory=time.monotonic)
    timeline: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    kill9: int = 0
    splits: int = 0
    es_down_for: float = 0.0
    es_maybe_down: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:6.1f}s {what}")

    @property
    def throttled(self) -> int:
        return sum(THROTTLES - fault.remaining for fault in self.faults)


async def lease_owners(clients: aws.Clients, lease_table: str) -> dict[str, int]:
    """How many unfinished leases each worker holds."""
    try:
        page = await clients.dynamodb.scan(TableName=lease_table, ConsistentRead=True)
    except clients.dynamodb.exceptions.ResourceNotFoundException:
        return {}
    owners: dict[str, int] = {}
    for item in page["Items"]:
        if "shardId" in item and item["checkpoint"]["S"] != "SHARD_END" and "leaseOwner" in item:
            owner = item["leaseOwner"]["S"]
            owners[owner] = owners.get(owner, 0) + 1
    return owners


async def poll(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while not await condition():  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            return
    raise AssertionError(f"not within {within} s: {what}")


def os_node_name() -> str:
    name = os.environ.get("STREAMSYNC_TEST_ES_NODE")
    assert name, "STREAMSYNC_TEST_ES_NODE is unset: run with scripts/run-tests.sh"
    return name


def sometimes(rng: random.Random, probability: float) -> Callable[[Request], bool]:
    """A fault predicate that spreads a fault's answers over the run instead of a burst."""
    return lambda _: rng.random() < probability


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_chaos_keeps_every_index_equal_to_its_table(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    shapes = [
        TableShape(aws.unique_name("chaos-items")),
        TableShape(aws.unique_name("chaos-events"), range_key="sk"),
    ]
    await aws.create_stream_table(clients.dynamodb, shapes[0].name)
    await aws.create_stream_table(clients.dynamodb, shapes[1].name, range_key=("sk", "N"))
    workloads = [
        PoisonWorkload(clients.dynamodb, shape, KEYS_PER_TABLE, seed=n)
        for n, shape in enumerate(shapes)
    ]
    indexes = [f"{index_name}-items", f"{index_name}-events"]
    for index in indexes:
        await probe.create_index(index, {"mappings": TARGET_MAPPINGS})
    dead_index = f"{index_name}-dead-letters"
    dead_file = tmp_path / "dead.jsonl"
    lease_table = aws.unique_name("leases")
    config = tmp_path / "tables.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "aws": {"region": "us-east-1", "endpoint_url": moto_endpoint},
                **target.section(request_timeout_seconds=10),
                "leases": {
                    "table": lease_table,
                    "worker_id": "${WORKER}",
                    "failover_seconds": FAILOVER,
                    "discovery_interval_seconds": 2,
                },
                "tables": [
                    {"table": shape.name, "index": index, "index_mappings": TARGET_MAPPINGS}
                    for shape, index in zip(shapes, indexes, strict=True)
                ],
                # A small buffer, so that the outage makes the pollers wait (back-pressure).
                "bulk": {"queue_size": 2000},
                "dead_letters": {"index": dead_index, "file": str(dead_file)},
                "observability": {"listen": "127.0.0.1:0"},  # several workers on one host
            }
        )
    )
    sims = [streams_sim.stream_of(shape.name) for shape in shapes]
    node = EsNode(os_node_name())
    port = urlsplit(target.url).port
    assert port is not None
    chaos = Chaos()
    workers: list[Worker] = []

    def operations() -> int:
        return sum(w.operations for w in workloads)

    async def write(workload: PoisonWorkload) -> None:
        while not (chaos.done.is_set() and operations() >= TARGET_OPERATIONS):
            await workload.one()

    async def at(fraction: float) -> None:
        """Waits until this fraction of the operations is written: the chaos spreads over the
        writes however fast this machine writes."""
        while operations() < fraction * TARGET_OPERATIONS:  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    async def schedule() -> None:
        rng = random.Random(99)
        await at(0.05)
        chaos.faults = [
            streams_server.faults.inject(
                "GetRecords", "LimitExceededException", times=THROTTLES, match=sometimes(rng, 0.03)
            ),
            streams_server.faults.inject(
                "DescribeStream", "ThrottlingException", times=THROTTLES, match=sometimes(rng, 0.3)
            ),
            streams_server.faults.inject(
                "UpdateItem",
                "ProvisionedThroughputExceededException",
                table=lease_table,
                times=THROTTLES,
                match=sometimes(rng, 0.1),
            ),
        ]
        chaos.note("throttling injected")
        await at(0.10)
        for sim in sims:
            sim.split(sim.open_shards()[0].shard_id, 2)
            chaos.splits += 1
        chaos.note("root shards split")
        await at(0.15)
        for sim in sims:
            sim.expire_iterators()
        chaos.note("iterators expired")

        await at(0.20)
        victim = workers[0]

        async def victim_holds_leases() -> bool:
            return (await lease_owners(clients, lease_table)).get(victim.name, 0) > 0

        await poll(victim_holds_leases, 60, f"{victim.name} holds a lease")
        assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
        chaos.kill9 += 1
        chaos.note(f"{victim.name} killed with -9")
        await asyncio.sleep(FAILOVER + 2)  # its leases expire meanwhile; w2 takes them
        workers.append(Worker("w3", config, tmp_path))
        await workers[-1].wait_logged("started", 60)
        chaos.note("w3 started")

        await at(0.35)
        for sim in sims:
            sim.iterator_ttl = 3.0  # pollers held up by the outage hold their iterators
        chaos.es_maybe_down = True
        await asyncio.to_thread(node.stop)
        down_at = time.monotonic()
        chaos.note("Elasticsearch stopped")
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(node.start, port)
        chaos.es_maybe_down = False
        chaos.es_down_for = time.monotonic() - down_at
        chaos.note(f"Elasticsearch back after {chaos.es_down_for:.1f} s")
        for sim in sims:
            sim.iterator_ttl = float(streams_sim.ITERATOR_TTL_SECONDS)

        await at(0.75)
        for sim in sims:
            sim.split(sim.open_shards()[0].shard_id, 2)
            chaos.splits += 1
        chaos.note("child shards split")
        await at(0.85)
        for sim in sims:
            sim.expire_iterators()
        chaos.note("iterators expired")
        chaos.done.set()

    async def check() -> Verdict:
        letters_index = await dead_letters_in_index(probe, dead_index)
        letters_file = dead_letters_in_file(dead_file)
        total = Verdict()
        for workload, index in zip(workloads, indexes, strict=True):
            total.add(
                await verdict(clients.dynamodb, probe, workload, index, letters_index, letters_file)
            )
        return total

    def context() -> str:
        return f"logs in {tmp_path}; timeline:\n" + "\n".join(chaos.timeline)

    try:
        for name in ("w1", "w2"):
            workers.append(Worker(name, config, tmp_path))
        for worker in workers:
            await worker.wait_logged("started", 60)
        chaos.note("w1, w2 started")

        async with asyncio.TaskGroup() as group:  # a failing step stops the writers too
            group.create_task(schedule())
            for workload in workloads:
                for _ in range(WRITERS_PER_TABLE):
                    group.create_task(write(workload))
        written = operations()
        chaos.note(f"writes stopped after {written} operations")

        result = Verdict(problems=["not checked yet"])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONVERGE_WITHIN):
                while not (result := await check()).converged:  # noqa: ASYNC110
                    await asyncio.sleep(2)
        chaos.note(f"converged: {result.converged}, {len(result.problems)} problems")
        assert result.converged, (
            f"{len(result.problems)} problems, e.g. {result.problems[:5]}; {context()}"
        )
        for worker in workers[1:]:
            assert worker.stop(signal.SIGTERM) == 0, (
                f"{worker.name} did not stop cleanly; {context()}"
            )
        chaos.note("w2, w3 stopped")

        result = await check()  # the final state, nothing running any more
        expired = sum(worker.logged(EXPIRED) for worker in workers)
        letters = {
            *await dead_letters_in_index(probe, dead_index),
            *dead_letters_in_file(dead_file),
        }
        poison = {
            (index, doc_id)
            for workload, index in zip(workloads, indexes, strict=True)
            for doc_id in workload.poison_ids
        }
    finally:
        if chaos.es_maybe_down:  # later tests need the node
            node.start(port)
        for worker in workers:
            worker.kill_if_running()
        (tmp_path / "timeline.txt").write_text("\n".join(chaos.timeline) + "\n")

    print(
        f"\nchaos: operations={written} tables={len(shapes)} kill9={chaos.kill9} "
        f"es_down_s={chaos.es_down_for:.0f} throttled={chaos.throttled} "
        f"expired_iterators={expired} splits={chaos.splits} "
        f"non_poison_equal={result.non_poison_equal} deleted_absent={result.deleted_absent} "
        f"poison_in_dead_letters={result.poison_dead_lettered}/{result.poison_present} "
        f"stale={len(result.stale)}"
    )
    assert written >= TARGET_OPERATIONS
    assert all(w.by_kind["delete"] > 0 and w.by_kind["update"] > 0 for w in workloads)
    assert chaos.kill9 == 1
    assert workers[-1].logged("reading shard") > 0, "the replacement worker took over some shards"
    assert chaos.es_down_for >= OUTAGE
    assert all(fault.remaining < THROTTLES for fault in chaos.faults), "every throttle was hit"
    assert expired > 0
    assert chaos.splits == 4
    assert not result.problems, context()
    assert result.non_poison_equal == result.non_poison_present > 0
    assert result.deleted_absent == result.absent > 0
    assert result.poison_dead_lettered == result.poison_present > 0
    assert not result.stale
    wrongly_rejected = letters - poison
    assert not wrongly_rejected, (
        f"non-poison documents dead-lettered: {sorted(wrongly_rejected)[:5]}"
    )
