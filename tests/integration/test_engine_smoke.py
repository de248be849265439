"""A first end-to-end pass, on every engine: items written to a table appear in, change in, and
leave the index."""

from __future__ import annotations

from tests.support import aws
from tests.support.pipeline import make_config, pk, running, wait_until_equal
from tests.support.search import Probe, Target, every_engine


@every_engine
async def test_inserts_updates_and_deletes_reach_the_index(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    table = aws.unique_name("smoke")
    await aws.create_stream_table(clients.dynamodb, table)
    for i in range(20):
        await clients.dynamodb.put_item(
            TableName=table, Item={"pk": {"S": f"k{i}"}, "n": {"N": str(i)}, "s": {"S": "x"}}
        )
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name}],
    )
    async with running(config) as sync:
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
        for i in range(0, 20, 2):
            await clients.dynamodb.put_item(
                TableName=table, Item={"pk": {"S": f"k{i}"}, "n": {"N": str(i * 10)}}
            )
        for i in range(1, 20, 4):
            await clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": f"k{i}"}})
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
    assert sync.metrics.value("streamsync_records_read_total", table=table) == 35
