"""The sink on every engine (Elasticsearch and each OpenSearch version) against real nodes:
external versions, stale writes, rejected documents, deletes of absent documents, tombstones,
dead letters, ids that need escaping, and the point-in-time scan."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.config import BulkConfig, DeadLettersConfig, TableConfig, parse_config
from streamsync.observability.metrics import Metrics
from streamsync.reindex import swap_actions
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.cluster import cluster_problems
from streamsync.sink.deadletter import DeadLetter, DeadLetters
from streamsync.sink.engine import SearchEngine
from streamsync.sink.ports import Ticket
from streamsync.sink.tombstones import Tombstones
from streamsync.source.acks import AckTracker
from streamsync.transform.actions import Action, Origin
from tests.support.pipeline import eventually
from tests.support.search import Probe, Target, engine_for, every_engine

ODD_IDS = ["a/b", "c|d", "e%20f", "g h", "ünï-ç∅dé", "h!i@j:k", "x?y#z&w=1+2", "*,;"]


def make(
    index: str, doc_id: str, version: int, document: Any, tracker: AckTracker
) -> tuple[Action, Ticket]:
    """An action and, beside it, the ticket its settlement acknowledges."""
    op = "delete" if document is None else "index"
    source = None if document is None else orjson.dumps(document)
    act = Action(op, index, doc_id, version, source, Origin("t", "s", version, b"{}"))  # type: ignore[arg-type]
    return act, tracker.register(version, version, 1)


@pytest.fixture
async def engine(target: Target) -> AsyncIterator[SearchEngine]:
    engine = engine_for(target)
    yield engine
    await engine.close()


async def index_all(
    engine: SearchEngine,
    actions: list[tuple[Action, Ticket]],
    rejected: list[dict[str, Any]],
    **bulk: Any,
) -> Metrics:
    async def on_rejected(_: Action, error: dict[str, Any]) -> None:
        rejected.append(error)

    metrics = Metrics()
    tombstones = Tombstones(engine)
    await tombstones.ensure_template()
    indexer = BulkIndexer(engine, BulkConfig(**bulk), metrics, on_rejected, tombstones)
    lanes = asyncio.create_task(indexer.run())
    for act, ticket in actions:
        await indexer.put(act, ticket)
    await indexer.drain()
    await indexer.close()
    await lanes
    return metrics


@every_engine
async def test_versions_order_writes_and_bad_documents_do_not_block(
    engine: SearchEngine, probe: Probe, index_name: str
) -> None:
    await probe.create_index(index_name, {"mappings": {"properties": {"n": {"type": "long"}}}})
    rejected: list[dict[str, Any]] = []
    tracker = AckTracker()
    first = [
        make(index_name, "a", 20, {"n": 2}, tracker),
        make(index_name, "gone", 21, None, tracker),  # never existed
        make(index_name, "bad", 22, {"n": "not a number"}, tracker),
        make(index_name, "b", 23, {"n": 3}, tracker),
    ]
    metrics = await index_all(engine, first, rejected, max_in_flight=2)
    stale = await index_all(engine, [make(index_name, "a", 10, {"n": 1}, tracker)], rejected)

    await probe.refresh(index_name)
    a = await probe.get(index_name, "a")
    assert a is not None
    assert (a["_source"], a["_version"]) == ({"n": 2}, 20)
    b = await probe.get(index_name, "b")
    assert b is not None
    assert b["_source"] == {"n": 3}
    assert await probe.get(index_name, "bad") is None
    # Elasticsearch says document_parsing_exception, OpenSearch mapper_parsing_exception.
    assert [(e["status"], e["type"]) for e in rejected] in (
        [(400, "document_parsing_exception")],
        [(400, "mapper_parsing_exception")],
    )
    assert tracker.outstanding == 0
    assert metrics.value("streamsync_documents_indexed_total", table="t") == 2  # a, b
    assert metrics.value("streamsync_documents_deleted_total", table="t") == 1
    # The older image is acknowledged (a version conflict is "already newer"), not written, and
    # counted as stale, not as indexed.
    assert stale.value("streamsync_documents_indexed_total", table="t") == 0
    assert stale.value("streamsync_documents_stale_total", table="t") == 1


@every_engine
async def test_a_delete_outlives_gc_deletes_through_its_tombstone(
    engine: SearchEngine, probe: Probe, index_name: str
) -> None:
    """With gc_deletes at 0 the engine forgets a delete at once; an older image arriving later
    must still not bring the document back."""
    await probe.create_index(index_name, {"settings": {"index.gc_deletes": "0s"}})
    tracker = AckTracker()
    await index_all(engine, [make(index_name, "k", 5, {"n": 5}, tracker)], [])
    await index_all(engine, [make(index_name, "k", 7, None, tracker)], [])
    await asyncio.sleep(1)  # past gc_deletes (0 s) and a refresh
    await index_all(engine, [make(index_name, "k", 6, {"n": 6}, tracker)], [])

    await probe.refresh(index_name)
    assert await probe.get(index_name, "k") is None
    assert tracker.outstanding == 0


@every_engine
async def test_ids_that_need_escaping_round_trip(
    engine: SearchEngine, probe: Probe, index_name: str
) -> None:
    tracker = AckTracker()
    actions = [make(index_name, i, 3, {"id": i}, tracker) for i in ODD_IDS]
    await index_all(engine, actions, [])
    assert set((await probe.documents(index_name)).keys()) == set(ODD_IDS)

    for doc_id in ODD_IDS:
        await engine.put_document(index_name, doc_id, {"id": doc_id, "again": True})
    found = await engine.mget([{"_index": index_name, "_id": i} for i in ODD_IDS])
    assert [doc["_source"] for doc in found] == [{"id": i, "again": True} for i in ODD_IDS]

    for doc_id in ODD_IDS:
        await engine.delete_document(index_name, doc_id)
    await engine.delete_document(index_name, "never-there")  # absent: nothing happens
    assert await probe.documents(index_name) == {}


@every_engine
async def test_a_scan_pages_through_every_document_once(
    engine: SearchEngine, probe: Probe, index_name: str
) -> None:
    tracker = AckTracker()
    await index_all(
        engine, [make(index_name, f"d{n}", 2, {"n": n}, tracker) for n in range(53)], []
    )
    await engine.refresh(index_name)

    pages = [page async for page in engine.scan(index_name, page_size=10)]

    assert [len(page) for page in pages] == [10, 10, 10, 10, 10, 3]
    assert sorted(hit["_id"] for page in pages for hit in page) == sorted(
        f"d{n}" for n in range(53)
    )


@every_engine
async def test_dead_letters_are_stored_once_per_record(
    engine: SearchEngine, probe: Probe, index_name: str
) -> None:
    letters = DeadLetters(engine, DeadLettersConfig(index=f"{index_name}-dlq"), Metrics())
    await letters.ensure_index()
    letter = DeadLetter("t", "shard-1", "42", 42, "oops", {"type": "oops"}, {"dynamodb": {}})
    await letters.put(letter)
    await letters.put(letter)  # stored again after a replay: still one copy

    stored = await probe.documents(f"{index_name}-dlq")
    assert [doc["sequence_number"] for doc in stored.values()] == ["42"]


def scanned_letter(key: str, **fields: Any) -> DeadLetter:
    """A letter of an item a backfill scanned (shard `backfill`, sequence number 0)."""
    record = {
        "eventName": "INSERT",
        "dynamodb": {"Keys": {"pk": {"S": key}}, "SequenceNumber": "0"},
    }
    defaults: dict[str, Any] = {
        "table": "ttt",
        "shard": "backfill",
        "sequence_number": "0",
        "version": 9,
        "reason": "transform_error",
        "error": {"type": "transform_error", "reason": "boom"},
        "record": record,
    }
    return DeadLetter(**{**defaults, **fields})


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"S": "bottom"}
    for level in range(depth):
        value = {"M": {f"level.{level}": value, "": {"S": "empty name"}}}
    return value


@every_engine
async def test_the_dead_letter_index_takes_any_letter_and_each_once(
    engine: SearchEngine, probe: Probe, index_name: str
) -> None:
    """A hook's id over the keyword limit, a record nested deeper than the engine maps, odd
    field names, an error of any shape: the dead-letter index must take them all (a refused
    letter used to be retried forever, blocking its lane and, by back-pressure, every shard).
    Letters of different scanned items are different letters, however alike."""
    dlq = f"{index_name}-dlq"
    metrics = Metrics()
    tables = [TableConfig(table="ttt", index="iii")]  # its images are kept, whole
    letters = DeadLetters(engine, DeadLettersConfig(index=dlq), metrics, tables)
    await letters.ensure_index()
    long_id = "x" * 40_000
    deep = replace(
        scanned_letter("deep"),
        record={"dynamodb": {"Keys": {"pk": {"S": "deep"}}, "NewImage": nested(40)["M"]}},
        error={"type": ["not", "a", "keyword"], "caused_by": {"reason": 3}},
    )
    batch = [
        scanned_letter("a", op="index", index="hooked", doc_id=long_id, reason="y" * 40_000),
        deep,
        scanned_letter("b"),
        scanned_letter("c"),
        scanned_letter("c"),  # the same letter again: one copy
    ]
    async with asyncio.timeout(60):
        for letter in batch:
            await letters.put(letter)

    stored = await probe.documents(dlq)
    assert len(stored) == 4
    assert sorted(doc["record"]["dynamodb"]["Keys"]["pk"]["S"] for doc in stored.values()) == [
        "a",
        "b",
        "c",
        "deep",
    ]
    assert any(doc["doc_id"] == long_id for doc in stored.values())
    assert metrics.value("streamsync_dead_letters_refused_total", table="ttt") == 0


@every_engine
async def test_a_letter_the_dead_letter_index_refuses_goes_to_the_file(
    engine: SearchEngine, probe: Probe, index_name: str, tmp_path: Path
) -> None:
    """An index created beforehand with other mappings refuses a letter (400): it must be kept
    in the file and counted, and `put` must return, so the shard moves on."""
    dlq = f"{index_name}-dlq"
    await probe.create_index(dlq, {"mappings": {"properties": {"doc_id": {"type": "long"}}}})
    metrics = Metrics()
    file = tmp_path / "dead.jsonl"
    letters = DeadLetters(engine, DeadLettersConfig(index=dlq, file=file), metrics)
    await letters.ensure_index()
    async with asyncio.timeout(60):
        await letters.put(scanned_letter("a", op="index", index="i", doc_id="not a number"))
        await letters.put(scanned_letter("b", op="index", index="i", doc_id="12"))

    assert [doc["doc_id"] for doc in (await probe.documents(dlq)).values()] == ["12"]
    kept = [orjson.loads(line)["doc_id"] for line in file.read_bytes().splitlines()]
    assert kept == ["not a number", "12"]
    assert metrics.value("streamsync_dead_letters_refused_total", table="ttt") == 1


@every_engine
async def test_letters_past_their_retention_are_deleted(
    engine: SearchEngine, probe: Probe, index_name: str
) -> None:
    dlq = f"{index_name}-dlq"
    config = DeadLettersConfig(index=dlq, retention_days=30)
    letters = DeadLetters(engine, config, Metrics())
    await letters.ensure_index()
    day = 86400
    now = time.time()
    await letters.put(scanned_letter("old", time=now - 31 * day))
    await letters.put(scanned_letter("recent", time=now - 29 * day))
    await letters.put(scanned_letter("new"))
    await probe.refresh(dlq)

    await DeadLetters(engine, config, Metrics()).ensure_index()  # the next start

    async def only_recent_ones() -> bool:
        stored = await probe.documents(dlq)
        keys = sorted(doc["record"]["dynamodb"]["Keys"]["pk"]["S"] for doc in stored.values())
        return keys == ["new", "recent"]

    await eventually(only_recent_ones, within=30)


@every_engine
async def test_the_cluster_check_names_the_engine_and_passes(engine: SearchEngine) -> None:
    config = parse_config(
        '{"aws": {"region": "us-east-1"}, "elasticsearch": {"hosts": ["http://x:1"]}, '
        '"tables": [{"table": "ttt", "index": "iii"}]}'
    )
    assert await cluster_problems(engine, config) == []
    assert (await engine.identify()).product == engine.product


@every_engine
async def test_the_wrong_engine_for_a_cluster_is_named_with_the_fix(target: Target) -> None:
    """An OpenSearch cluster described as `elasticsearch:` (and the other way round) is one line
    naming the section to use instead."""
    other = "opensearch" if target.engine == "elasticsearch" else "elasticsearch"
    swapped = Target(other, target.version, target.url)
    engine = engine_for(swapped)
    try:
        config = parse_config(
            orjson.dumps(
                {
                    "aws": {"region": "us-east-1"},
                    **swapped.section(),
                    "tables": [{"table": "ttt", "index": "iii"}],
                }
            ).decode()
        )
        [problem] = await cluster_problems(engine, config)
    finally:
        await engine.close()
    assert f"describe it in an `{target.engine}:` section instead of `{other}:`" in problem


async def test_through_an_alias_a_delete_outlives_gc_deletes_and_the_alias_moving(
    engine: SearchEngine, probe: Probe, index_name: str
) -> None:
    """Writes go through a table's alias; its tombstones are keyed by the alias, so a delete
    made in the old index still buries an older image arriving after a reindex moved the alias
    (a lagging worker's late write): the re-delete goes through the alias too."""
    old, new = f"{index_name}-1", f"{index_name}-2"
    settings = {"settings": {"index.gc_deletes": "0s"}}
    await probe.create_index(old, {**settings, "aliases": {index_name: {"is_write_index": True}}})
    await probe.create_index(new, settings)
    assert await engine.alias_indices(index_name) == [old]
    assert await engine.alias_indices(old) is None, "an index is no alias"
    assert await engine.alias_indices(f"{index_name}-none") is None
    tracker = AckTracker()
    await index_all(engine, [make(index_name, "k", 5, {"n": 5}, tracker)], [])
    await index_all(engine, [make(index_name, "k", 7, None, tracker)], [])
    await engine.update_aliases(swap_actions(index_name, [old], new))
    assert await engine.alias_indices(index_name) == [new]
    await asyncio.sleep(1)  # past gc_deletes (0 s) and a refresh
    await index_all(engine, [make(index_name, "k", 6, {"n": 6}, tracker)], [])

    await probe.refresh(new)
    assert await probe.get(new, "k") is None
    assert tracker.outstanding == 0
