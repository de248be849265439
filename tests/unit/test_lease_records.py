"""The lease table's other records, worker heartbeats and backfill checkpoints, as their stores
write and read them: other workers and later runs read what these write, so a field's name or
form cannot change unnoticed.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamsync.leases import heartbeats, progress
from streamsync.leases.model import WorkerBeat
from streamsync.leases.progress import SegmentProgress
from streamsync.leases.requests import KEY, Request

T = "leases"
NOW = 1700000000.25


def test_heartbeats_bump_their_counter_name_their_streams_and_their_protocol() -> None:
    assert heartbeats.beat(T, "w1", ["arn:b", "arn:a"], NOW) == Request(
        "UpdateItem",
        {
            "TableName": T,
            "Key": {KEY: {"S": "worker|w1"}},
            "UpdateExpression": (
                "SET kind = :kind, workerId = :id, streams = :streams, renewedAt = :now, "
                "protocol = :protocol, leaseCounter = if_not_exists(leaseCounter, :zero) + :one"
            ),
            "ExpressionAttributeValues": {
                ":kind": {"S": "worker"},
                ":id": {"S": "w1"},
                ":streams": {"SS": ["arn:a", "arn:b"]},
                ":now": {"N": "1700000000.250"},
                ":protocol": {"N": "2"},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
            },
            "ReturnValues": "UPDATED_OLD",
        },
    )


def test_the_roster_counts_joins_leaves_and_changes() -> None:
    def update(expression: str, **me: Any) -> Request:
        values = {":kind": {"S": "roster"}, ":one": {"N": "1"}, **me}
        return Request(
            "UpdateItem",
            {
                "TableName": T,
                "Key": {KEY: {"S": "roster|"}},
                "UpdateExpression": f"SET kind = :kind ADD changes :one{expression}",
                "ExpressionAttributeValues": values,
            },
        )

    me = {":me": {"SS": ["w1"]}}
    assert heartbeats.join(T, "w1") == update(", members :me", **me)
    assert heartbeats.leave(T, "w1") == update(" DELETE members :me", **me)
    assert heartbeats.changed(T) == update("")


def test_a_glance_reads_the_roster_and_heartbeats_strongly_consistent_a_hundred_at_a_time() -> None:
    workers = [f"w{n:03}" for n in range(150)]
    first, second = heartbeats.glance(T, [*workers, "w000"])
    keys = [{KEY: {"S": "roster|"}}, *({KEY: {"S": f"worker|{w}"}} for w in workers)]
    assert first == Request(
        "BatchGetItem", {"RequestItems": {T: {"Keys": keys[:100], "ConsistentRead": True}}}
    )
    assert second.payload["RequestItems"][T] == {"Keys": keys[100:], "ConsistentRead": True}
    found = heartbeats.glance_from(
        [
            {
                KEY: {"S": "roster|"},
                "kind": {"S": "roster"},
                "members": {"SS": ["w1", "w2"]},
                "changes": {"N": "7"},
            },
            {
                KEY: {"S": "worker|w1"},
                "kind": {"S": "worker"},
                "workerId": {"S": "w1"},
                "leaseCounter": {"N": "3"},
            },
        ]
    )
    assert found == heartbeats.Glance(frozenset({"w1", "w2"}), 7, [WorkerBeat("w1", 3)])
    assert heartbeats.glance_from([]) == heartbeats.Glance(frozenset(), 0, [])


def test_heartbeat_items() -> None:
    item = {
        KEY: {"S": "worker|w1"},
        "kind": {"S": "worker"},
        "workerId": {"S": "w1"},
        "leaseCounter": {"N": "3"},
        "streams": {"SS": ["arn:a"]},
        "renewedAt": {"N": "1700000000.250"},
    }
    beat = heartbeats.from_item(item)
    assert beat == WorkerBeat("w1", 3, frozenset({"arn:a"}))
    assert beat.renewed_at == NOW
    assert beat.protocol == 1, "an item of an older version: its leases live by their counters"
    assert heartbeats.from_item({**item, "protocol": {"N": "2"}}).protocol == 2


SEGMENT_BEGUN = {
    KEY: {"S": "backfill|t|4|2"},
    "kind": {"S": "backfill"},
    "tableName": {"S": "t"},
    "segments": {"N": "4"},
    "segment": {"N": "2"},
    "startedAt": {"N": "1700000000.250"},
    "done": {"BOOL": False},
    "items": {"N": "0"},
}


@pytest.mark.parametrize(
    ("saved", "item"),
    [
        pytest.param(SegmentProgress("t", 4, 2, NOW), SEGMENT_BEGUN, id="a segment not begun"),
        pytest.param(
            SegmentProgress("t", 4, 2, NOW, last_key='{"pk": {"S": "k"}}', done=True, items=9),
            {
                **SEGMENT_BEGUN,
                "done": {"BOOL": True},
                "items": {"N": "9"},
                "lastKey": {"S": '{"pk": {"S": "k"}}'},
            },
            id="a segment done",
        ),
    ],
)
def test_backfill_progress_items(saved: SegmentProgress, item: dict[str, Any]) -> None:
    assert progress.save(T, saved) == Request("PutItem", {"TableName": T, "Item": item})
    assert progress.from_item(item) == saved


def test_backfill_progress_is_found_by_its_kind_and_table() -> None:
    assert progress.scan(T, "t") == Request(
        "Scan",
        {
            "TableName": T,
            "ConsistentRead": True,
            "FilterExpression": "kind = :kind AND tableName = :table",
            "ExpressionAttributeValues": {":kind": {"S": "backfill"}, ":table": {"S": "t"}},
        },
    )
