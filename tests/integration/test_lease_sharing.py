"""Deployments sharing one lease table (issue 13, item 1: "Shards that no one ever leases"), with
real `streamsync run` processes, real Elasticsearch and moto.

What it proves: a worker counts another toward its share of a stream only if that worker's
heartbeat lists the stream, and a worker's heartbeat lists only the streams it reads. So
whatever other deployments share the lease table, and whatever tables stopped for some worker,
every shard of every table that some live worker reads is leased and read, and each index ends
equal to its table. Before the fix, a worker counted every worker reading any of its streams and
aimed for ceil(all its leases / all of them): shards that only it (or its deployment) could read
were left to nobody, for good.

moto never splits a shard, so each table's shards are made by tests/support/streams_sim.py (a
root holding the first records, split into children); a table's failure for one worker only is a
DescribeStream error injected for that worker's requests (tests/support/moto_server.py tells
the workers' requests apart by access key).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_leases import Worker, sharded_table, wait_for
from tests.support import aws
from tests.support.moto_server import Request, StreamsServer
from tests.support.pipeline import config_document, wait_until_equal
from tests.support.search import Probe, Target
from tests.support.workload import TableShape, expected_id

FAILOVER = 6.0  # seconds; renewals (and heartbeats) every 2 s, taker cycles every 3 s
SHARDS = 6  # children of each table's root


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.popen.poll() is None:
            worker.popen.kill()
            worker.popen.wait()


async def lease_rows(clients: aws.Clients, lease_table: str) -> list[dict[str, Any]]:
    """The unfinished leases: table, shard and owner."""
    try:
        page = await clients.dynamodb.scan(TableName=lease_table, ConsistentRead=True)
    except clients.dynamodb.exceptions.ResourceNotFoundException:
        return []  # not created yet
    assert "LastEvaluatedKey" not in page
    return [
        {
            "table": item["tableName"]["S"],
            "shard": item["shardId"]["S"],
            "owner": item.get("leaseOwner", {}).get("S"),
        }
        for item in page["Items"]
        if "shardId" in item and item["checkpoint"]["S"] != "SHARD_END"
    ]


async def heartbeat_streams(clients: aws.Clients, lease_table: str, worker: str) -> set[str]:
    item = await clients.dynamodb.get_item(
        TableName=lease_table, Key={"leaseKey": {"S": f"worker|{worker}"}}, ConsistentRead=True
    )
    return set(item.get("Item", {}).get("streams", {}).get("SS", []))


def write_config(
    path: Path,
    moto_endpoint: str,
    target: Target,
    lease_table: str,
    tables: list[tuple[TableShape, str]],
) -> Path:
    document = config_document(
        moto_endpoint,
        target,
        lease_table,
        [
            {"table": shape.name, "index": index, "index_mappings": {"dynamic": False}}
            for shape, index in tables
        ],
        leases={"failover_seconds": FAILOVER, "worker_id": "${WORKER}"},
        checkpoint_interval_seconds=1,
    )
    path.write_text(yaml.safe_dump(document))
    return path


async def held(clients: aws.Clients, lease_table: str) -> dict[str, dict[str | None, int]]:
    """Table -> owner (None: nobody) -> how many of its unfinished leases."""
    counts: dict[str, Counter[str | None]] = {}
    for row in await lease_rows(clients, lease_table):
        counts.setdefault(row["table"], Counter())[row["owner"]] += 1
    return {table: dict(by_owner) for table, by_owner in counts.items()}


async def until_leased_as(
    clients: aws.Clients, lease_table: str, expected: dict[str, dict[str | None, int]]
) -> float:
    """Waits until the unfinished leases are held exactly as `expected` (table -> worker -> how
    many: every one owned, by the workers named for its table); returns how long it took, or
    fails with how they are held."""

    async def as_expected() -> bool:
        return await held(clients, lease_table) == expected

    try:
        return await wait_for(as_expected, 40, "leased as expected")
    except AssertionError:
        now = await held(clients, lease_table)
        raise AssertionError(f"not within 40 s: leases held {now}, expected {expected}") from None


async def test_two_deployments_sharing_a_lease_table_lease_every_shard(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
    workers: list[Worker],
) -> None:
    """Deployment 1 (workers a and b) reads t1 and t2; deployment 2 (worker z) reads t2 and t3
    (into the same index for t2); one lease table; six shards per table. Every shard gets leased
    by a worker that reads its table, the shares being those of each group of workers reading
    the same tables: t1 3 + 3 (a, b), t2 2 + 2 + 2 (a, b, z), t3 6 (z); every index ends equal
    to its table. Before the fix, z aimed for ceil(12 / 3) = 4 of t2 + t3 (a and b read t2) and
    a and b for 4 of t1 + t2 each: at least 2 of t3's shards, read by z alone, were never
    leased."""
    tables = {}
    for name in ("t1", "t2", "t3"):
        tables[name] = await sharded_table(clients, shards=SHARDS, keys=30)
    index = {name: f"{index_name}-{name}" for name in tables}
    lease_table = aws.unique_name("leases")
    config_1 = write_config(
        tmp_path / "deployment-1.yaml",
        moto_endpoint,
        target,
        lease_table,
        [(tables[t][0], index[t]) for t in ("t1", "t2")],
    )
    config_2 = write_config(
        tmp_path / "deployment-2.yaml",
        moto_endpoint,
        target,
        lease_table,
        [(tables[t][0], index[t]) for t in ("t2", "t3")],
    )
    t1, t2, t3 = (tables[t][0].name for t in ("t1", "t2", "t3"))
    expected: dict[str, dict[str | None, int]] = {
        t1: {"a": 3, "b": 3},
        t2: {"a": 2, "b": 2, "z": 2},
        t3: {"z": 6},
    }

    for name, config in (("a", config_1), ("b", config_1), ("z", config_2)):
        workers.append(Worker(name, config, tmp_path))
    await asyncio.gather(*(workload.run(60) for _, workload in tables.values()))
    took = await until_leased_as(clients, lease_table, expected)
    await asyncio.gather(*(workload.run(60) for _, workload in tables.values()))
    for name, (shape, _) in tables.items():
        await wait_until_equal(
            clients.dynamodb,
            probe,
            shape.name,
            index[name],
            lambda item, s=shape: expected_id(s, item),
        )
    assert await held(clients, lease_table) == expected, "and nothing moved since"
    for worker in workers:
        assert worker.stop(signal.SIGTERM) == 0
    print(f"\nevery shard of t1, t2, t3 leased as expected {took:.1f} s after the start")


async def test_a_worker_whose_table_failed_neither_lists_it_nor_holds_it_back(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
    workers: list[Worker],
) -> None:
    """Workers a and f read t1 (2 shards) and t2 (6 shards); for f alone, t2's stream is gone
    (DescribeStream answers ResourceNotFoundException to f's requests): its `Source.failure` is
    set and it keeps running for t1. Its heartbeat lists t1's stream only, a counts it toward t1
    only, so a leases all six of t2's shards and one of t1's, f the other. Before the fix, f's
    heartbeat still listed t2, and a aimed for ceil(8 / 2) = 4 leases: at least 2 of t2's shards
    were never leased."""
    (t1, load_1), (t2, load_2) = [
        await sharded_table(clients, shards=shards, keys=30) for shards in (2, 6)
    ]
    streams = {
        shape.name: (await clients.dynamodb.describe_table(TableName=shape.name))["Table"][
            "LatestStreamArn"
        ]
        for shape in (t1, t2)
    }

    def from_f(request: Request) -> bool:
        return request.access_key == "f"

    streams_server.faults.inject(
        "DescribeStream",
        "ResourceNotFoundException",
        message="Requested resource not found",
        table=t2.name,
        times=1_000_000,
        match=from_f,
    )
    lease_table = aws.unique_name("leases")
    index = {t1.name: f"{index_name}-t1", t2.name: f"{index_name}-t2"}
    config = write_config(
        tmp_path / "tables.yaml",
        moto_endpoint,
        target,
        lease_table,
        [(t1, index[t1.name]), (t2, index[t2.name])],
    )
    for name in ("f", "a"):
        workers.append(Worker(name, config, tmp_path))

    expected: dict[str, dict[str | None, int]] = {t1.name: {"a": 1, "f": 1}, t2.name: {"a": 6}}
    await asyncio.gather(load_1.run(40), load_2.run(40))

    async def f_announces_t1_only() -> bool:
        try:
            return await heartbeat_streams(clients, lease_table, "f") == {streams[t1.name]}
        except clients.dynamodb.exceptions.ResourceNotFoundException:
            return False  # the workers have not created the lease table yet

    # f's first heartbeat (before its first discovery) lists both streams; the next one, a
    # heartbeat interval later, must drop t2. When a started first, the leases can already be
    # held as expected before that beat, so the test waits for the beat instead of racing it.
    await wait_for(f_announces_t1_only, 3 * FAILOVER, "f's heartbeat lists t1's stream only")
    took = await until_leased_as(clients, lease_table, expected)
    assert await heartbeat_streams(clients, lease_table, "f") == {streams[t1.name]}
    assert await heartbeat_streams(clients, lease_table, "a") == set(streams.values())
    await asyncio.gather(load_1.run(40), load_2.run(40))
    for shape in (t1, t2):
        await wait_until_equal(
            clients.dynamodb,
            probe,
            shape.name,
            index[shape.name],
            lambda item, s=shape: expected_id(s, item),
        )
    assert await held(clients, lease_table) == expected, "and nothing moved since"
    for worker in workers:
        assert worker.stop(signal.SIGTERM) == 0
    print(f"\nevery shard leased as expected {took:.1f} s after the start")
