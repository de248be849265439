"""The stream a shard reader and the coordinator read: what they need of DynamoDB Streams.

`StreamsApi` is the one that talks to AWS; `streamsync.testing.InMemoryStream` keeps shards and
records in memory, so readers and the coordinator can be tested without a network.
"""

from __future__ import annotations

from typing import Protocol

from streamsync.source.client import RecordsPage, Shard


class StreamReader(Protocol):
    async def describe_shards(self, stream_arn: str) -> list[Shard]:
        """Every shard of the stream, closed ones included."""
        ...

    async def child_shards(self, stream_arn: str, shard_id: str) -> list[Shard]:
        """The children of a shard (after a split or rollover); may lag behind the split."""
        ...

    async def get_shard_iterator(
        self, stream_arn: str, shard_id: str, kind: str, sequence_number: int | None = None
    ) -> str:
        """`kind`: TRIM_HORIZON, LATEST or AFTER_SEQUENCE_NUMBER (with `sequence_number`)."""
        ...

    async def get_records(self, iterator: str, limit: int) -> RecordsPage:
        """Raises AwsError: ExpiredIteratorException, TrimmedDataAccessException, ..."""
        ...
