"""Worker heartbeats: an item per worker in the lease table, beside the leases.

A worker that holds no lease yet would otherwise be invisible until it had stolen its share one
lease per cycle; with a heartbeat the others count it at once and make room for it. The leases'
scan reads these items too (see LeaseTable.scan), so heartbeats cost no read of their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from streamsync.awsjson import AwsError
from streamsync.leases import requests
from streamsync.leases.model import LIVENESS_BY_HEARTBEAT, WorkerBeat, worker_key
from streamsync.leases.requests import KEY, Request

if TYPE_CHECKING:
    from streamsync.awsjson import AwsJsonClient

WORKER_KIND = "worker"


def beat(table: str, worker_id: str, streams: Iterable[str], now: float) -> Request:
    """Bumps the heartbeat's counter: the others judge it alive by the counter moving, not by
    `renewedAt`, since workers' clocks disagree."""
    return Request(
        "UpdateItem",
        {
            "TableName": table,
            "Key": {KEY: {"S": worker_key(worker_id)}},
            "UpdateExpression": (
                "SET kind = :kind, workerId = :id, streams = :streams, renewedAt = :now, "
                "protocol = :protocol, leaseCounter = if_not_exists(leaseCounter, :zero) + :one"
            ),
            "ExpressionAttributeValues": {
                ":kind": {"S": WORKER_KIND},
                ":id": {"S": worker_id},
                ":streams": {"SS": sorted(streams)},
                ":now": {"N": f"{now:.3f}"},
                ":protocol": {"N": str(LIVENESS_BY_HEARTBEAT)},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
            },
        },
    )


def from_item(item: dict[str, Any]) -> WorkerBeat:
    renewed = item.get("renewedAt")
    return WorkerBeat(
        worker_id=item["workerId"]["S"],
        counter=int(item["leaseCounter"]["N"]),
        streams=frozenset(item.get("streams", {}).get("SS", [])),
        renewed_at=float(renewed["N"]) if renewed else None,
        protocol=int(item.get("protocol", {"N": "1"})["N"]),
    )


class Heartbeats:
    def __init__(self, client: AwsJsonClient, table: str) -> None:
        self._client = client
        self._table = table

    async def beat(self, worker_id: str, streams: Iterable[str]) -> None:
        request = beat(self._table, worker_id, streams, time.time())
        await self._client.call(request.target, request.payload)

    async def remove(self, worker_id: str) -> None:
        """This worker is leaving: the others stop counting it at once."""
        request = requests.delete(self._table, worker_key(worker_id))
        await self._client.call(request.target, request.payload)

    async def delete(self, seen: WorkerBeat) -> None:
        """Deletes a heartbeat, unless it beat again since it was seen."""
        request = requests.delete(self._table, seen.key, seen.counter)
        try:
            await self._client.call(request.target, request.payload)
        except AwsError as error:
            if error.code != requests.CONDITION_FAILED:
                raise
