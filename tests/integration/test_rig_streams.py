"""The rig's DynamoDB Streams endpoint: moto over real HTTP, plus the behaviours of real streams
that moto lacks (shard lineage, splits, trimming, iterator expiry, paging, faults), which
tests/support/streams_sim.py and tests/support/moto_server.py inject through moto's in-process
backend and a fault-injecting front."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support import aws, streams_sim
from tests.support.moto_server import StreamsServer


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


async def put(ddb: Any, table: str, pk: str, **attrs: Any) -> None:
    item = {"pk": {"S": pk}, **{k: {"N": str(v)} for k, v in attrs.items()}}
    await ddb.put_item(TableName=table, Item=item)


async def iterator(streams: Any, arn: str, shard_id: str, kind: str, seq: str | None = None) -> str:
    kwargs: dict[str, Any] = {"StreamArn": arn, "ShardId": shard_id, "ShardIteratorType": kind}
    if seq is not None:
        kwargs["SequenceNumber"] = seq
    return str((await streams.get_shard_iterator(**kwargs))["ShardIterator"])


async def test_writes_come_back_as_records_through_every_iterator_type(
    clients: aws.Clients,
) -> None:
    table = aws.unique_name("rig")
    arn = await aws.create_stream_table(clients.dynamodb, table)
    await put(clients.dynamodb, table, "k1", n=1)
    await clients.dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": "k1"}},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "2"}},
    )
    await clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "k1"}})
    [shard] = await aws.describe_all_shards(clients.streams, arn)
    shard_id = shard["ShardId"]

    horizon = await iterator(clients.streams, arn, shard_id, "TRIM_HORIZON")
    records = await aws.read_shard(clients.streams, horizon)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    assert records[0]["dynamodb"]["NewImage"] == {"pk": {"S": "k1"}, "n": {"N": "1"}}
    assert records[1]["dynamodb"]["OldImage"]["n"] == {"N": "1"}
    assert records[1]["dynamodb"]["NewImage"]["n"] == {"N": "2"}
    assert records[2]["dynamodb"]["Keys"] == {"pk": {"S": "k1"}}
    assert "NewImage" not in records[2]["dynamodb"]
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(seqs)

    second = records[1]["dynamodb"]["SequenceNumber"]
    at = await iterator(clients.streams, arn, shard_id, "AT_SEQUENCE_NUMBER", second)
    after = await iterator(clients.streams, arn, shard_id, "AFTER_SEQUENCE_NUMBER", second)
    assert [r["eventName"] for r in await aws.read_shard(clients.streams, at)] == [
        "MODIFY",
        "REMOVE",
    ]
    assert [r["eventName"] for r in await aws.read_shard(clients.streams, after)] == ["REMOVE"]

    latest = await iterator(clients.streams, arn, shard_id, "LATEST")
    page = await clients.streams.get_records(ShardIterator=latest)
    assert page["Records"] == []
    await put(clients.dynamodb, table, "k2", n=7)
    page = await clients.streams.get_records(ShardIterator=page["NextShardIterator"])
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in page["Records"]] == ["k2"]


async def test_split_closes_the_parent_and_routes_later_writes_to_children(
    clients: aws.Clients,
) -> None:
    table = aws.unique_name("split")
    arn = await aws.create_stream_table(clients.dynamodb, table)
    keys = [f"key-{i}" for i in range(40)]
    for key in keys:
        await put(clients.dynamodb, table, key, v=1)
    [root] = await aws.describe_all_shards(clients.streams, arn)
    # An iterator taken before the split still reads the parent to its end.
    before_split = await iterator(clients.streams, arn, root["ShardId"], "TRIM_HORIZON")

    children = streams_sim.stream_of(table).split(root["ShardId"], 2)
    for key in keys:
        await put(clients.dynamodb, table, key, v=2)

    shards = {s["ShardId"]: s for s in await aws.describe_all_shards(clients.streams, arn)}
    assert set(shards) == {root["ShardId"], *children}
    assert "EndingSequenceNumber" in shards[root["ShardId"]]["SequenceNumberRange"]
    assert all(shards[c]["ParentShardId"] == root["ShardId"] for c in children)

    parent_page = await clients.streams.get_records(ShardIterator=before_split)
    assert len(parent_page["Records"]) == 40
    assert "NextShardIterator" not in parent_page, "a drained closed shard has no next iterator"

    by_child: dict[str, list[Any]] = {}
    for child in children:
        it = await iterator(clients.streams, arn, child, "TRIM_HORIZON")
        by_child[child] = await aws.read_shard(clients.streams, it)
    # Every key's second write is in exactly one child, and the children share the keys.
    child_keys = [
        {r["dynamodb"]["Keys"]["pk"]["S"] for r in records} for records in by_child.values()
    ]
    assert sorted(k for ks in child_keys for k in ks) == sorted(keys)
    assert all(child_keys), "a two-way split sends some keys to each child"
    assert all(r["dynamodb"]["NewImage"]["v"] == {"N": "2"} for rs in by_child.values() for r in rs)
    # Children number above the parent, with more digits: string comparison would get it wrong.
    parent_last = parent_page["Records"][-1]["dynamodb"]["SequenceNumber"]
    child_first = by_child[children[0]][0]["dynamodb"]["SequenceNumber"]
    assert int(child_first) > int(parent_last)
    assert child_first < parent_last, "as strings the order flips"


async def test_a_key_stays_on_its_descendants_across_splits(clients: aws.Clients) -> None:
    table = aws.unique_name("lineage")
    arn = await aws.create_stream_table(clients.dynamodb, table)
    sim = streams_sim.stream_of(table)
    await put(clients.dynamodb, table, "tracked", v=0)
    for generation in range(1, 4):
        [holder] = [s for s in sim.open_shards() if s.records and s.records[-1][0]]
        sim.split(holder.shard_id, 2)
        await put(clients.dynamodb, table, "tracked", v=generation)
        # Later writes land on a child of the shard that held the key.
        [now_holding] = [s for s in sim.open_shards() if s.records]
        assert now_holding.parent_id == holder.shard_id
        holder = now_holding
    shards = await aws.describe_all_shards(clients.streams, arn)
    assert len(shards) == 7


async def test_describe_stream_pages_and_filters_children(clients: aws.Clients) -> None:
    table = aws.unique_name("pages")
    arn = await aws.create_stream_table(clients.dynamodb, table)
    sim = streams_sim.stream_of(table)
    root = sim.open_shards()[0].shard_id
    children = sim.split(root, 4)

    first = (await clients.streams.describe_stream(StreamArn=arn, Limit=2))["StreamDescription"]
    assert len(first["Shards"]) == 2
    assert first["LastEvaluatedShardId"] == first["Shards"][-1]["ShardId"]
    pages = [first["Shards"]]
    start = first["LastEvaluatedShardId"]
    while start:
        page = (
            await clients.streams.describe_stream(
                StreamArn=arn, Limit=2, ExclusiveStartShardId=start
            )
        )["StreamDescription"]
        pages.append(page["Shards"])
        start = page.get("LastEvaluatedShardId")
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [s["ShardId"] for p in pages for s in p] == [root, *children]

    filtered = await clients.streams.describe_stream(
        StreamArn=arn, ShardFilter={"Type": "CHILD_SHARDS", "ShardId": root}
    )
    assert [s["ShardId"] for s in filtered["StreamDescription"]["Shards"]] == children


async def test_trimmed_positions_raise(clients: aws.Clients) -> None:
    table = aws.unique_name("trim")
    arn = await aws.create_stream_table(clients.dynamodb, table)
    for i in range(5):
        await put(clients.dynamodb, table, f"k{i}", v=i)
    sim = streams_sim.stream_of(table)
    [shard] = sim.open_shards()
    old_horizon = await iterator(clients.streams, arn, shard.shard_id, "TRIM_HORIZON")
    first_seq = str(shard.records[0][0])

    sim.trim(shard.shard_id, 2)

    with pytest.raises(ClientError) as stale:
        await clients.streams.get_records(ShardIterator=old_horizon)
    assert error_code(stale) == "TrimmedDataAccessException"
    with pytest.raises(ClientError) as at_trimmed:
        await iterator(clients.streams, arn, shard.shard_id, "AT_SEQUENCE_NUMBER", first_seq)
    assert error_code(at_trimmed) == "TrimmedDataAccessException"
    new_horizon = await iterator(clients.streams, arn, shard.shard_id, "TRIM_HORIZON")
    remaining = await aws.read_shard(clients.streams, new_horizon)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in remaining] == ["k2", "k3", "k4"]


async def test_dropped_parent_leaves_the_stream_but_stays_named(clients: aws.Clients) -> None:
    table = aws.unique_name("drop")
    arn = await aws.create_stream_table(clients.dynamodb, table)
    sim = streams_sim.stream_of(table)
    root = sim.open_shards()[0].shard_id
    [child] = [sim.rollover(root)]

    sim.drop(root)

    [listed] = await aws.describe_all_shards(clients.streams, arn)
    assert listed["ShardId"] == child
    assert listed["ParentShardId"] == root
    with pytest.raises(ClientError) as gone:
        await iterator(clients.streams, arn, root, "TRIM_HORIZON")
    assert error_code(gone) == "ResourceNotFoundException"


async def test_iterators_expire(clients: aws.Clients) -> None:
    table = aws.unique_name("expire")
    arn = await aws.create_stream_table(clients.dynamodb, table)
    await put(clients.dynamodb, table, "k", v=1)
    sim = streams_sim.stream_of(table)
    shard_id = sim.open_shards()[0].shard_id
    it = await iterator(clients.streams, arn, shard_id, "TRIM_HORIZON")

    sim.expire_iterators()
    with pytest.raises(ClientError) as expired:
        await clients.streams.get_records(ShardIterator=it)
    assert error_code(expired) == "ExpiredIteratorException"

    sim.iterator_ttl = 0.2
    it = await iterator(clients.streams, arn, shard_id, "TRIM_HORIZON")
    assert len((await clients.streams.get_records(ShardIterator=it))["Records"]) == 1
    await asyncio.sleep(0.3)
    with pytest.raises(ClientError) as aged:
        await clients.streams.get_records(ShardIterator=it)
    assert error_code(aged) == "ExpiredIteratorException"


async def test_injected_errors_reach_the_client_as_aws_errors(
    clients: aws.Clients, streams_server: StreamsServer
) -> None:
    table = aws.unique_name("faults")
    other = aws.unique_name("faults-other")
    arn = await aws.create_stream_table(clients.dynamodb, table)
    await aws.create_stream_table(clients.dynamodb, other)
    faults = streams_server.faults
    faults.inject("DescribeStream", "LimitExceededException", times=2)
    faults.inject("PutItem", "InternalServerError", status=500, table=table)
    faults.inject("PutItem", "ProvisionedThroughputExceededException", table=other)

    for _ in range(2):
        with pytest.raises(ClientError) as limited:
            await clients.streams.describe_stream(StreamArn=arn)
        assert error_code(limited) == "LimitExceededException"
    assert (await clients.streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]

    with pytest.raises(ClientError) as server_error:
        await put(clients.dynamodb, table, "k", v=1)
    assert error_code(server_error) == "InternalServerError"
    assert server_error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    with pytest.raises(ClientError) as throttled:
        await put(clients.dynamodb, other, "k", v=1)
    assert error_code(throttled) == "ProvisionedThroughputExceededException"
    await put(clients.dynamodb, table, "k", v=1)  # each fault applied once
    assert faults.count("PutItem", table) == 2
    assert faults.count("DescribeStream") == 3


async def test_standard_retries_get_past_injected_throttling(
    moto_endpoint: str, streams_server: StreamsServer
) -> None:
    from aiobotocore.config import AioConfig

    retrying = AioConfig(retries={"total_max_attempts": 4, "mode": "standard"})
    async with aws.clients(moto_endpoint, retrying) as c:
        table = aws.unique_name("retry")
        await aws.create_stream_table(c.dynamodb, table)
        streams_server.faults.inject("PutItem", "ThrottlingException", table=table, times=2)
        await put(c.dynamodb, table, "k", v=1)
        item = await c.dynamodb.get_item(TableName=table, Key={"pk": {"S": "k"}})
    assert item["Item"]["v"] == {"N": "1"}
    assert streams_server.faults.count("PutItem", table) == 3


async def test_injected_delay_stalls_only_the_matching_call(
    clients: aws.Clients, streams_server: StreamsServer
) -> None:
    table = aws.unique_name("delay")
    await aws.create_stream_table(clients.dynamodb, table)
    streams_server.faults.inject("PutItem", delay=2.0, table=table)

    slow = asyncio.create_task(put(clients.dynamodb, table, "slow", v=1))
    await asyncio.sleep(0.1)
    await clients.dynamodb.describe_table(TableName=table)
    assert not slow.done(), "other calls pass while the delayed one is held"
    await slow
    item = await clients.dynamodb.get_item(TableName=table, Key={"pk": {"S": "slow"}})
    assert item["Item"]["v"] == {"N": "1"}, "a delayed call still goes through"


async def test_conditional_writes_are_atomic_under_contention(clients: aws.Clients) -> None:
    """Without the server's request lock, moto lets several racers win the same condition."""
    table = aws.unique_name("race")
    await clients.dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    async def claim(lease: str, worker: int) -> bool:
        try:
            await clients.dynamodb.put_item(
                TableName=table,
                Item={"leaseKey": {"S": lease}, "owner": {"S": f"w{worker}"}},
                ConditionExpression="attribute_not_exists(leaseKey)",
            )
        except clients.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    for round_ in range(20):
        wins = await asyncio.gather(*(claim(f"lease-{round_}", w) for w in range(12)))
        assert sum(wins) == 1, f"round {round_}: {sum(wins)} winners"
