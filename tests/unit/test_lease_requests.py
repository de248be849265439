"""The lease table's requests, as tables of cases: what each write states it expects (its fence),
what it changes, and the lease its writer goes on with. That moto evaluates these conditions as
DynamoDB does is tested in tests/integration/test_robustness.py; here, that they say the right
thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import pytest

from streamsync.leases import requests
from streamsync.leases.model import LATEST, SHARD_END, Lease
from streamsync.leases.requests import KEY, LeaseLost, LeaseWrite, Request

T = "leases"
NOW = 1700000000.25
SEEN = Lease(stream_arn="arn:s", shard_id="shardId-1", table="t", counter=4, owner_switches=2)
HELD = replace(SEEN, owner="w1", checkpoint="100", checkpoint_version=3)
ITEM_KEY = {KEY: {"S": "arn:s|shardId-1"}}
# The fences: the counter the writer saw, and the owner when the lease had one.
COUNTER = "leaseCounter = :seen"
OWNER = "leaseCounter = :seen AND leaseOwner = :seen_owner"
UNFINISHED = "leaseCounter = :seen AND checkpoint <> :shard_end AND leaseOwner = :seen_owner"
SEEN_4 = {":seen": {"N": "4"}, ":next": {"N": "5"}}
SEEN_4_W1 = {**SEEN_4, ":seen_owner": {"S": "w1"}}


def update(expression: str, condition: str, values: dict[str, Any]) -> Request:
    return Request(
        "UpdateItem",
        {
            "TableName": T,
            "Key": ITEM_KEY,
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        },
    )


TAKE = "SET leaseCounter = :next, leaseOwner = :owner, renewedAt = :now, "
TAKE += "ownerSwitchesSinceCheckpoint = :switches"
TAKE_VALUES = {**SEEN_4, ":owner": {"S": "w2"}, ":now": {"N": "1700000000.250"}}

WRITES = [
    pytest.param(
        lambda: requests.take(T, SEEN, "w2", None, NOW),
        update(TAKE + " REMOVE failure", COUNTER, {**TAKE_VALUES, ":switches": {"N": "3"}}),
        replace(SEEN, owner="w2", counter=5, owner_switches=3, renewed_at=NOW),
        id="take an unowned lease: fenced on the counter alone",
    ),
    pytest.param(
        lambda: requests.take(T, replace(HELD, failure="gone"), "w2", None, NOW),
        update(TAKE + " REMOVE failure", COUNTER, {**TAKE_VALUES, ":switches": {"N": "3"}}),
        replace(HELD, owner="w2", counter=5, owner_switches=3, renewed_at=NOW),
        id="steal: not fenced on the owner it takes from; a failure is cleared",
    ),
    pytest.param(
        lambda: requests.take(T, replace(HELD, owner="w2"), "w2", None, NOW),
        update(TAKE + " REMOVE failure", COUNTER, {**TAKE_VALUES, ":switches": {"N": "2"}}),
        replace(HELD, owner="w2", counter=5, renewed_at=NOW),
        id="take back an own lease: no owner switch",
    ),
    pytest.param(
        lambda: requests.take(T, replace(SEEN, checkpoint=LATEST), "w2", "idx", NOW),
        update(
            TAKE + ", checkpoint = :horizon, startAfter = :now, indexName = :index REMOVE failure",
            COUNTER,
            {
                **TAKE_VALUES,
                ":switches": {"N": "3"},
                ":horizon": {"S": "TRIM_HORIZON"},
                ":index": {"S": "idx"},
            },
        ),
        replace(
            SEEN,
            owner="w2",
            counter=5,
            owner_switches=3,
            checkpoint="TRIM_HORIZON",
            start_after=NOW,
            index="idx",
            renewed_at=NOW,
        ),
        id="take a LATEST lease: a durable start; the index is recorded",
    ),
    pytest.param(
        lambda: requests.take(T, replace(SEEN, index="old"), "w2", "idx", NOW),
        update(TAKE + " REMOVE failure", COUNTER, {**TAKE_VALUES, ":switches": {"N": "3"}}),
        replace(SEEN, owner="w2", counter=5, owner_switches=3, index="old", renewed_at=NOW),
        id="take a lease that names its index: kept",
    ),
    pytest.param(
        lambda: requests.renew(T, HELD, 1.5, NOW),
        update(
            "SET leaseCounter = :next, renewedAt = :now, iteratorAgeSeconds = :age",
            OWNER,
            {**SEEN_4_W1, ":now": {"N": "1700000000.250"}, ":age": {"N": "1.500"}},
        ),
        replace(HELD, counter=5, renewed_at=NOW, iterator_age=1.5),
        id="renew: fenced on counter and owner",
    ),
    pytest.param(
        lambda: requests.hold_version_floor(T, HELD, 77),
        update(
            "SET leaseCounter = :next, versionFloor = :floor",
            OWNER,
            {**SEEN_4_W1, ":floor": {"N": "77"}},
        ),
        replace(HELD, counter=5, version_floor=77),
        id="hold a version floor",
    ),
    pytest.param(
        lambda: requests.checkpoint(T, HELD, "200", 9, 2.5),
        update(
            "SET leaseCounter = :next, checkpoint = :cp, checkpointVersion = :v, "
            "ownerSwitchesSinceCheckpoint = :zero, iteratorAgeSeconds = :age",
            UNFINISHED,
            {
                **SEEN_4_W1,
                ":shard_end": {"S": SHARD_END},
                ":cp": {"S": "200"},
                ":v": {"N": "9"},
                ":zero": {"N": "0"},
                ":age": {"N": "2.500"},
            },
        ),
        replace(
            HELD,
            counter=5,
            checkpoint="200",
            checkpoint_version=9,
            owner_switches=0,
            iterator_age=2.5,
        ),
        id="checkpoint: never over SHARD_END",
    ),
    pytest.param(
        lambda: requests.finish(T, HELD, 9, NOW),
        update(
            "SET leaseCounter = :next, checkpoint = :cp, checkpointVersion = :v, "
            "finishedAt = :now REMOVE leaseOwner",
            UNFINISHED,
            {
                **SEEN_4_W1,
                ":shard_end": {"S": SHARD_END},
                ":cp": {"S": SHARD_END},
                ":v": {"N": "9"},
                ":now": {"N": "1700000000.250"},
            },
        ),
        replace(
            HELD, owner=None, counter=5, checkpoint=SHARD_END, checkpoint_version=9, finished_at=NOW
        ),
        id="finish: the final write, never over SHARD_END; the owner goes",
    ),
    pytest.param(
        lambda: requests.fail(T, HELD, "records lost"),
        update(
            "SET leaseCounter = :next, failure = :reason REMOVE leaseOwner",
            OWNER,
            {**SEEN_4_W1, ":reason": {"S": "records lost"}},
        ),
        replace(HELD, owner=None, counter=5, failure="records lost"),
        id="fail",
    ),
    pytest.param(
        lambda: requests.release(T, HELD, NOW),
        update(
            "SET leaseCounter = :next, renewedAt = :now REMOVE leaseOwner",
            OWNER,
            {**SEEN_4_W1, ":now": {"N": "1700000000.250"}},
        ),
        replace(HELD, owner=None, counter=5),
        id="release",
    ),
    pytest.param(
        lambda: requests.release(T, SEEN, NOW),
        update(
            "SET leaseCounter = :next, renewedAt = :now REMOVE leaseOwner",
            COUNTER,
            {**SEEN_4, ":now": {"N": "1700000000.250"}},
        ),
        replace(SEEN, counter=5),
        id="a write to an unowned lease: fenced on the counter alone",
    ),
]


@pytest.mark.parametrize(("write", "request_", "lease"), WRITES)
def test_lease_writes(write: Callable[[], LeaseWrite], request_: Request, lease: Lease) -> None:
    written = write()
    assert written.request == request_
    assert asdict(written.lease) == asdict(lease)  # renewed_at and iterator_age too


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda: requests.checkpoint(T, SEEN, "200", 9), id="checkpoint"),
        pytest.param(lambda: requests.finish(T, SEEN, 9, NOW), id="finish"),
    ],
)
def test_an_unowned_lease_is_never_checkpointed_nor_finished(
    write: Callable[[], LeaseWrite],
) -> None:
    """Seen without an owner (after its finish, say), it would pass on the counter alone."""
    with pytest.raises(LeaseLost):
        write()


BARE_ITEM = {
    KEY: {"S": "arn:s|shardId-1"},
    "streamArn": {"S": "arn:s"},
    "shardId": {"S": "shardId-1"},
    "tableName": {"S": "t"},
    "leaseCounter": {"N": "4"},
    "checkpoint": {"S": "TRIM_HORIZON"},
    "checkpointVersion": {"N": "0"},
    "ownerSwitchesSinceCheckpoint": {"N": "2"},
}
FULL = replace(
    HELD,
    parent_shard_ids=("shardId-0", "shardId-00"),
    start_after=1700000000.5,
    wanted_since=1690000000.0,
    index="idx",
    version_floor=39,
)
FULL_ITEM = {
    **BARE_ITEM,
    "checkpoint": {"S": "100"},
    "checkpointVersion": {"N": "3"},
    "parentShardIds": {"L": [{"S": "shardId-0"}, {"S": "shardId-00"}]},
    "leaseOwner": {"S": "w1"},
    "startAfter": {"N": "1700000000.500"},
    "wantedSince": {"N": "1690000000.000"},
    "versionFloor": {"N": "39"},
    "indexName": {"S": "idx"},
}


@pytest.mark.parametrize(
    ("lease", "item"),
    [
        pytest.param(FULL, FULL_ITEM, id="every field"),
        pytest.param(SEEN, BARE_ITEM, id="unset fields are left out"),
    ],
)
def test_lease_items_round_trip(lease: Lease, item: dict[str, Any]) -> None:
    assert requests.to_item(lease) == item
    assert requests.from_item(item) == lease


def test_lease_items_read_what_only_writes_add_and_what_older_versions_left_out() -> None:
    item = {
        **BARE_ITEM,
        "renewedAt": {"N": "1700000000.250"},
        "finishedAt": {"N": "1700000001.000"},
        "failure": {"S": "records lost"},
        "iteratorAgeSeconds": {"N": "2.500"},
    }
    del item["checkpointVersion"], item["ownerSwitchesSinceCheckpoint"]
    lease = requests.from_item(item)
    assert lease == replace(
        SEEN, owner_switches=0, finished_at=1700000001.0, failure="records lost"
    )
    assert (lease.renewed_at, lease.iterator_age) == (NOW, 2.5)


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        pytest.param(
            requests.create(T, SEEN),
            Request(
                "PutItem",
                {
                    "TableName": T,
                    "Item": BARE_ITEM,
                    "ConditionExpression": "attribute_not_exists(leaseKey)",
                },
            ),
            id="create: only where the shard has no lease",
        ),
        pytest.param(
            requests.delete(T, SEEN.key, SEEN.counter),
            Request(
                "DeleteItem",
                {
                    "TableName": T,
                    "Key": ITEM_KEY,
                    "ConditionExpression": COUNTER,
                    "ExpressionAttributeValues": {":seen": {"N": "4"}},
                },
            ),
            id="delete a lease as seen",
        ),
        pytest.param(
            requests.delete(T, "worker|w1"),
            Request("DeleteItem", {"TableName": T, "Key": {KEY: {"S": "worker|w1"}}}),
            id="delete, unconditionally",
        ),
        pytest.param(
            requests.describe_table(T),
            Request("DescribeTable", {"TableName": T}),
            id="describe the table",
        ),
        pytest.param(
            requests.create_table(T),
            Request(
                "CreateTable",
                {
                    "TableName": T,
                    "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": KEY, "AttributeType": "S"}],
                    "BillingMode": "PAY_PER_REQUEST",
                },
            ),
            id="create the table",
        ),
        pytest.param(
            requests.scan(T),
            Request("Scan", {"TableName": T, "ConsistentRead": True}),
            id="scan: strongly consistent",
        ),
    ],
)
def test_other_requests(built: Request, expected: Request) -> None:
    assert built == expected
    assert built.target == f"DynamoDB_20120810.{expected.action}"


def test_scans_page_on_from_the_last_evaluated_key() -> None:
    first = requests.scan(T)
    second = requests.next_page(first, {"Items": [], "LastEvaluatedKey": ITEM_KEY})
    assert second == Request(
        "Scan", {"TableName": T, "ConsistentRead": True, "ExclusiveStartKey": ITEM_KEY}
    )
    assert second is not None
    third = requests.next_page(second, {"Items": [], "LastEvaluatedKey": {KEY: {"S": "z"}}})
    assert third is not None
    assert third.payload["ExclusiveStartKey"] == {KEY: {"S": "z"}}
    assert requests.next_page(third, {"Items": []}) is None
