"""The streaming engine end to end, embedded in the test's event loop, against real search nodes
(Elasticsearch; every engine for splits and rollovers) and moto's DynamoDB Streams endpoint (shard
splits and rollovers injected through tests/support/streams_sim.py, since moto never splits a
shard by itself)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.support import aws, streams_sim
from tests.support.pipeline import make_config, running, wait_until_equal
from tests.support.search import Probe, Target, every_engine
from tests.support.workload import TableShape, Workload, expected_id


async def test_two_tables_with_every_attribute_type_end_equal_to_their_indexes(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    """Items written before start, then 5,000 random puts, updates and deletes over a hash-only
    and a hash+range table, with every attribute type; the indexes end equal to the tables."""
    shapes = [
        TableShape(aws.unique_name("orders")),
        TableShape(aws.unique_name("events"), range_key="sk"),
    ]
    await aws.create_stream_table(clients.dynamodb, shapes[0].name)
    await aws.create_stream_table(clients.dynamodb, shapes[1].name, range_key=("sk", "N"))
    workloads = [
        Workload(clients.dynamodb, shape, keys=300, seed=n) for n, shape in enumerate(shapes)
    ]
    for workload in workloads:
        await workload.populate()
    indexes = [f"{index_name}-orders", f"{index_name}-events"]
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            # Random types per attribute would clash in dynamic mappings; _source is compared.
            {"table": s.name, "index": i, "index_mappings": {"dynamic": False}}
            for s, i in zip(shapes, indexes, strict=True)
        ],
    )

    async with running(config):
        await asyncio.gather(*(w.run(2500) for w in workloads))
        for shape, index in zip(shapes, indexes, strict=True):
            await wait_until_equal(
                clients.dynamodb,
                probe,
                shape.name,
                index,
                lambda item, s=shape: expected_id(s, item),
            )
    assert sum(w.operations for w in workloads) >= 5600


@every_engine
async def test_split_and_rollover_mid_run_keep_per_key_order(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Shards split and roll over while writes go on; children are read only after their parents
    ended, and the index ends equal to the table."""
    caplog.set_level(logging.INFO, logger="streamsync")
    shape = TableShape(aws.unique_name("lineage"))
    await aws.create_stream_table(clients.dynamodb, shape.name)
    workload = Workload(clients.dynamodb, shape, keys=60, seed=7)
    await workload.populate()
    sim = streams_sim.stream_of(shape.name)
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
        leases={"discovery_interval_seconds": 2},
    )

    async with running(config):
        await workload.run(300)
        left, right = sim.split(sim.open_shards()[0].shard_id, 2)
        await workload.run(300)
        sim.rollover(left)
        await workload.run(300)
        sim.split(right, 2)
        await workload.run(300)
        await wait_until_equal(
            clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
        )

    events = [
        (r.message, getattr(r, "shard", None))
        for r in caplog.records
        if r.name.startswith("streamsync")
    ]
    parents = {s.shard_id: s.parent_id for s in sim.shards}
    assert len(parents) == 6
    for shard, parent in parents.items():
        started = events.index(("reading shard", shard))
        if parent is not None:
            assert events.index(("shard read to its end", parent)) < started, shard


async def test_embedded_engine_shares_the_loop_and_stops_when_asked(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    table = aws.unique_name("embedded")
    await aws.create_stream_table(clients.dynamodb, table)
    config = make_config(
        moto_endpoint, target, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    ticks = 0

    async def host_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    other = asyncio.create_task(host_task())
    from streamsync import StreamSync

    async with StreamSync(config) as sync:
        engine = asyncio.create_task(sync.run())
        await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
        await wait_until_equal(clients.dynamodb, probe, table, index_name, lambda i: i["pk"]["S"])
        ticks_while_running = ticks
        sync.stop()
        await asyncio.wait_for(engine, timeout=30)
    assert ticks_while_running > 10, "the host's task ran while the engine did"
    assert not other.done(), "stopping the engine leaves the host's tasks alone"
    other.cancel()
    leases = await clients.dynamodb.scan(TableName=config.leases.table)
    assert all("leaseOwner" not in item for item in leases["Items"]), "leases released on stop"
    assert all("workerId" not in item for item in leases["Items"]), "heartbeat removed on stop"
