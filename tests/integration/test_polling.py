"""How often a busy shard is polled, against moto's stream and a real node: `tip_wait_seconds`
is what keeps a steady trickle of records from costing one GetRecords call per record (or more),
and no record is left behind by it. The calls are the worker's own counter of GetRecords calls
(`streamsync_get_records_calls_total`), which the bench's replay server counts the same."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import aws
from tests.support.pipeline import make_config, pk, running, wait_until_equal
from tests.support.search import Probe, Target


@pytest.mark.parametrize(("tip_wait", "fewest", "most"), [(0.5, 5, 20), (0.0, 30, 10_000)])
async def test_a_trickle_is_read_once_per_tip_wait(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tip_wait: float,
    fewest: int,
    most: int,
) -> None:
    """An item every 0.1 s for 5 s: with a 0.5 s tip wait the shard is read about ten times
    while they arrive (a page of ~5 records each); with 0 (the eager reader) every page with
    records is followed by another call at once, several times as many. Every item is
    indexed either way."""
    table = aws.unique_name("polling")
    await aws.create_stream_table(clients.dynamodb, table)
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name}],
        polling={"tip_wait_seconds": tip_wait},
    )
    async with running(config) as sync:

        def calls() -> float:
            return sync.metrics.value("streamsync_get_records_calls_total", table=table)

        await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "first"}})
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
        before = calls()
        for i in range(50):
            await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
            await asyncio.sleep(0.1)
        made = calls() - before
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
    assert fewest <= made <= most, f"{made} GetRecords calls while 50 items arrived over 5 s"
