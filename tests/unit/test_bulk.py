"""The bulk indexer's batching, ordering, retry and acknowledgement logic, with a scripted fake
cluster (the same paths run against real Elasticsearch in tests/integration/test_sink.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from streamsync.config import BulkConfig
from streamsync.observability.metrics import Metrics
from streamsync.retry import on_retry
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.engine import Unreachable
from streamsync.sink.ports import Ticket
from streamsync.source.acks import AckTracker
from streamsync.transform.actions import Action, Origin

Outcome = Callable[[dict[str, Any]], tuple[int, dict[str, Any] | None]]


def ok(_: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    return 201, None


class FakeCluster:
    """Answers bulk requests item by item with `outcome`; records what it was sent."""

    product = "Elasticsearch"

    def __init__(self, outcome: Outcome = ok) -> None:
        self.outcome = outcome
        self.requests: list[list[tuple[str, dict[str, Any], Any]]] = []
        self.gate: asyncio.Event | None = None  # when set, requests wait for it
        self.fail_requests = 0

    async def bulk(self, body: bytes) -> dict[str, Any]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_requests:
            self.fail_requests -= 1
            raise Unreachable("connection refused")
        lines = [orjson.loads(line) for line in body.splitlines()]
        items: list[tuple[str, dict[str, Any], Any]] = []
        position = 0
        while position < len(lines):
            ((op, meta),) = lines[position].items()
            source = lines[position + 1] if op == "index" else None
            position += 2 if op == "index" else 1
            items.append((op, meta, source))
        self.requests.append(items)
        results = []
        for op, meta, _ in items:
            status, error = self.outcome(meta)
            result: dict[str, Any] = {"status": status, "_id": meta["_id"]}
            if error is not None:
                result["error"] = error
            results.append({op: result})
        return {"errors": any("error" in next(iter(r.values())) for r in results), "items": results}


def action(
    doc_id: str, version: int, tracker: AckTracker, op: str = "index", table: str = "t"
) -> tuple[Action, Ticket]:
    """An action and, beside it, the ticket its settlement acknowledges."""
    source = orjson.dumps({"id": doc_id, "v": version}) if op == "index" else None
    act = Action(op, "idx", doc_id, version, source, Origin(table, "shard-1", version, b"{}"))  # type: ignore[arg-type]
    return act, tracker.register(version, version, 1)


@pytest.fixture
def rejected() -> list[tuple[Action, dict[str, Any]]]:
    return []


async def start(
    cluster: FakeCluster, rejected: list[tuple[Action, dict[str, Any]]], **config: Any
) -> tuple[BulkIndexer, asyncio.Task[None]]:
    async def on_rejected(act: Action, error: dict[str, Any]) -> None:
        rejected.append((act, error))

    settings = {"flush_interval_seconds": 0.01, "max_in_flight": 2, **config}
    indexer = BulkIndexer(cluster, BulkConfig(**settings), Metrics(), on_rejected)  # type: ignore[arg-type]
    return indexer, asyncio.create_task(indexer.run())


async def test_later_actions_on_a_document_replace_earlier_ones_in_a_batch(
    rejected: list[tuple[Action, dict[str, Any]]],
) -> None:
    cluster = FakeCluster()
    cluster.gate = asyncio.Event()
    indexer, task = await start(cluster, rejected, max_in_flight=1, flush_interval_seconds=0.2)
    tracker = AckTracker()
    for version in range(1, 6):
        await indexer.put(*action("hot", version, tracker))
    await indexer.put(*action("cold", 6, tracker))
    cluster.gate.set()
    await indexer.drain()
    await indexer.close()
    await task

    [request] = cluster.requests
    assert [(meta["_id"], meta["version"]) for _, meta, _ in request] == [("hot", 5), ("cold", 6)]
    assert tracker.outstanding == 0, "superseded actions are acknowledged with the survivor"
    assert tracker.acknowledged is not None
    assert tracker.acknowledged.sequence_number == 6


async def test_a_document_is_never_in_two_requests_at_once(
    rejected: list[tuple[Action, dict[str, Any]]],
) -> None:
    """With requests in flight on several lanes, a second batch touching a document waits for
    the first to settle: its lane sends one request at a time."""
    in_flight: set[str] = set()
    overlaps: list[str] = []
    cluster = FakeCluster()
    real_bulk = cluster.bulk

    async def watching_bulk(body: bytes) -> dict[str, Any]:
        ids = {orjson.loads(line).get("index", {}).get("_id") for line in body.splitlines()}
        ids.discard(None)
        overlaps.extend(ids & in_flight)
        in_flight.update(ids)
        await asyncio.sleep(0.01)
        try:
            return await real_bulk(body)
        finally:
            in_flight.difference_update(ids)

    cluster.bulk = watching_bulk  # type: ignore[method-assign]
    indexer, task = await start(cluster, rejected, max_in_flight=4, max_actions=3)
    tracker = AckTracker()
    for version in range(1, 200):
        await indexer.put(*action(f"doc-{version % 7}", version, tracker))
        await asyncio.sleep(0.002)  # actions keep arriving while requests are in flight
    await indexer.drain()
    await indexer.close()
    await task
    assert len(cluster.requests) > 4
    assert overlaps == []
    assert tracker.outstanding == 0


async def test_throttled_items_are_retried_and_acknowledged_after(
    rejected: list[tuple[Action, dict[str, Any]]],
) -> None:
    throttled = {"b": 2}

    def outcome(meta: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        if throttled.get(meta["_id"], 0):
            throttled[meta["_id"]] -= 1
            return 429, {"type": "es_rejected_execution_exception", "reason": "queue full"}
        return 201, None

    cluster = FakeCluster(outcome)
    indexer, task = await start(cluster, rejected, max_in_flight=1, flush_interval_seconds=0.05)
    tracker = AckTracker()
    for n, doc in enumerate(["a", "b", "c"], start=1):
        await indexer.put(*action(doc, n, tracker))
    await indexer.drain()
    await indexer.close()
    await task
    sent = [[meta["_id"] for _, meta, _ in request] for request in cluster.requests]
    assert sent == [["a", "b", "c"], ["b"], ["b"]]
    assert tracker.outstanding == 0
    assert rejected == []


async def test_retries_are_counted_for_the_tables_of_what_is_retried(
    rejected: list[tuple[Action, dict[str, Any]]],
) -> None:
    """A bulk request carries several tables' actions: a failed request is a retry for each of
    them, an item throttled alone a retry for its table only (they were counted with table=""
    before, so no per-table alert could see a table's writes failing)."""
    counted: list[tuple[str, str]] = []
    token = on_retry.set(lambda what, table: counted.append((what, table)))
    try:
        cluster = FakeCluster(
            lambda meta: (
                (429, {"type": "es_rejected_execution_exception"})
                if meta["_id"] == "u1" and len(cluster.requests) == 1
                else (201, None)
            )
        )
        cluster.fail_requests = 1
        cluster.gate = asyncio.Event()
        indexer, task = await start(cluster, rejected, max_in_flight=1, flush_interval_seconds=0.2)
    finally:
        on_retry.reset(token)
    tracker = AckTracker()
    await indexer.put(*action("o1", 1, tracker, table="orders"))
    await indexer.put(*action("u1", 2, tracker, table="users"))
    cluster.gate.set()
    await indexer.drain()
    await indexer.close()
    await task
    assert sorted(counted) == [
        ("bulk request", "orders"),
        ("bulk request", "users"),
        ("bulk request", "users"),
    ]
    assert tracker.outstanding == 0


async def test_version_conflicts_count_as_success_and_bad_documents_are_rejected(
    rejected: list[tuple[Action, dict[str, Any]]],
) -> None:
    def outcome(meta: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        if meta["_id"] == "stale":
            return 409, {"type": "version_conflict_engine_exception"}
        if meta["_id"] == "bad":
            return 400, {"type": "document_parsing_exception", "reason": "failed to parse"}
        return 201, None

    cluster = FakeCluster(outcome)
    indexer, task = await start(cluster, rejected)
    tracker = AckTracker()
    for n, doc in enumerate(["stale", "bad", "fine"], start=1):
        await indexer.put(*action(doc, n, tracker))
    await indexer.drain()
    await indexer.close()
    await task
    assert [(a.doc_id, e["type"], e["status"]) for a, e in rejected] == [
        ("bad", "document_parsing_exception", 400)
    ]
    assert tracker.outstanding == 0, "a rejected document does not block the shard"


async def test_an_unreachable_cluster_is_retried_until_it_answers(
    rejected: list[tuple[Action, dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamsync")
    cluster = FakeCluster()
    cluster.fail_requests = 3
    indexer, task = await start(cluster, rejected)
    tracker = AckTracker()
    await indexer.put(*action("a", 1, tracker))
    await asyncio.sleep(0.05)
    assert indexer.failing_since is not None
    await indexer.drain()
    assert indexer.failing_since is None
    await indexer.put(*action("b", 1, tracker))  # no outage: no second line
    await indexer.drain()
    await indexer.close()
    await task
    assert len(cluster.requests) == 2
    assert tracker.outstanding == 0
    recovered = [r for r in caplog.records if r.getMessage() == "recovered"]
    assert len(recovered) == 1, "the outage's end is logged once"
    assert recovered[0].cluster == "Elasticsearch"
    assert recovered[0].outage_seconds >= 0


async def test_a_full_queue_makes_producers_wait(
    rejected: list[tuple[Action, dict[str, Any]]],
) -> None:
    cluster = FakeCluster()
    cluster.gate = asyncio.Event()
    indexer, task = await start(cluster, rejected, max_in_flight=1, queue_size=5, max_actions=2)
    tracker = AckTracker()
    accepted = 0

    async def produce() -> None:
        nonlocal accepted
        for version in range(1, 50):
            await indexer.put(*action(f"d{version}", version, tracker))
            accepted += 1

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.2)
    # One batch taken by the lane (waiting at the gate) plus a full queue, no more.
    assert accepted <= 2 + 5
    cluster.gate.set()
    await producer
    await indexer.drain()
    await indexer.close()
    await task
    assert accepted == 49
    assert tracker.outstanding == 0
