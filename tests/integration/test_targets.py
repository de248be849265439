"""A table's leases remember which index their records went to (issue 13, item 12): another
index never reads on from their checkpoints, which would leave it silently without what came
before. Against moto's stream endpoint and the real search node."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import pytest

from streamsync.app import StreamSync
from streamsync.errors import StreamsyncError
from tests.support import aws
from tests.support.pipeline import eventually, make_config, pk, running, wait_until_equal
from tests.support.search import Probe, Target


async def fill(clients: aws.Clients, table: str, start: int, count: int) -> None:
    for n in range(start, start + count):
        await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{n:03d}"}})


async def test_a_changed_index_is_refused_until_it_can_be_filled_completely(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    """The index of a table changes from A to B. Resumed from A's checkpoints, B would get only
    later changes: `validate` and `run` refuse with one line saying what to do. Following it
    (its own lease table, initial_load: scan), B ends with every item."""
    table = aws.unique_name("retarget")
    await aws.create_stream_table(clients.dynamodb, table)
    await fill(clients, table, 0, 20)
    leases = aws.unique_name("leases")
    first, second = f"{index_name}-a", f"{index_name}-b"
    config_a = make_config(moto_endpoint, target, leases, [{"table": table, "index": first}])
    async with running(config_a):
        await wait_until_equal(clients.dynamodb, probe, table, first, pk)
    await fill(clients, table, 20, 5)

    config_b = make_config(moto_endpoint, target, leases, [{"table": table, "index": second}])
    async with StreamSync(config_b) as sync:
        [problem] = await sync.check()
        with pytest.raises(StreamsyncError) as refused:
            await sync.run()
    assert problem == str(refused.value)
    assert f"its leases in {leases} feed the index '{first}', not '{second}'" in problem
    assert "own lease table (leases.table) and set tables[0].initial_load: scan" in problem
    assert await probe.count(second) == 0

    fixed = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": second, "initial_load": "scan"}],
    )
    async with running(fixed):
        await wait_until_equal(clients.dynamodb, probe, table, second, pk)


async def test_a_deployment_feeding_another_index_through_the_same_leases_stops_loudly(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two deployments with different indexes that start at once can both pass the start-up
    check and then share one set of leases. Each worker looks at every scan: a lease of its
    stream that feeds another index stops that table with the same line, in the log and in
    readiness. The other index is written into a lease here, as the other deployment would."""
    caplog.set_level(logging.ERROR, logger="streamsync")
    table = aws.unique_name("shared")
    await aws.create_stream_table(clients.dynamodb, table)
    leases = aws.unique_name("leases")
    config = make_config(
        moto_endpoint,
        target,
        leases,
        [{"table": table, "index": index_name}],
        leases={"failover_seconds": 3},
    )
    async with running(config) as sync:

        async def shard_leases() -> list[dict[str, Any]]:
            items = (await clients.dynamodb.scan(TableName=leases))["Items"]
            return [i for i in items if "shardId" in i]

        await eventually(lambda: _one(shard_leases()))
        [item] = await shard_leases()
        await clients.dynamodb.update_item(
            TableName=leases,
            Key={"leaseKey": item["leaseKey"]},
            UpdateExpression="SET indexName = :other",
            ExpressionAttributeValues={":other": {"S": "another-index"}},
        )

        async def refused() -> bool:
            return any("feed the index 'another-index'" in r for r in sync.readiness())

        await eventually(refused, within=30)
    assert any("feed the index 'another-index'" in r.getMessage() for r in caplog.records)


async def _one(leases: Awaitable[list[dict[str, Any]]]) -> bool:
    return len(await leases) == 1
