"""Worker heartbeats: an item per worker in the lease table, beside the leases, and the roster.

A worker that holds no lease yet would otherwise be invisible until it had stolen its share one
lease per cycle; with a heartbeat the others count it at once and make room for it.

The roster is one more item: the workers of this version that joined (`members`) and a counter
of lease changes (`changes`: bumped after every create, take, release, finish, fail and delete,
and when a worker joins, leaves or reads other streams). A taker cycle reads the roster and the
heartbeats it knows of (a glance: a few strongly consistent reads) and scans the whole table only
when the roster moved, so an idle table is not read whole every cycle (see LeaseScanner.cycle).
Workers of an older version neither join nor bump it: while one may read beside, every cycle
scans (Liveness.renewals).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamsync.awsjson import AwsError
from streamsync.leases import requests
from streamsync.leases.model import LIVENESS_BY_HEARTBEAT, WorkerBeat, worker_key
from streamsync.leases.requests import KEY, Request

if TYPE_CHECKING:
    from streamsync.awsjson import AwsJsonClient

WORKER_KIND = "worker"
ROSTER_KIND = "roster"
ROSTER_KEY = "roster|"  # like no lease key (a stream ARN and shard) nor worker key ("worker|id")
GLANCE_KEYS_AT_ONCE = 100  # BatchGetItem's limit


@dataclass(frozen=True)
class Glance:
    """The roster and the heartbeats asked for, as one strongly consistent read found them."""

    members: frozenset[str]
    changes: int
    beats: list[WorkerBeat]


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
            # The counter before: none when the item was new (a worker joining, or coming back
            # after the others deleted its heartbeat), and then it joins the roster.
            "ReturnValues": "UPDATED_OLD",
        },
    )


def roster_update(table: str, expression: str, worker_id: str | None = None) -> Request:
    """`expression` changes `members` (by `:me`, this worker's id); every update also bumps
    `changes`, so that a glance sees the table moved."""
    values: dict[str, Any] = {":kind": {"S": ROSTER_KIND}, ":one": {"N": "1"}}
    if worker_id is not None:
        values[":me"] = {"SS": [worker_id]}
    return Request(
        "UpdateItem",
        {
            "TableName": table,
            "Key": {KEY: {"S": ROSTER_KEY}},
            "UpdateExpression": f"SET kind = :kind ADD changes :one{expression}",
            "ExpressionAttributeValues": values,
        },
    )


def join(table: str, worker_id: str) -> Request:
    return roster_update(table, ", members :me", worker_id)


def leave(table: str, worker_id: str) -> Request:
    return roster_update(table, " DELETE members :me", worker_id)


def changed(table: str) -> Request:
    return roster_update(table, "")


def glance(table: str, worker_ids: Iterable[str]) -> list[Request]:
    """Strongly consistent reads of the roster and these workers' heartbeats: a heartbeat read
    behind its last write would make a live worker look dead."""
    keys = [ROSTER_KEY, *(worker_key(worker) for worker in sorted(set(worker_ids)))]
    return [
        Request(
            "BatchGetItem",
            {
                "RequestItems": {
                    table: {
                        "Keys": [{KEY: {"S": key}} for key in keys[i : i + GLANCE_KEYS_AT_ONCE]],
                        "ConsistentRead": True,
                    }
                }
            },
        )
        for i in range(0, len(keys), GLANCE_KEYS_AT_ONCE)
    ]


def glance_from(items: Iterable[dict[str, Any]]) -> Glance:
    members: frozenset[str] = frozenset()
    changes = 0
    beats = []
    for item in items:
        kind = item.get("kind", {}).get("S")
        if kind == ROSTER_KIND:
            members = frozenset(item.get("members", {}).get("SS", []))
            changes = int(item.get("changes", {"N": "0"})["N"])
        elif kind == WORKER_KIND:
            beats.append(from_item(item))
    return Glance(members, changes, beats)


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
        self._joined = False  # this worker is in the roster (as far as this process knows)
        self._streams: frozenset[str] = frozenset()  # as the roster last heard of them

    async def beat(self, worker_id: str, streams: Iterable[str]) -> None:
        streams = frozenset(streams)
        answer = await self._send(beat(self._table, worker_id, streams, time.time()))
        if not self._joined or "leaseCounter" not in answer.get("Attributes", {}):
            self._joined = False  # until the roster has it: the next beat tries again
            await self._send(join(self._table, worker_id))
            self._joined, self._streams = True, streams
        elif streams != self._streams:  # the others regroup their balancing
            await self._send(changed(self._table))
            self._streams = streams

    async def remove(self, worker_id: str) -> None:
        """This worker is leaving: the others stop counting it at once."""
        await self._send(requests.delete(self._table, worker_key(worker_id)))
        self._joined = False
        await self._send(leave(self._table, worker_id))

    async def delete(self, seen: WorkerBeat) -> None:
        """Deletes a heartbeat, unless it beat again since it was seen. The roster lets it go
        first: if it beats again in between, the delete is refused and it is put back (deleted
        first, a beat landing before its leave would leave it alive and out of the roster)."""
        await self._send(leave(self._table, seen.worker_id))
        try:
            await self._send(requests.delete(self._table, seen.key, seen.counter))
        except AwsError as error:
            if error.code != requests.CONDITION_FAILED:
                raise
            await self._send(join(self._table, seen.worker_id))

    async def glance(self, worker_ids: Iterable[str]) -> Glance:
        items: list[dict[str, Any]] = []
        for request in glance(self._table, worker_ids):
            payload = request.payload
            while payload["RequestItems"]:  # keys DynamoDB left unread for now come back
                answer = await self._send(Request(request.action, payload))
                items += answer.get("Responses", {}).get(self._table, [])
                payload = {"RequestItems": answer.get("UnprocessedKeys") or {}}
        return glance_from(items)

    async def changed(self) -> None:
        await self._send(changed(self._table))

    async def _send(self, request: Request) -> dict[str, Any]:
        return await self._client.call(request.target, request.payload)
