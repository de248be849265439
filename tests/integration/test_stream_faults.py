"""Stream faults and an Elasticsearch outage, against real Elasticsearch and moto.

moto has no iterator expiry, trimming, shard expiry or table-deletion semantics for streams;
tests/support/streams_sim.py adds them through moto's in-process backend (expired iterators,
trimmed records, shards dropped from DescribeStream, shards closed when a table is deleted, raw
malformed records), and tests/support/moto_server.py injects ExpiredIteratorException.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import aws, streams_sim
from tests.support.elasticsearch import EsNode
from tests.support.moto_server import StreamsServer
from tests.support.pipeline import eventually, make_config, pk, running, wait_until_equal
from tests.support.search import Probe, Target


async def put(ddb: Any, table: str, key: str, n: int) -> None:
    await ddb.put_item(TableName=table, Item={"pk": {"S": key}, "n": {"N": str(n)}})


def records_in(table: str) -> int:
    return sum(len(s.records) for s in streams_sim.stream_of(table).shards)


async def test_expired_iterators_resume_after_the_last_record_read(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    table = aws.unique_name("expiry")
    await aws.create_stream_table(clients.dynamodb, table)
    config = make_config(
        moto_endpoint, target, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    async with running(config) as sync:
        for i in range(30):
            await put(clients.dynamodb, table, f"k{i}", i)
            if i % 10 == 5:
                streams_sim.stream_of(table).expire_iterators()
                streams_server.faults.inject("GetRecords", "ExpiredIteratorException", table=table)
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
    assert sync.metrics.value("streamsync_records_read_total", table=table) == records_in(table), (
        "no gap and no re-read: every record read exactly once"
    )


async def _checkpoint_then_trim(
    clients: aws.Clients, moto_endpoint: str, target: Target, index_name: str, on_trimmed: str
) -> tuple[str, Any, int]:
    """Reads 10 records and stops; 10 more are written and the oldest 15 trimmed, so the
    checkpoint now points into trimmed data."""
    table = aws.unique_name("trimmed")
    await aws.create_stream_table(clients.dynamodb, table)
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name, "on_trimmed": on_trimmed}],
    )
    for i in range(10):
        await put(clients.dynamodb, table, f"early{i}", i)
    async with running(config) as sync:
        await eventually(
            lambda: _read_all(sync, table, 10)  # type: ignore[arg-type]
        )
    for i in range(10):
        await put(clients.dynamodb, table, f"late{i}", i)
    sim = streams_sim.stream_of(table)
    [shard] = sim.shards
    checkpoint = shard.records[9][0]
    sim.trim(shard.shard_id, 15)
    return table, config, checkpoint


async def _read_all(sync: Any, table: str, count: int) -> bool:
    return bool(sync.metrics.value("streamsync_records_read_total", table=table) == count)


async def test_a_checkpoint_trimmed_away_stops_the_shard_loudly_by_default(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streamsync")
    table, config, checkpoint = await _checkpoint_then_trim(
        clients, moto_endpoint, target, index_name, "fail"
    )
    async with running(config) as sync:
        await eventually(
            lambda: _value(sync, "streamsync_trimmed_shards_total", table=table, expect=1)
        )

        async def lease_failed() -> bool:
            items = (await clients.dynamodb.scan(TableName=config.leases.table))["Items"]
            leases = [i for i in items if "shardId" in i]
            return len(leases) == 1 and "failure" in leases[0] and "leaseOwner" not in leases[0]

        await eventually(lease_failed)
        await asyncio.sleep(2)  # several taker cycles: nobody takes the failed lease again
        assert await lease_failed()
    [lost] = [r for r in caplog.records if r.getMessage().startswith("records lost")]
    assert lost.levelname == "ERROR"
    assert lost.lost_after == str(checkpoint)  # type: ignore[attr-defined]
    assert "on_trimmed=fail" in lost.getMessage()
    assert await probe.count(index_name) == 10, "nothing after the loss was indexed silently"


async def test_a_checkpoint_trimmed_away_restarts_at_the_horizon_when_configured(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streamsync")
    table, config, checkpoint = await _checkpoint_then_trim(
        clients, moto_endpoint, target, index_name, "restart_from_trim_horizon"
    )
    first_kept = streams_sim.stream_of(table).shards[0].records[0][0]
    async with running(config) as sync:
        await eventually(lambda: _read_all(sync, table, 5))
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(m.startswith("records lost") and f"after {checkpoint}" in m for m in messages)
    assert f"resumed after lost records at {first_kept}" in messages
    late = await probe.search(index_name, {"query": {"prefix": {"pk": "late"}}, "size": 20})
    assert sorted(h["_id"] for h in late) == [f"late{i}" for i in range(5, 10)]


async def _value(sync: Any, name: str, expect: float, **labels: str) -> bool:
    return bool(sync.metrics.value(name, **labels) == expect)


async def test_a_deleted_table_stops_itself_while_others_keep_flowing(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streamsync")
    doomed, kept = aws.unique_name("doomed"), aws.unique_name("kept")
    for table in (doomed, kept):
        await aws.create_stream_table(clients.dynamodb, table)
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {"table": doomed, "index": f"{index_name}-doomed"},
            {"table": kept, "index": f"{index_name}-kept"},
        ],
        leases={"discovery_interval_seconds": 1},
    )
    async with running(config) as sync:
        await put(clients.dynamodb, doomed, "d1", 1)
        await put(clients.dynamodb, kept, "k1", 1)
        await wait_until_equal(clients.dynamodb, probe, kept, f"{index_name}-kept", pk)
        await clients.dynamodb.delete_table(TableName=doomed)

        def table_failed() -> bool:
            return any(
                r.getMessage().startswith(f"table {doomed}: its stream") for r in caplog.records
            )

        await eventually(lambda: _true(table_failed()))
        for i in range(2, 6):
            await put(clients.dynamodb, kept, f"k{i}", i)
        await wait_until_equal(clients.dynamodb, probe, kept, f"{index_name}-kept", pk)
        assert any(doomed in reason for reason in sync.readiness())
    assert await probe.get(f"{index_name}-doomed", "d1") is not None


async def _true(value: bool) -> bool:
    return value


async def test_a_leased_shard_gone_from_the_stream_and_an_orphan_child_are_handled(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The root is half read, then splits and its records expire (it leaves DescribeStream)
    while its lease still points into it: the loss is logged and, under
    restart_from_trim_horizon, the lease finishes so its children are read. A later reader with
    no leases at all finds children whose parent is gone and treats them as roots."""
    caplog.set_level(logging.INFO, logger="streamsync")
    table = aws.unique_name("orphan")
    await aws.create_stream_table(clients.dynamodb, table)
    sim = streams_sim.stream_of(table)
    root = sim.open_shards()[0].shard_id
    tables = [{"table": table, "index": index_name, "on_trimmed": "restart_from_trim_horizon"}]
    config = make_config(moto_endpoint, target, aws.unique_name("leases"), tables)
    for i in range(5):
        await put(clients.dynamodb, table, f"root{i}", i)
    async with running(config) as sync:
        await eventually(lambda: _read_all(sync, table, 5))
    await put(clients.dynamodb, table, "root-unread", 5)
    sim.split(root, 2)
    for i in range(6):
        await put(clients.dynamodb, table, f"child{i}", i)
    sim.drop(root)

    async with running(config):
        await eventually(lambda: _indexed(probe, index_name, 11))
    assert any(
        r.getMessage().startswith("records lost") and r.shard == root  # type: ignore[attr-defined]
        for r in caplog.records
    )
    assert await probe.get(index_name, "root-unread") is None, "it expired unread"

    fresh = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": f"{index_name}-fresh"}],
    )
    async with running(fresh):
        await eventually(lambda: _indexed(probe, f"{index_name}-fresh", 6))


async def _indexed(probe: Probe, index: str, count: int) -> bool:
    return await probe.count(index) == count  # refreshed first; 0 while the index is missing


async def test_malformed_records_and_odd_values_never_crash_a_poller(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    """Records no real stream should carry are injected raw into the simulated shard; values a
    stream can carry (deep nesting, huge numbers, binary that is not UTF-8, keys with the id
    separator) arrive through moto. Each indexes correctly or becomes a dead letter, and the
    poller goes on."""
    table = aws.unique_name("malformed")
    await aws.create_stream_table(clients.dynamodb, table)
    sim = streams_sim.stream_of(table)
    shard = sim.open_shards()[0].shard_id
    deep: dict[str, Any] = {"S": "bottom"}
    for _ in range(31):
        deep = {"M": {"d": deep}}
    odd_items = {
        "deep": {"v": deep},
        "huge": {"v": {"N": "1E+125"}, "w": {"N": "-99999999999999999999999999999999999999"}},
        "binary": {"v": {"B": b"\xff\xfe\x00\x80"}},
        "a|b\\c": {"v": {"S": "separators in the key"}},
        "": {"v": {"S": "hash key is a single space? no: an empty-looking key"}},
    }
    odd_items[" "] = odd_items.pop("")
    for key, attributes in odd_items.items():
        await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": key}, **attributes})
    malformed = [
        {
            "eventName": "INSERT",
            "dynamodb": {
                "Keys": {"pk": {"S": "m1"}},
                "NewImage": {"pk": {"S": "m1"}, "x": {"Z": "1"}},
            },
        },
        {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "m2"}}}},
        {"eventName": "MODIFY", "dynamodb": {"NewImage": {"pk": {"S": "m3"}}}},
        {
            "eventName": "INSERT",
            "dynamodb": {"SequenceNumber": "omit", "Keys": {"pk": {"S": "m4"}}},
        },
        {
            "eventName": "INSERT",
            "dynamodb": {
                "Keys": {"pk": {"S": "m5"}},
                "NewImage": {"pk": {"S": "m5"}, "empty": {"SS": []}},
            },
        },
    ]
    for record in malformed:
        sim.inject_raw(shard, record)
    await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "after"}})
    letters = f"{index_name}-dead"
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name, "index_mappings": {"dynamic": False}}],
        dead_letters={"index": letters},
    )
    async with running(config) as sync:
        await eventually(lambda: _indexed(probe, index_name, len(odd_items) + 2))
        await eventually(lambda: _indexed(probe, letters, 4))
        assert sync.readiness() == []
    doc = await source(probe, index_name, "huge")
    assert doc["v"] == "1E+125" or doc["v"] == 1e125
    assert doc["w"] == "-99999999999999999999999999999999999999"
    assert (await source(probe, index_name, "binary"))["v"] == base64.b64encode(
        b"\xff\xfe\x00\x80"
    ).decode()
    nested = (await source(probe, index_name, "deep"))["v"]
    for _ in range(31):
        nested = nested["d"]
    assert nested == "bottom"
    assert await probe.get(index_name, "a|b\\c") is not None
    assert (await source(probe, index_name, "m5"))["empty"] == []
    assert await probe.get(index_name, "after") is not None, "the poller went on"


async def source(probe: Probe, index: str, doc_id: str) -> dict[str, Any]:
    """The document's source; it must exist."""
    found = await probe.get(index, doc_id)
    assert found is not None, f"{index}/{doc_id} is missing"
    source: dict[str, Any] = found["_source"]
    return source


@pytest.mark.slow
async def test_an_elasticsearch_outage_back_pressures_and_recovers(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    """The real node is stopped for 60 s while writes go on: the engine stays up and says why
    it is not ready, holds a bounded number of actions, checkpoints nothing unacknowledged, and
    indexes everything once the node is back."""
    table = aws.unique_name("outage")
    await aws.create_stream_table(clients.dynamodb, table)
    leases = aws.unique_name("leases")
    config = make_config(
        moto_endpoint,
        target,
        leases,
        [{"table": table, "index": index_name}],
        bulk={"queue_size": 200, "max_in_flight": 2, "max_actions": 50},
    )
    node = EsNode(os.environ["STREAMSYNC_TEST_ES_NODE"])
    port = urlsplit(target.url).port
    assert port is not None

    async def checkpoints() -> list[str]:
        items = (await clients.dynamodb.scan(TableName=leases))["Items"]
        return sorted(i["checkpoint"]["S"] for i in items if "shardId" in i)

    async with running(config) as sync:
        for i in range(50):
            await put(clients.dynamodb, table, f"before{i}", i)
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
        await asyncio.sleep(2)  # the last checkpoint is written
        before = await checkpoints()
        await asyncio.to_thread(node.stop)
        try:
            stopped_at = time.monotonic()
            most_outstanding = 0
            for i in range(600):
                await put(clients.dynamodb, table, f"during{i}", i)
                outstanding = sync.metrics.value("streamsync_queue_actions")
                most_outstanding = max(most_outstanding, int(outstanding))
            await eventually(lambda: _true(bool(sync.readiness())), within=30)
            assert any("Elasticsearch" in reason for reason in sync.readiness())
            assert await checkpoints() == before, "nothing unacknowledged is checkpointed"
            await asyncio.sleep(max(0.0, 60 - (time.monotonic() - stopped_at)))
            assert await checkpoints() == before
        finally:
            await asyncio.to_thread(node.start, port)
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk, within=120)
        assert sync.readiness() == []
    assert most_outstanding <= 200 + 2 * 50, "memory stays bounded by the queue and batches"
