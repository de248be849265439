"""The lease table in DynamoDB: every write is conditional on what the writer last saw (fencing).

Reads are strongly consistent scans; each write states the counter (and, for an owned lease, the
owner) it expects and bumps the counter, so of two workers racing for a lease exactly one wins, and
a worker that was stalled past its lease gets `LeaseLost` instead of overwriting a newer owner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from streamsync.awsjson import AwsError, AwsJsonClient
from streamsync.errors import StreamsyncError
from streamsync.leases.model import (
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    WorkerBeat,
    lease_key,
    worker_key,
)

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

KEY = "leaseKey"
WORKER_KIND = "worker"
BACKFILL_KIND = "backfill"


@dataclass(frozen=True)
class LeaseScan:
    leases: list[Lease]
    workers: list[WorkerBeat]


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


class LeaseLost(Exception):
    """The lease changed since this worker last saw it: someone else owns it now."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"lost the lease on {lease.shard_id} of {lease.table}")
        self.lease = lease


def _to_item(lease: Lease) -> dict[str, Any]:
    item: dict[str, Any] = {
        KEY: {"S": lease.key},
        "streamArn": {"S": lease.stream_arn},
        "shardId": {"S": lease.shard_id},
        "tableName": {"S": lease.table},
        "leaseCounter": {"N": str(lease.counter)},
        "checkpoint": {"S": lease.checkpoint},
        "checkpointVersion": {"N": str(lease.checkpoint_version)},
        "ownerSwitchesSinceCheckpoint": {"N": str(lease.owner_switches)},
    }
    if lease.parent_shard_ids:
        item["parentShardIds"] = {"L": [{"S": p} for p in lease.parent_shard_ids]}
    if lease.owner is not None:
        item["leaseOwner"] = {"S": lease.owner}
    if lease.start_after is not None:
        item["startAfter"] = {"N": f"{lease.start_after:.3f}"}
    if lease.wanted_since is not None:
        item["wantedSince"] = {"N": f"{lease.wanted_since:.3f}"}
    if lease.version_floor:
        item["versionFloor"] = {"N": str(lease.version_floor)}
    if lease.index is not None:
        item["indexName"] = {"S": lease.index}
    return item


def _from_item(item: dict[str, Any]) -> Lease:
    renewed = item.get("renewedAt")
    finished = item.get("finishedAt")
    failure = item.get("failure")
    age = item.get("iteratorAgeSeconds")
    start_after, wanted_since = item.get("startAfter"), item.get("wantedSince")
    return Lease(
        stream_arn=item["streamArn"]["S"],
        shard_id=item["shardId"]["S"],
        table=item["tableName"]["S"],
        parent_shard_ids=tuple(p["S"] for p in item.get("parentShardIds", {}).get("L", [])),
        owner=item["leaseOwner"]["S"] if "leaseOwner" in item else None,
        counter=int(item["leaseCounter"]["N"]),
        checkpoint=item["checkpoint"]["S"],
        checkpoint_version=int(item.get("checkpointVersion", {"N": "0"})["N"]),
        owner_switches=int(item.get("ownerSwitchesSinceCheckpoint", {"N": "0"})["N"]),
        renewed_at=float(renewed["N"]) if renewed else None,
        finished_at=float(finished["N"]) if finished else None,
        failure=failure["S"] if failure else None,
        iterator_age=float(age["N"]) if age else None,
        start_after=float(start_after["N"]) if start_after else None,
        wanted_since=float(wanted_since["N"]) if wanted_since else None,
        version_floor=int(item.get("versionFloor", {"N": "0"})["N"]),
        index=item["indexName"]["S"] if "indexName" in item else None,
    )


def _beat_from_item(item: dict[str, Any]) -> WorkerBeat:
    renewed = item.get("renewedAt")
    return WorkerBeat(
        worker_id=item["workerId"]["S"],
        counter=int(item["leaseCounter"]["N"]),
        streams=frozenset(item.get("streams", {}).get("SS", [])),
        renewed_at=float(renewed["N"]) if renewed else None,
    )


def _conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class LeaseTable:
    def __init__(self, client: DynamoDBClient, client_json: AwsJsonClient, name: str) -> None:
        self._client = client
        # The same endpoint as `client`, for the writes a worker makes per lease (renewals above
        # all: a thousand leases at the default failover time are 300 a second).
        self._client_json = client_json
        self.name = name

    async def exists(self) -> bool:
        try:
            await self._client.describe_table(TableName=self.name)
        except self._client.exceptions.ResourceNotFoundException:
            return False
        return True

    async def ensure_exists(self) -> None:
        """Creates the table (on-demand billing) when missing and waits until it is active."""
        if not await self.exists():
            try:
                await self._client.create_table(
                    TableName=self.name,
                    KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
            except self._client.exceptions.ResourceInUseException:
                pass  # another worker created it first
            except ClientError as error:
                raise StreamsyncError(
                    f"lease table {self.name}: cannot create it "
                    f"({error.response['Error']['Code']}); create it yourself (hash key "
                    f"'{KEY}', type S) or grant dynamodb:CreateTable"
                ) from error
        for _ in range(300):
            status = (await self._client.describe_table(TableName=self.name))["Table"]
            if status.get("TableStatus") == "ACTIVE":
                return
            await asyncio.sleep(1)
        raise StreamsyncError(f"lease table {self.name}: not ACTIVE after 5 minutes")

    async def scan(self) -> LeaseScan:
        """Every lease and worker heartbeat: one strongly consistent scan."""
        scan = LeaseScan([], [])
        kwargs: dict[str, Any] = {"TableName": self.name, "ConsistentRead": True}
        while True:
            page = await self._client.scan(**kwargs)
            for item in page.get("Items", []):
                kind = item.get("kind", {}).get("S")
                if kind == WORKER_KIND:
                    scan.workers.append(_beat_from_item(item))
                elif kind is None:
                    scan.leases.append(_from_item(item))
            if "LastEvaluatedKey" not in page:
                return scan
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def backfill_progress(self, table: str) -> list[SegmentProgress]:
        found: list[SegmentProgress] = []
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "ConsistentRead": True,
            "FilterExpression": "kind = :kind AND tableName = :table",
            "ExpressionAttributeValues": {":kind": {"S": BACKFILL_KIND}, ":table": {"S": table}},
        }
        while True:
            page = await self._client.scan(**kwargs)
            for item in page.get("Items", []):
                found.append(
                    SegmentProgress(
                        table=table,
                        segments=int(item["segments"]["N"]),
                        segment=int(item["segment"]["N"]),
                        started_at=float(item["startedAt"]["N"]),
                        last_key=item["lastKey"]["S"] if "lastKey" in item else None,
                        done=item["done"]["BOOL"],
                        items=int(item["items"]["N"]),
                    )
                )
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def save_progress(self, progress: SegmentProgress) -> None:
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
        await self._client.put_item(TableName=self.name, Item=item)

    async def clear_backfill(self, table: str) -> None:
        for progress in await self.backfill_progress(table):
            await self._client.delete_item(TableName=self.name, Key={KEY: {"S": progress.key}})

    async def heartbeat(self, worker_id: str, streams: Iterable[str]) -> None:
        await self._client.update_item(
            TableName=self.name,
            Key={KEY: {"S": worker_key(worker_id)}},
            UpdateExpression=(
                "SET kind = :kind, workerId = :id, streams = :streams, renewedAt = :now, "
                "leaseCounter = if_not_exists(leaseCounter, :zero) + :one"
            ),
            ExpressionAttributeValues={
                ":kind": {"S": WORKER_KIND},
                ":id": {"S": worker_id},
                ":streams": {"SS": sorted(streams)},
                ":now": {"N": f"{time.time():.3f}"},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
            },
        )

    async def remove_heartbeat(self, worker_id: str) -> None:
        """This worker is leaving: the others stop counting it at once."""
        await self._client.delete_item(TableName=self.name, Key={KEY: {"S": worker_key(worker_id)}})

    async def delete_worker(self, seen: WorkerBeat) -> None:
        """Deletes a heartbeat, unless it beat again since it was seen."""
        try:
            await self._client.delete_item(
                TableName=self.name,
                Key={KEY: {"S": seen.key}},
                ConditionExpression="leaseCounter = :seen",
                ExpressionAttributeValues={":seen": {"N": str(seen.counter)}},
            )
        except ClientError as error:
            if not _conditional_failure(error):
                raise

    async def create(self, lease: Lease) -> bool:
        """Creates the lease unless one exists for the shard; True when this call created it."""
        try:
            await self._client.put_item(
                TableName=self.name,
                Item=_to_item(lease),
                ConditionExpression="attribute_not_exists(leaseKey)",
            )
        except ClientError as error:
            if _conditional_failure(error):
                return False
            raise
        return True

    async def _update(
        self,
        seen: Lease,
        changes: Lease,
        set_expression: str,
        values: dict[str, Any],
        remove_owner: bool = False,
        require_owner: bool = True,
        remove: str | None = None,
        unfinished: bool = False,
    ) -> Lease:
        condition = "leaseCounter = :seen"
        values = {**values, ":seen": {"N": str(seen.counter)}}
        if unfinished:
            # Checkpoints and shard ends: only by the lease's owner, and never over SHARD_END
            # (whatever the counter says), or a finished shard would be read again.
            if seen.owner is None:
                raise LeaseLost(seen)
            condition += " AND checkpoint <> :shard_end"
            values[":shard_end"] = {"S": SHARD_END}
        if require_owner and seen.owner is not None:
            condition += " AND leaseOwner = :seen_owner"
            values[":seen_owner"] = {"S": seen.owner}
        expression = f"SET leaseCounter = :next, {set_expression}"
        values[":next"] = {"N": str(seen.counter + 1)}
        removed = [name for name in ("leaseOwner" if remove_owner else None, remove) if name]
        if removed:
            expression += " REMOVE " + ", ".join(removed)
        try:
            await self._client_json.call(
                "DynamoDB_20120810.UpdateItem",
                {
                    "TableName": self.name,
                    "Key": {KEY: {"S": seen.key}},
                    "UpdateExpression": expression,
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": values,
                },
            )
        except AwsError as error:
            if error.code == "ConditionalCheckFailedException":
                raise LeaseLost(seen) from None
            raise
        return changes

    async def take(self, seen: Lease, owner: str, index: str | None = None) -> Lease:
        """Takes a lease as it was seen (unowned, expired or stolen); LeaseLost if it changed.
        `index`: the index its records go to, recorded where the lease does not say yet.

        A lease written by an older streamsync with checkpoint LATEST (a position each reader
        used to resolve anew) becomes a durable start here: TRIM_HORIZON, skipping what was
        created before now."""
        now = time.time()
        switches = seen.owner_switches + (seen.owner != owner)
        taken = replace(
            seen, owner=owner, counter=seen.counter + 1, owner_switches=switches, failure=None
        )
        expression = (
            "leaseOwner = :owner, renewedAt = :now, ownerSwitchesSinceCheckpoint = :switches"
        )
        values = {
            ":owner": {"S": owner},
            ":now": {"N": f"{now:.3f}"},
            ":switches": {"N": str(switches)},
        }
        if seen.checkpoint == LATEST:
            taken = replace(taken, checkpoint=TRIM_HORIZON, start_after=now)
            expression += ", checkpoint = :horizon, startAfter = :now"
            values[":horizon"] = {"S": TRIM_HORIZON}
        if seen.index is None and index is not None:
            taken = replace(taken, index=index)
            expression += ", indexName = :index"
            values[":index"] = {"S": index}
        return await self._update(
            seen,
            replace(taken, renewed_at=now),
            expression,
            values,
            require_owner=False,
            remove="failure",
        )

    async def hold_version_floor(self, held: Lease, version: int) -> Lease:
        """Records, before records read after a loss are numbered, where their numbering
        starts, so that a later owner never numbers them lower (see Lease.version_floor)."""
        return await self._update(
            held,
            replace(held, counter=held.counter + 1, version_floor=version),
            "versionFloor = :floor",
            {":floor": {"N": str(version)}},
        )

    async def renew(self, held: Lease, iterator_age: float = 0.0) -> Lease:
        """Renews a held lease; the reader's iterator age goes along, for `streamsync status`."""
        now = time.time()
        return await self._update(
            held,
            replace(held, counter=held.counter + 1, renewed_at=now, iterator_age=iterator_age),
            "renewedAt = :now, iteratorAgeSeconds = :age",
            {":now": {"N": f"{now:.3f}"}, ":age": {"N": f"{iterator_age:.3f}"}},
        )

    async def checkpoint(self, held: Lease, checkpoint: str, version: int) -> Lease:
        return await self._update(
            held,
            replace(
                held,
                counter=held.counter + 1,
                checkpoint=checkpoint,
                checkpoint_version=version,
                owner_switches=0,
            ),
            "checkpoint = :cp, checkpointVersion = :v, ownerSwitchesSinceCheckpoint = :zero",
            {":cp": {"S": checkpoint}, ":v": {"N": str(version)}, ":zero": {"N": "0"}},
            unfinished=True,
        )

    async def finish(self, held: Lease, version: int) -> Lease:
        """Marks the shard read to its end and gives the lease up, so its children may start."""
        now = time.time()
        return await self._update(
            held,
            replace(
                held,
                owner=None,
                counter=held.counter + 1,
                checkpoint=SHARD_END,
                checkpoint_version=version,
                finished_at=now,
            ),
            "checkpoint = :cp, checkpointVersion = :v, finishedAt = :now",
            {":cp": {"S": SHARD_END}, ":v": {"N": str(version)}, ":now": {"N": f"{now:.3f}"}},
            remove_owner=True,
            unfinished=True,
        )

    async def fail(self, held: Lease, reason: str) -> Lease:
        """Gives a lease up for good: workers do not take it while its table's policy says so."""
        return await self._update(
            held,
            replace(held, owner=None, counter=held.counter + 1, failure=reason),
            "failure = :reason",
            {":reason": {"S": reason}},
            remove_owner=True,
        )

    async def release(self, held: Lease) -> Lease:
        """Gives a lease up (graceful shutdown) so another worker takes it without waiting."""
        return await self._update(
            held,
            replace(held, owner=None, counter=held.counter + 1),
            "renewedAt = :now",
            {":now": {"N": f"{time.time():.3f}"}},
            remove_owner=True,
        )

    async def delete(self, seen: Lease) -> None:
        try:
            await self._client.delete_item(
                TableName=self.name,
                Key={KEY: {"S": lease_key(seen.stream_arn, seen.shard_id)}},
                ConditionExpression="leaseCounter = :seen",
                ExpressionAttributeValues={":seen": {"N": str(seen.counter)}},
            )
        except ClientError as error:
            if _conditional_failure(error):
                raise LeaseLost(seen) from None
            raise
