"""DynamoDB and DynamoDB Streams calls, with errors sorted into what a caller can act on.

GetRecords is the hot path: it goes through `streamsync.awsjson`, so records stay in their wire
form (numbers as strings, binary as base64) and skip botocore's per-field parsing. Every other
call is rare and goes through aiobotocore.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from botocore.exceptions import ClientError

from streamsync.awsjson import AwsError, AwsJsonClient

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient

P = ParamSpec("P")
R = TypeVar("R")


def _aws_errors(
    call: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Callers handle one error vocabulary, AwsError, whichever transport a call took: botocore's
    ClientError becomes one here (the JSON transport raises it already)."""

    @functools.wraps(call)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await call(*args, **kwargs)
        except ClientError as error:
            raise AwsError.from_client_error(error) from error

    return translated


@dataclass(frozen=True)
class Shard:
    shard_id: str
    parent_id: str | None
    starting_sequence_number: int
    ending_sequence_number: int | None

    @property
    def closed(self) -> bool:
        return self.ending_sequence_number is not None

    @classmethod
    def from_api(cls, shard: Any) -> Shard:
        seq_range = shard.get("SequenceNumberRange", {})
        ending = seq_range.get("EndingSequenceNumber")
        return cls(
            shard_id=shard["ShardId"],
            parent_id=shard.get("ParentShardId"),
            starting_sequence_number=int(seq_range.get("StartingSequenceNumber", 0)),
            ending_sequence_number=int(ending) if ending is not None else None,
        )


@dataclass(frozen=True)
class TableStream:
    """What streamsync needs to know about a source table and its stream."""

    table: str
    stream_arn: str | None
    stream_enabled: bool
    view_type: str | None
    hash_key: str
    range_key: str | None
    key_types: dict[str, str] = field(default_factory=dict)  # key attribute -> S, N or B


@dataclass(frozen=True)
class RecordsPage:
    records: list[dict[str, Any]]
    next_iterator: str | None  # None: the shard is closed and read to its end


class StreamsApi:
    def __init__(
        self,
        dynamodb: DynamoDBClient,
        streams: DynamoDBStreamsClient,
        streams_json: AwsJsonClient,
    ) -> None:
        self._dynamodb = dynamodb
        self._streams = streams
        self._streams_json = streams_json  # the same endpoint as `streams`, for GetRecords

    @_aws_errors
    async def describe_table(self, table: str) -> TableStream:
        description = (await self._dynamodb.describe_table(TableName=table))["Table"]
        keys = {k["KeyType"]: k["AttributeName"] for k in description["KeySchema"]}
        spec: dict[str, Any] = dict(description.get("StreamSpecification") or {})
        return TableStream(
            table=table,
            stream_arn=description.get("LatestStreamArn"),
            stream_enabled=bool(spec.get("StreamEnabled")),
            view_type=spec.get("StreamViewType"),
            hash_key=keys["HASH"],
            range_key=keys.get("RANGE"),
            key_types={
                a["AttributeName"]: a["AttributeType"]
                for a in description.get("AttributeDefinitions", [])
                if a["AttributeName"] in keys.values()
            },
        )

    @_aws_errors
    async def item_count(self, table: str) -> int:
        """DynamoDB's approximate item count (refreshed about every six hours on AWS)."""
        description = (await self._dynamodb.describe_table(TableName=table))["Table"]
        return int(description.get("ItemCount", 0))

    @_aws_errors
    async def scan_page(
        self, table: str, segment: int, segments: int, start_key: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of one segment of a parallel Scan: (items, the key to continue from)."""
        kwargs: dict[str, Any] = {
            "TableName": table,
            "Segment": segment,
            "TotalSegments": segments,
            "ConsistentRead": True,
        }
        if start_key is not None:
            kwargs["ExclusiveStartKey"] = start_key
        page = await self._dynamodb.scan(**kwargs)
        return list(page.get("Items", [])), page.get("LastEvaluatedKey")

    @_aws_errors
    async def sample_items(self, table: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` items from the table's first Scan page (eventually consistent: a
        sample, read once)."""
        page = await self._dynamodb.scan(TableName=table, Limit=limit)
        return list(page.get("Items", []))

    @_aws_errors
    async def existing_keys(self, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Those of up to 100 keys that the table holds (BatchGetItem, keys only)."""
        names = sorted({name for key in keys for name in key})
        aliases = {f"#k{i}": name for i, name in enumerate(names)}
        request: dict[str, Any] = {
            table: {
                "Keys": keys,
                "ProjectionExpression": ", ".join(aliases),
                "ExpressionAttributeNames": aliases,
                "ConsistentRead": True,
            }
        }
        found: list[dict[str, Any]] = []
        while request:
            page = await self._dynamodb.batch_get_item(RequestItems=request)
            found.extend(page.get("Responses", {}).get(table, []))
            request = dict(page.get("UnprocessedKeys") or {})
        return found

    @_aws_errors
    async def get_item(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """The item with this key as it is now (a consistent read); None when there is none."""
        answer = await self._dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)
        item = answer.get("Item")
        return dict(item) if item is not None else None

    @_aws_errors
    async def describe_shards(self, stream_arn: str) -> list[Shard]:
        """Every shard DescribeStream lists, following its pages."""
        shards: list[Shard] = []
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": stream_arn, "Limit": 100}
            if start is not None:
                kwargs["ExclusiveStartShardId"] = start
            page = (await self._streams.describe_stream(**kwargs))["StreamDescription"]
            shards.extend(Shard.from_api(s) for s in page.get("Shards", []))
            start = page.get("LastEvaluatedShardId")
            if start is None:
                return shards

    @_aws_errors
    async def child_shards(self, stream_arn: str, shard_id: str) -> list[Shard]:
        """The children of a shard, by the cheap CHILD_SHARDS filter."""
        page = (
            await self._streams.describe_stream(
                StreamArn=stream_arn, ShardFilter={"Type": "CHILD_SHARDS", "ShardId": shard_id}
            )
        )["StreamDescription"]
        # Endpoints that ignore the filter return every shard; keep only the children.
        return [s for s in map(Shard.from_api, page.get("Shards", [])) if s.parent_id == shard_id]

    @_aws_errors
    async def get_shard_iterator(
        self, stream_arn: str, shard_id: str, kind: str, sequence_number: int | None = None
    ) -> str:
        kwargs: dict[str, Any] = {
            "StreamArn": stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": kind,
        }
        if sequence_number is not None:
            kwargs["SequenceNumber"] = str(sequence_number)
        return str((await self._streams.get_shard_iterator(**kwargs))["ShardIterator"])

    async def get_records(self, iterator: str, limit: int) -> RecordsPage:
        data = await self._streams_json.call(
            "DynamoDBStreams_20120810.GetRecords", {"ShardIterator": iterator, "Limit": limit}
        )
        return RecordsPage(data.get("Records", []), data.get("NextShardIterator"))
