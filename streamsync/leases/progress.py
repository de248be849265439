"""Backfill checkpoints: how far each segment of a table's parallel scan got, kept in the lease
table (an item per segment) so that an interrupted backfill resumes where it stopped, with the
same split and start time (hence the same versions), whichever process picks it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamsync.leases import requests
from streamsync.leases.requests import KEY, Request
from streamsync.leases.table import scan_items

if TYPE_CHECKING:
    from streamsync.awsjson import AwsJsonClient

BACKFILL_KIND = "backfill"


@dataclass(frozen=True)
class SegmentProgress:
    """How far one segment of a table's backfill scan got: its checkpoint."""

    table: str
    segments: int
    segment: int
    started_at: float  # when the backfill began: its images' version comes from it
    last_key: str | None = None  # JSON of the Scan's LastEvaluatedKey; None: from the start
    done: bool = False
    items: int = 0

    @property
    def key(self) -> str:
        return f"backfill|{self.table}|{self.segments}|{self.segment}"


def to_item(progress: SegmentProgress) -> dict[str, Any]:
    item: dict[str, Any] = {
        KEY: {"S": progress.key},
        "kind": {"S": BACKFILL_KIND},
        "tableName": {"S": progress.table},
        "segments": {"N": str(progress.segments)},
        "segment": {"N": str(progress.segment)},
        "startedAt": {"N": f"{progress.started_at:.3f}"},
        "done": {"BOOL": progress.done},
        "items": {"N": str(progress.items)},
    }
    if progress.last_key is not None:
        item["lastKey"] = {"S": progress.last_key}
    return item


def from_item(item: dict[str, Any]) -> SegmentProgress:
    return SegmentProgress(
        table=item["tableName"]["S"],
        segments=int(item["segments"]["N"]),
        segment=int(item["segment"]["N"]),
        started_at=float(item["startedAt"]["N"]),
        last_key=item["lastKey"]["S"] if "lastKey" in item else None,
        done=item["done"]["BOOL"],
        items=int(item["items"]["N"]),
    )


def save(lease_table: str, progress: SegmentProgress) -> Request:
    return Request("PutItem", {"TableName": lease_table, "Item": to_item(progress)})


def scan(lease_table: str, table: str) -> Request:
    return requests.scan(
        lease_table,
        FilterExpression="kind = :kind AND tableName = :table",
        ExpressionAttributeValues={":kind": {"S": BACKFILL_KIND}, ":table": {"S": table}},
    )


class BackfillProgress:
    def __init__(self, client: AwsJsonClient, lease_table: str) -> None:
        self._client = client
        self._lease_table = lease_table

    async def load(self, table: str) -> list[SegmentProgress]:
        """Every segment's checkpoint of `table`'s backfill; none when it never started."""
        items = scan_items(self._client, scan(self._lease_table, table))
        return [from_item(item) async for item in items]

    async def save(self, progress: SegmentProgress) -> None:
        request = save(self._lease_table, progress)
        await self._client.call(request.target, request.payload)

    async def clear(self, table: str) -> None:
        """Forgets `table`'s backfill, so that the next one starts over."""
        for progress in await self.load(table):
            request = requests.delete(self._lease_table, progress.key)
            await self._client.call(request.target, request.payload)
