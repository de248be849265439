"""The bulk indexer against a real Elasticsearch node: external versions, stale writes,
rejected documents and deletes of absent documents."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch

from streamsync.config import BulkConfig
from streamsync.leases.checkpoints import AckTracker
from streamsync.observability.metrics import Metrics
from streamsync.sink.bulk import BulkIndexer
from streamsync.transform.actions import Action, Origin


def make(index: str, doc_id: str, version: int, document: Any, tracker: AckTracker) -> Action:
    op = "delete" if document is None else "index"
    source = None if document is None else orjson.dumps(document)
    act = Action(op, index, doc_id, version, source, Origin("t", "s", version, {}))  # type: ignore[arg-type]
    act.ack = tracker.register(version, version, 1)
    return act


async def test_versions_order_writes_and_bad_documents_do_not_block(
    es: AsyncElasticsearch, index_name: str
) -> None:
    await es.indices.create(index=index_name, mappings={"properties": {"n": {"type": "long"}}})
    rejected: list[dict[str, Any]] = []

    async def on_rejected(_: Action, error: dict[str, Any]) -> None:
        rejected.append(error)

    metrics = Metrics()
    indexer = BulkIndexer(es, BulkConfig(max_in_flight=2), metrics, on_rejected)
    lanes = asyncio.create_task(indexer.run())
    tracker = AckTracker()
    for act in [
        make(index_name, "a", 20, {"n": 2}, tracker),
        make(index_name, "gone", 21, None, tracker),  # never existed
        make(index_name, "bad", 22, {"n": "not a number"}, tracker),
        make(index_name, "b", 23, {"n": 3}, tracker),
    ]:
        await indexer.put(act)
    await indexer.drain()
    await indexer.put(make(index_name, "a", 10, {"n": 1}, tracker))  # older image, replayed
    await indexer.drain()
    await indexer.close()
    await lanes

    await es.indices.refresh(index=index_name)
    a = await es.get(index=index_name, id="a")
    assert (a["_source"], a["_version"]) == ({"n": 2}, 20)
    assert (await es.get(index=index_name, id="b"))["_source"] == {"n": 3}
    assert not (await es.exists(index=index_name, id="bad"))
    assert [(e["status"], e["type"]) for e in rejected] == [(400, "document_parsing_exception")]
    assert tracker.outstanding == 0
    assert metrics.value("streamsync_documents_indexed_total", table="t") == 3  # a, b, stale a
    assert metrics.value("streamsync_documents_deleted_total", table="t") == 1
