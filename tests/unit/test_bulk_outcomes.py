"""What one bulk request carries and what its answer settles, as tables of cases: the pure half
of the bulk indexer (streamsync.sink.batch) and the search cluster's one "retriable?" rule. The
lanes that act on these verdicts are tested in test_bulk.py."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest

from streamsync.sink.batch import Batch, Entry, bulk_body, classify, settled
from streamsync.sink.deadletter import storable_again
from streamsync.sink.engine import Refused, SearchEngine, Unreachable, WrongProduct, retriable
from streamsync.sink.tombstones import Tombstones
from streamsync.transform.actions import Action, Origin

Item = dict[str, Any]


def action(doc_id: str, version: int = 1, op: str = "index", size: int = 0) -> Action:
    source = orjson.dumps({"pad": "x" * size}) if op == "index" else None
    return Action(op, "idx", doc_id, version, source, Origin("t", "s", version, b"{}"))  # type: ignore[arg-type]


def item(op: str, status: int, error_type: str | None = None, result: str | None = None) -> Item:
    answer: dict[str, Any] = {"status": status}
    if error_type is not None:
        answer["error"] = {"type": error_type, "reason": "why"}
    if result is not None:
        answer["result"] = result
    return {op: answer}


def index(status: int, error_type: str | None = None, result: str | None = None) -> Item:
    return item("index", status, error_type, result)


def delete(status: int, error_type: str | None = None, result: str | None = None) -> Item:
    return item("delete", status, error_type, result)


STORED = index(201, result="created")  # a delete's tombstone
NEWER = "version_conflict_engine_exception"
NO_INDEX = "index_not_found_exception"
UNPARSABLE = "document_parsing_exception"
UNMAPPABLE = "mapper_parsing_exception"
THROTTLED = "es_rejected_execution_exception"
NO_SHARD = "unavailable_shards_exception"
NO_NODE = "node_not_connected_exception"
BREAKER = "circuit_breaking_exception"
ILLEGAL = "illegal_argument_exception"

# The items answering one action (a delete's own, then its tombstone's); the verdict; the status
# and error type that decide it.
CASES = [
    ([index(201, result="created")], "done", 201, None),
    ([index(200, result="updated")], "done", 200, None),
    ([index(409, NEWER)], "stale", 409, NEWER),
    ([index(404, NO_INDEX)], "rejected", 404, NO_INDEX),
    ([index(400, UNPARSABLE)], "rejected", 400, UNPARSABLE),
    ([index(400, UNMAPPABLE)], "rejected", 400, UNMAPPABLE),
    ([index(429, THROTTLED)], "retry", 429, THROTTLED),
    ([index(503, NO_SHARD)], "retry", 503, NO_SHARD),
    ([index(500, NO_NODE)], "retry", 500, NO_NODE),
    ([index(403, "security_exception")], "retry", 403, "security_exception"),
    ([delete(200, result="deleted"), STORED], "done", 200, None),
    ([delete(404, result="not_found"), STORED], "done", 404, None),
    ([delete(409, NEWER), STORED], "stale", 409, NEWER),
    ([delete(200, result="deleted"), index(409, NEWER)], "done", 200, None),
    ([delete(503, NO_SHARD), STORED], "retry", 503, NO_SHARD),
    (
        [delete(400, ILLEGAL), STORED],
        "rejected",
        400,
        ILLEGAL,
    ),
    # The tombstone's failure decides the delete: without it a late older image could return.
    ([delete(200), index(429, BREAKER)], "retry", 429, BREAKER),
    ([delete(200), index(400, UNMAPPABLE)], "rejected", 400, UNMAPPABLE),
]


@pytest.mark.parametrize(("items", "verdict", "status", "error_type"), CASES)
def test_each_item_status_has_one_verdict(
    items: list[Item], verdict: str, status: int, error_type: str | None
) -> None:
    entry = Entry(action("a", op=next(iter(items[0]))))
    outcome = classify([entry], {"items": items})
    verdicts = {
        "done": [(done.entry, done.status, done.stale) for done in outcome.done],
        "retry": outcome.retry,
        "rejected": outcome.rejected,
    }
    expected: dict[str, list[Any]] = {"done": [], "retry": [], "rejected": []}
    if verdict in ("done", "stale"):
        expected["done"] = [(entry, status, verdict == "stale")]
    elif verdict == "retry":
        expected["retry"] = [entry]
    else:
        expected["rejected"] = [(entry, {"status": status, "type": error_type, "reason": "why"})]
    assert verdicts == expected
    assert outcome.retry_reason == (f"{status} {error_type}" if verdict == "retry" else None)


def test_a_mixed_answer_is_split_in_order_and_only_creations_are_checked_for_tombstones() -> None:
    names = ["new", "changed", "stale", "throttled", "bad", "gone", "tombstone-busy"]
    ops = ["index"] * 5 + ["delete"] * 2
    entries = [Entry(action(name, op=op)) for name, op in zip(names, ops, strict=True)]
    answer = {
        "items": [
            index(201, result="created"),
            index(200, result="updated"),
            index(409, NEWER),
            index(429, THROTTLED),
            index(400, UNPARSABLE),
            delete(200, result="deleted"),
            STORED,
            delete(200, result="deleted"),
            index(503, NO_SHARD),
        ]
    }
    outcome = classify(entries, answer)
    assert [d.entry.action.doc_id for d in outcome.done] == ["new", "changed", "stale", "gone"]
    assert [d.stale for d in outcome.done] == [False, False, True, False]
    assert [d.result for d in outcome.done] == ["created", "updated", None, "deleted"]
    assert [a.doc_id for a in outcome.created] == ["new"]
    assert [e.action.doc_id for e in outcome.retry] == ["throttled", "tombstone-busy"]
    assert outcome.retry_reason == f"503 {NO_SHARD}", "the last one"
    assert [(e.action.doc_id, error["status"]) for e, error in outcome.rejected] == [("bad", 400)]


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (400, UNMAPPABLE, False),
        (400, ILLEGAL, False),
        (404, NO_INDEX, False),
        (409, NEWER, False),
        (413, "http_error", False),
        (401, "security_exception", True),
        (403, "security_exception", True),
        (408, "http_error", True),
        (429, THROTTLED, True),
        (500, "exception", True),
        (502, "http_error", True),
        (503, NO_SHARD, True),
        (400, BREAKER, True),  # the type decides, whatever a proxy says
        (404, "no_shard_available_action_exception", True),
        (429, None, True),
        (400, None, False),
    ],
)
def test_one_retriable_rule_for_bulk_items_and_dead_letters(
    status: int, error_type: str | None, expected: bool
) -> None:
    assert retriable(status, error_type) is expected
    assert storable_again(Refused(status, error_type or "", "")) is expected
    if not settled("index", status):
        answer = {"items": [index(status, error_type)]}
        outcome = classify([Entry(action("a"))], answer)
        assert (bool(outcome.retry), bool(outcome.rejected)) == (expected, not expected)


@pytest.mark.parametrize(
    "error",
    [Unreachable("connection refused"), WrongProduct("OpenSearch", "Elasticsearch")],
    ids=["unreachable", "wrong-product"],
)
def test_a_letter_is_stored_again_after_any_failure_but_a_refusal(error: Exception) -> None:
    assert storable_again(error)
    assert not storable_again(ValueError("a bug, not an outage"))


@pytest.mark.parametrize(
    ("op", "status", "expected"),
    [
        ("index", 200, True),
        ("index", 201, True),
        ("index", 409, True),
        ("index", 404, False),
        ("index", 400, False),
        ("delete", 404, True),
        ("delete", 409, True),
        ("delete", 400, False),
        ("delete", 503, False),
    ],
)
def test_settled(op: str, status: int, expected: bool) -> None:
    assert settled(op, status) is expected


def test_a_batch_keeps_one_entry_per_document_with_the_newest_action() -> None:
    batch = Batch(max_actions=10, max_bytes=10**6)
    first, newer, older = action("hot", 2), action("hot", 5), action("hot", 3)
    cold = action("cold", 1)
    for each in (first, newer, older, cold):
        batch.add(each)
    hot, other = batch.entries
    assert (hot.action, hot.superseded) == (newer, [first, older])
    assert hot.settles == (first, older, newer)
    assert other.action is cold
    assert batch.actions == 4, "superseded actions are settled with the request"


@pytest.mark.parametrize(
    ("max_actions", "max_bytes", "adds", "full_after"),
    [
        (3, 10**6, [0, 0, 0], 3),  # three documents
        (2, 10**6, [0, 0, 0], 2),
        (100, 900, [200, 200, 200, 200], 3),  # past max_bytes with the third
        (100, 10**6, [0] * 5, None),
    ],
)
def test_a_batch_is_full_at_max_actions_or_max_bytes(
    max_actions: int, max_bytes: int, adds: list[int], full_after: int | None
) -> None:
    batch = Batch(max_actions, max_bytes)
    full = []
    for n, size in enumerate(adds, start=1):
        batch.add(action(f"d{n}", size=size))
        full.append(batch.full)
    expected = [full_after is not None and n >= full_after for n in range(1, len(adds) + 1)]
    assert full == expected


def test_a_hot_document_fills_a_batch_by_bytes_not_by_count() -> None:
    batch = Batch(max_actions=2, max_bytes=1000)
    for version in range(1, 4):
        batch.add(action("hot", version, size=300))
    assert len(batch.entries) == 1
    assert batch.full


def test_the_bulk_body_carries_versions_sources_and_each_deletes_tombstone() -> None:
    tombstones = Tombstones(cast(SearchEngine, None), clock=lambda: 0.0)
    actions = [action("a", 7, size=1), action("b|c", 9, op="delete")]
    lines = [orjson.loads(line) for line in bulk_body(actions, tombstones).splitlines()]
    external = {"version_type": "external"}
    assert lines == [
        {"index": {"_index": "idx", "_id": "a", "version": 7, **external}},
        {"pad": "x"},
        {"delete": {"_index": "idx", "_id": "b|c", "version": 9, **external}},
        {
            "index": {
                "_index": "streamsync-tombstones-1970.01.01",
                "_id": "idx|b|c",
                "version": 9,
                **external,
            }
        },
        {"v": 9},
    ]
