"""Every request the lease table is sent, built by pure functions: item mappings, the conditions
that fence a write, and the updates (as the KCL's LeaseSerializer builds them for its lease
refresher). Kept apart from sending so that each fence is a case in a table of unit tests, not a
race to set up against DynamoDB.

A write to a lease states the counter (and, for an owned lease, the owner) its writer last saw and
bumps the counter, so of two workers racing for a lease exactly one wins, and a worker that was
stalled past its lease is refused instead of overwriting a newer owner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from streamsync.leases.model import LATEST, SHARD_END, TRIM_HORIZON, Lease

KEY = "leaseKey"
CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass(frozen=True)
class Request:
    """One DynamoDB call in its JSON-protocol form, as streamsync.awsjson sends it."""

    action: str  # "UpdateItem", "Scan", ...
    payload: dict[str, Any]

    @property
    def target(self) -> str:
        return f"DynamoDB_20120810.{self.action}"


@dataclass(frozen=True)
class LeaseWrite:
    """A fenced write, and the lease as its writer knows it once the write has landed (no read
    back: the counter it set is what the next write must state)."""

    request: Request
    lease: Lease


class LeaseLost(Exception):
    """The lease changed since this worker last saw it: someone else owns it now."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"lost the lease on {lease.shard_id} of {lease.table}")
        self.lease = lease


def describe_table(table: str) -> Request:
    return Request("DescribeTable", {"TableName": table})


def delete_table(table: str) -> Request:
    return Request("DeleteTable", {"TableName": table})


def create_table(table: str) -> Request:
    """On-demand billing: a lease table's load follows the number of shards, not a schedule."""
    return Request(
        "CreateTable",
        {
            "TableName": table,
            "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": KEY, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )


def scan(table: str, consistent: bool = True, **narrowed: Any) -> Request:
    """A scan (of what `narrowed`, e.g. a FilterExpression, lets through), strongly consistent
    unless asked: an eventually consistent one costs half but could show a lease as it was
    before its last write, and a take fenced on that counter would be refused for nothing."""
    return Request("Scan", {"TableName": table, "ConsistentRead": consistent, **narrowed})


def next_page(request: Request, answer: dict[str, Any]) -> Request | None:
    """The request for the page after `answer`; None when `answer` was the last."""
    if "LastEvaluatedKey" not in answer:
        return None
    return replace(
        request, payload={**request.payload, "ExclusiveStartKey": answer["LastEvaluatedKey"]}
    )


def delete(table: str, key: str, seen_counter: int | None = None) -> Request:
    """Deletes the item at `key`; with `seen_counter`, only if it was not written since it was
    seen with that counter (so that what is deleted is what its deleter judged)."""
    request: dict[str, Any] = {"TableName": table, "Key": {KEY: {"S": key}}}
    if seen_counter is not None:
        request["ConditionExpression"] = "leaseCounter = :seen"
        request["ExpressionAttributeValues"] = {":seen": {"N": str(seen_counter)}}
    return Request("DeleteItem", request)


def to_item(lease: Lease) -> dict[str, Any]:
    """The fields the KCL names so, under its names, so that operators find familiar ones."""
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


def from_item(item: dict[str, Any]) -> Lease:
    """Fields missing from leases written by older versions read as their defaults."""
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


def create(table: str, lease: Lease) -> Request:
    """Refused when the shard has a lease already: workers discovering a shard together race."""
    return Request(
        "PutItem",
        {
            "TableName": table,
            "Item": to_item(lease),
            "ConditionExpression": "attribute_not_exists(leaseKey)",
        },
    )


def _fenced_update(
    table: str,
    seen: Lease,
    changes: Lease,
    set_expression: str,
    values: dict[str, Any],
    *,
    remove_owner: bool = False,
    require_owner: bool = True,
    remove: str | None = None,
    unfinished: bool = False,
) -> LeaseWrite:
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
    request = {
        "TableName": table,
        "Key": {KEY: {"S": seen.key}},
        "UpdateExpression": expression,
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }
    return LeaseWrite(Request("UpdateItem", request), changes)


def stored_time(seconds: float) -> float:
    """Seconds as the item stores them (milliseconds): the lease a write returns must equal the
    one a scan reads back, or a LATEST start's `start_after` would differ between the worker
    that made it durable and the next owner."""
    return round(seconds, 3)


def take(table: str, seen: Lease, owner: str, index: str | None, now: float) -> LeaseWrite:
    """Not fenced on the owner: a take is of a lease unowned, expired or stolen, as it was seen.
    `index` is recorded where the lease does not name one yet.

    A lease written by an older streamsync with checkpoint LATEST (a position each reader used to
    resolve anew) becomes a durable start here: TRIM_HORIZON, skipping what was created before
    now."""
    now = stored_time(now)
    switches = seen.owner_switches + (seen.owner != owner)
    taken = replace(
        seen, owner=owner, counter=seen.counter + 1, owner_switches=switches, failure=None
    )
    expression = "leaseOwner = :owner, renewedAt = :now, ownerSwitchesSinceCheckpoint = :switches"
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
    changes = replace(taken, renewed_at=now)
    return _fenced_update(
        table, seen, changes, expression, values, require_owner=False, remove="failure"
    )


def hold_version_floor(table: str, held: Lease, version: int) -> LeaseWrite:
    changes = replace(held, counter=held.counter + 1, version_floor=version)
    return _fenced_update(
        table, held, changes, "versionFloor = :floor", {":floor": {"N": str(version)}}
    )


def renew(table: str, held: Lease, iterator_age: float, now: float) -> LeaseWrite:
    """The reader's iterator age goes along, for `streamsync status`."""
    now, iterator_age = stored_time(now), stored_time(iterator_age)
    changes = replace(held, counter=held.counter + 1, renewed_at=now, iterator_age=iterator_age)
    values = {":now": {"N": f"{now:.3f}"}, ":age": {"N": f"{iterator_age:.3f}"}}
    return _fenced_update(
        table, held, changes, "renewedAt = :now, iteratorAgeSeconds = :age", values
    )


def checkpoint(
    table: str, held: Lease, checkpoint: str, version: int, iterator_age: float = 0.0
) -> LeaseWrite:
    """The reader's iterator age goes along, for `streamsync status` (idle leases are not
    renewed: see Liveness)."""
    iterator_age = stored_time(iterator_age)
    changes = replace(
        held,
        counter=held.counter + 1,
        checkpoint=checkpoint,
        checkpoint_version=version,
        owner_switches=0,
        iterator_age=iterator_age,
    )
    expression = (
        "checkpoint = :cp, checkpointVersion = :v, ownerSwitchesSinceCheckpoint = :zero, "
        "iteratorAgeSeconds = :age"
    )
    values = {
        ":cp": {"S": checkpoint},
        ":v": {"N": str(version)},
        ":zero": {"N": "0"},
        ":age": {"N": f"{iterator_age:.3f}"},
    }
    return _fenced_update(table, held, changes, expression, values, unfinished=True)


def finish(table: str, held: Lease, version: int, now: float) -> LeaseWrite:
    """The owner goes with the shard's end, so that its children may start at once."""
    now = stored_time(now)
    changes = replace(
        held,
        owner=None,
        counter=held.counter + 1,
        checkpoint=SHARD_END,
        checkpoint_version=version,
        finished_at=now,
    )
    expression = "checkpoint = :cp, checkpointVersion = :v, finishedAt = :now"
    values = {":cp": {"S": SHARD_END}, ":v": {"N": str(version)}, ":now": {"N": f"{now:.3f}"}}
    return _fenced_update(
        table, held, changes, expression, values, remove_owner=True, unfinished=True
    )


def fail(table: str, held: Lease, reason: str) -> LeaseWrite:
    changes = replace(held, owner=None, counter=held.counter + 1, failure=reason)
    values = {":reason": {"S": reason}}
    return _fenced_update(table, held, changes, "failure = :reason", values, remove_owner=True)


def release(table: str, held: Lease, now: float) -> LeaseWrite:
    changes = replace(held, owner=None, counter=held.counter + 1)
    values = {":now": {"N": f"{now:.3f}"}}
    return _fenced_update(table, held, changes, "renewedAt = :now", values, remove_owner=True)
