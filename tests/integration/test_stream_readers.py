"""The same stream cases against both readers: `StreamsApi` on moto (with the test rig's stream
simulator for the split, which moto lacks) and streamsync.testing's `InMemoryStream`. The unit
tests of the coordinator and the shard reader trust the in-memory stream, so it must answer as
the real one does: shards and their lineage, iterators of each kind, a closed shard's end, an
unknown stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiobotocore.credentials import AioCredentials

from streamsync.awsjson import AwsError, AwsJsonClient
from streamsync.source.client import StreamsApi
from streamsync.source.ports import StreamReader
from streamsync.testing import InMemoryStream
from tests.support import aws, streams_sim

KEYS = ["a", "b", "c"]


@dataclass
class Written:
    """A stream with three records in one shard, then split in two, then one more record."""

    reader: StreamReader
    stream_arn: str
    parent: str


async def _on_moto(clients: aws.Clients, endpoint: str, http: aiohttp.ClientSession) -> Written:
    table = aws.unique_name("readers")
    arn = await aws.create_stream_table(clients.dynamodb, table)
    for key in KEYS:
        await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": key}})
    sim = streams_sim.stream_of(table)
    (parent,) = [shard["ShardId"] for shard in await aws.describe_all_shards(clients.streams, arn)]
    sim.split(parent)
    await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "d"}})
    json = AwsJsonClient(endpoint, aws.REGION, AioCredentials("testing", "testing"), http)
    return Written(StreamsApi(clients.dynamodb, clients.streams, json), arn, parent)


def _in_memory() -> Written:
    stream, arn, parent = InMemoryStream(), "arn:aws:dynamodb:us-east-1:1:table/t/stream/x", "p"
    stream.add_shard(arn, parent)
    for key in KEYS:
        stream.write(arn, parent, {"pk": {"S": key}}, new_image={"pk": {"S": key}})
    stream.split(arn, parent, "c1", "c2")
    stream.write(arn, "c1", {"pk": {"S": "d"}}, new_image={"pk": {"S": "d"}})
    return Written(stream, arn, parent)


@pytest.fixture(params=["moto", "memory"])
async def written(
    request: pytest.FixtureRequest, clients: aws.Clients, moto_endpoint: str
) -> AsyncIterator[Written]:
    if request.param == "memory":
        yield _in_memory()
        return
    async with aiohttp.ClientSession() as http:
        yield await _on_moto(clients, moto_endpoint, http)


async def _read_to_end(reader: StreamReader, iterator: str) -> tuple[list[str], bool]:
    """The keys read until the shard's end or an empty page; whether the end was reached."""
    keys: list[str] = []
    following: str | None = iterator
    while following is not None:
        page = await reader.get_records(following, 1000)
        keys += [record["dynamodb"]["Keys"]["pk"]["S"] for record in page.records]
        if not page.records and page.next_iterator is not None:
            return keys, False
        following = page.next_iterator
    return keys, True


async def test_shards_and_their_lineage(written: Written) -> None:
    shards = {s.shard_id: s for s in await written.reader.describe_shards(written.stream_arn)}
    parent = shards.pop(written.parent)
    assert parent.closed
    assert len(shards) == 2
    assert all(s.parent_id == written.parent and not s.closed for s in shards.values())
    children = await written.reader.child_shards(written.stream_arn, written.parent)
    assert {c.shard_id for c in children} == set(shards)


async def test_iterators_of_each_kind_and_a_closed_shards_end(written: Written) -> None:
    reader, arn = written.reader, written.stream_arn
    start = await reader.get_shard_iterator(arn, written.parent, "TRIM_HORIZON")
    assert await _read_to_end(reader, start) == (KEYS, True), "all of it, then the end"
    first = (await reader.get_records(start, 1)).records[0]
    after = await reader.get_shard_iterator(
        arn, written.parent, "AFTER_SEQUENCE_NUMBER", int(first["dynamodb"]["SequenceNumber"])
    )
    assert await _read_to_end(reader, after) == (KEYS[1:], True)
    latest = [
        await _read_to_end(reader, await reader.get_shard_iterator(arn, child.shard_id, "LATEST"))
        for child in await reader.child_shards(arn, written.parent)
    ]
    assert latest == [([], False), ([], False)], "open shards: nothing after now, no end"
    from_start = [
        await _read_to_end(reader, await reader.get_shard_iterator(arn, c.shard_id, "TRIM_HORIZON"))
        for c in await reader.child_shards(arn, written.parent)
    ]
    assert sorted(key for keys, _ in from_start for key in keys) == ["d"]


async def test_an_unknown_stream_is_resource_not_found(written: Written) -> None:
    with pytest.raises(AwsError) as raised:
        await written.reader.describe_shards(
            written.stream_arn.replace("/stream/", "-gone/stream/")
        )
    assert raised.value.code == "ResourceNotFoundException"
