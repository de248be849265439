"""Nothing lost, nothing stale: retries, dead letters and their replay, and the version scheme
under replays, overlapping workers, parent/child shards and deletes older than gc_deletes,
against real search nodes (dead letters, replays and gc_deletes on every engine) and moto
(throttling and server errors injected in front of moto by tests/support/moto_server.py, splits
by tests/support/streams_sim.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
import types
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamsync import replay as replay_module
from streamsync.app import StreamSync
from streamsync.config import BulkConfig
from streamsync.observability.metrics import Metrics
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.engine import SearchEngine
from streamsync.sink.ports import Ticket
from streamsync.sink.tombstones import Tombstones
from streamsync.source.acks import AckTracker
from streamsync.transform.actions import Action, ChangeRecord, Origin
from tests.support import aws, streams_sim
from tests.support.moto_server import StreamsServer
from tests.support.nodes import ROOT
from tests.support.pipeline import (
    STREAMSYNC,
    config_document,
    config_from,
    eventually,
    make_config,
    pk,
    running,
    wait_until_equal,
)
from tests.support.search import Probe, ProbeError, Target, engine_for, every_engine


async def put(ddb: Any, table: str, key: str, **attributes: Any) -> None:
    item: dict[str, Any] = {"pk": {"S": key}}
    for name, value in attributes.items():
        if isinstance(value, bool):
            item[name] = {"BOOL": value}
        elif isinstance(value, int | float):
            item[name] = {"N": str(value)}
        else:
            item[name] = {"S": str(value)}
    await ddb.put_item(TableName=table, Item=item)


async def test_throttling_and_server_errors_are_retried_visibly(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="streamsync")
    table = aws.unique_name("throttled")
    await aws.create_stream_table(clients.dynamodb, table)
    leases = aws.unique_name("leases")
    faults = streams_server.faults
    faults.inject("DescribeStream", "ThrottlingException", table=table, times=3)
    faults.inject("GetShardIterator", "InternalServerError", status=500, table=table, times=2)
    faults.inject("GetRecords", "LimitExceededException", table=table, times=5)
    faults.inject("Scan", "ProvisionedThroughputExceededException", table=leases, times=2)
    config = make_config(moto_endpoint, target, leases, [{"table": table, "index": index_name}])
    async with running(config) as sync:
        for i in range(10):
            await put(clients.dynamodb, table, f"k{i}", n=i)
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
        faults.inject("UpdateItem", "ThrottlingException", table=leases, times=3)
        await put(clients.dynamodb, table, "late", n=1)
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
    retried = {
        what: sync.metrics.value("streamsync_retries_total", operation=what, table=table)
        for what in ("DescribeStream", "GetShardIterator", "GetRecords")
    }
    retried["lease scan"] = sync.metrics.value(
        "streamsync_retries_total", operation="lease scan", table=""
    )
    assert retried == {"DescribeStream": 3, "GetShardIterator": 2, "GetRecords": 5, "lease scan": 2}
    assert any("retrying" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


@every_engine
async def test_rejected_documents_go_to_dead_letters_and_replay_once_fixed(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    """A mapping conflict, a hook that raises and a document over max_document_bytes each become
    a dead letter with everything needed to replay it, and the shard moves on past them.
    `streamsync dlq replay` then re-drives what its fix allows (the hook), keeps the rest."""
    table = aws.unique_name("poison")
    await aws.create_stream_table(clients.dynamodb, table)
    letters_index = f"{index_name}-dead"
    letters_file = tmp_path / "dead.jsonl"
    document = config_document(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": table,
                "index": index_name,
                "index_mappings": {"properties": {"qty": {"type": "long"}}},
                "transform": "tests.support.hooks:explode_unless_fixed",
                "max_document_bytes": 2000,
            }
        ],
        dead_letters={"index": letters_index, "file": str(letters_file)},
    )
    config_path = tmp_path / "tables.yaml"
    config_path.write_text(yaml.safe_dump(document))
    config = config_from(document)

    async with running(config):
        await put(clients.dynamodb, table, "good-1", qty=1)
        await put(clients.dynamodb, table, "conflict", qty="not a number")
        await put(clients.dynamodb, table, "hook", qty=2, explode=True)
        await put(clients.dynamodb, table, "huge", qty=3, text="x" * 5000)
        await put(clients.dynamodb, table, "good-2", qty=4)  # after the bad ones

        async def letters_stored() -> bool:
            return letters_file.exists() and len(letters_file.read_bytes().splitlines()) == 3

        await eventually(letters_stored)
        await wait_for_ids(probe, index_name, {"good-1", "good-2"})

        async def checkpoint_past_everything() -> bool:
            items = (await clients.dynamodb.scan(TableName=config.leases.table))["Items"]
            checkpoints = [i["checkpoint"]["S"] for i in items if "shardId" in i]
            last = streams_sim.stream_of(table).shards[0].records[-1][0]
            return checkpoints == [str(last)]

        await eventually(checkpoint_past_everything)

    lines = [orjson.loads(line) for line in letters_file.read_bytes().splitlines()]
    by_reason = {
        letter["doc_id"] or letter["record"]["dynamodb"]["Keys"]["pk"]["S"]: letter
        for letter in lines
    }
    # Elasticsearch says document_parsing_exception, OpenSearch mapper_parsing_exception.
    parsing = {
        "elasticsearch": "document_parsing_exception",
        "opensearch": "mapper_parsing_exception",
    }
    assert by_reason["conflict"]["reason"] == parsing[target.engine]
    assert by_reason["conflict"]["index"] == index_name
    assert by_reason["conflict"]["op"] == "index"
    assert "transform_error" in {by_reason["hook"]["reason"], by_reason["huge"]["reason"]}
    for letter in lines:
        assert letter["table"] == table
        assert letter["shard"] == streams_sim.stream_of(table).shards[0].shard_id
        assert int(letter["sequence_number"]) > 0
        assert letter["record"]["eventName"] == "INSERT"
        assert letter["version"] > 0
    assert await probe.count(letters_index) == 3

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOOK_FIXED": "1"}
    dry = await asyncio.to_thread(
        subprocess.run,
        [STREAMSYNC, "dlq", "replay", "--config", str(config_path), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # Both destinations hold the three letters; only the oversized one cannot be transformed.
    assert "dead letters: 6; would replay: 4; still failing: 2" in dry.stdout, dry.stderr
    assert len(letters_file.read_bytes().splitlines()) == 3, "a dry run changes nothing"

    replay = await asyncio.to_thread(
        subprocess.run,
        [STREAMSYNC, "dlq", "replay", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert replay.returncode == 1, "letters still failing give a non-zero status"
    assert "dead letters: 6; replayed: 2; still failing: 4" in replay.stdout, replay.stderr
    # Each letter that stays says why, on a line of its own (both destinations hold each).
    staying = [
        line
        for line in map(orjson.loads, replay.stderr.splitlines())
        if line.get("message", "").startswith("dead letter still failing")
    ]
    reasons = sorted((str(line["id"]), line["message"].split(": ", 1)[1]) for line in staying)
    assert len(reasons) == 4, replay.stderr
    conflict, huge = str(by_reason["conflict"]["doc_id"]), str(by_reason["huge"]["doc_id"])
    assert [id_ for id_, _ in reasons] == sorted([conflict, conflict, huge, huge])
    for id_, why in reasons:
        expected = (
            f"refused again: index: {parsing[target.engine]}"
            if id_ == conflict
            else ("the transform still fails: ")
        )
        assert why.startswith(expected), why
    await wait_for_ids(probe, index_name, {"good-1", "good-2", "hook"})
    remaining = [orjson.loads(line)["doc_id"] for line in letters_file.read_bytes().splitlines()]
    assert sorted(str(r) for r in remaining) == sorted(
        str(by_reason[k]["doc_id"]) for k in ("conflict", "huge")
    )
    assert await probe.count(letters_index) == 2


async def wait_for_ids(probe: Probe, index: str, ids: set[str]) -> None:
    async def present() -> bool:
        found = await probe.search(index, {"query": {"ids": {"values": sorted(ids)}}, "size": 100})
        return {hit["_id"] for hit in found} == ids

    await eventually(present)


def two_documents(record: ChangeRecord) -> Any:
    """A transform hook (`tests.integration.test_safety:two_documents`) that indexes each item
    twice, into `<index>-b` and then `<index>-a`, where `n` is mapped as a long: the -b
    document's `n` is never a number, the -a one's is once A_FIXED is set."""
    first, second = f"{record.index}-b", f"{record.index}-a"
    if record.new_image is None:
        return [{"op": "delete", "index": first}, {"op": "delete", "index": second}]
    fixed = 1 if os.environ.get("A_FIXED") else "not a number"
    return [
        {"op": "index", "index": first, "document": {"n": "not a number"}},
        {"op": "index", "index": second, "document": {"n": fixed}},
    ]


def dead_letter_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def test_each_dead_letter_of_a_record_is_replayed_on_its_own_outcome(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One record, two rejected documents, two dead letters. Once one of the two is fixed, the
    replay must remove that one's letter and keep the other's (keyed by shard and sequence
    number, the replay marked the wrong one failed and deleted the one still failing)."""
    table = aws.unique_name("twice")
    await aws.create_stream_table(clients.dynamodb, table)
    for suffix in ("a", "b"):
        mappings = {"properties": {"n": {"type": "long"}}}
        await probe.create_index(f"{index_name}-{suffix}", {"mappings": mappings})
    letters = tmp_path / "dead.jsonl"
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name, "transform": f"{__name__}:two_documents"}],
        dead_letters={"index": None, "file": str(letters)},
        bulk={"max_in_flight": 1},  # one lane: the letters are stored in the hook's order
    )
    async with running(config):
        await put(clients.dynamodb, table, "x", n=1)

        async def both_stored() -> bool:
            return len(dead_letter_lines(letters)) == 2

        await eventually(both_stored)
    stored = [(line["index"], line["doc_id"]) for line in dead_letter_lines(letters)]
    assert stored == [(f"{index_name}-b", "x"), (f"{index_name}-a", "x")]

    monkeypatch.setenv("A_FIXED", "1")
    async with StreamSync(config) as sync:
        report = await sync.replay_dead_letters(dry_run=False)

    assert (report.total, report.replayed, report.still_failing) == (2, 1, 1)
    remaining = [(line["index"], line["doc_id"]) for line in dead_letter_lines(letters)]
    assert remaining == [(f"{index_name}-b", "x")], "the letter still failing is the one kept"
    fixed = await probe.get(f"{index_name}-a", "x")
    assert fixed is not None
    assert fixed["_source"] == {"n": 1}


async def tombstones_of(probe: Probe, index: str, doc_id: str) -> list[dict[str, Any]]:
    """The tombstones of a document (hits: their `_index`, `_id`), whatever their day."""
    wildcard = {"expand_wildcards": "all"}
    await probe.request("POST", "/streamsync-tombstones-*/_refresh", params=wildcard, ok=(404,))
    answer = await probe.request(
        "POST",
        "/streamsync-tombstones-*/_search",
        {"query": {"ids": {"values": [f"{index}|{doc_id}"]}}},
        params=wildcard,
    )
    hits: list[dict[str, Any]] = answer["hits"]["hits"]
    return hits


@every_engine
async def test_a_replay_never_brings_back_an_item_deleted_since(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dead letter outlives everything that remembers a delete: the engine's own memory
    (index.gc_deletes, shortened here to 0) and the delete's tombstone (two days; removed here
    as its pruning would). Replaying the letter of an item deleted since must not bring it
    back; the letter is resolved, and one past dead_letters.retention_days is removed."""
    table = aws.unique_name("resurrect")
    await aws.create_stream_table(clients.dynamodb, table)
    dead = f"{index_name}-dead"
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": table,
                "index": index_name,
                "transform": "tests.support.hooks:explode_unless_fixed",
                "index_settings": {"index.gc_deletes": "0s"},
            }
        ],
        dead_letters={"index": dead},
    )
    async with running(config):
        await put(clients.dynamodb, table, "gone", n=1, explode=True)
        await put(clients.dynamodb, table, "kept", n=1, explode=True)

        async def both_stored() -> bool:
            return await probe.count(dead) == 2

        await eventually(both_stored)
        await clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "gone"}})

        async def tombstone_stored() -> bool:
            return len(await tombstones_of(probe, index_name, "gone")) == 1

        await eventually(tombstone_stored)

    # Two days later: the tombstone is gone, and the engine forgot the delete long ago (shown
    # with a probe document: an older version is accepted again after its delete).
    for tombstone in await tombstones_of(probe, index_name, "gone"):
        await probe.delete(tombstone["_index"], tombstone["_id"], refresh="true")
    await probe.put(index_name, "probe", {"n": 1}, version="10", version_type="external")
    await probe.delete(index_name, "probe", version="20", version_type="external")

    async def delete_forgotten() -> bool:
        await probe.refresh(index_name)
        await probe.request("POST", f"/{index_name}/_flush")
        try:
            await probe.put(index_name, "probe", {"n": 1}, version="11", version_type="external")
        except ProbeError as error:
            if error.status == 409:
                return False
            raise
        return True

    await eventually(delete_forgotten, within=30)
    await probe.delete(index_name, "probe")
    # And a letter older than the retention (30 days by default).
    letters = await probe.search(dead, {"size": 10})
    old = next(
        hit["_source"]
        for hit in letters
        if hit["_source"]["record"]["dynamodb"]["Keys"]["pk"]["S"] == "kept"
    )
    expired = {**old, "sequence_number": "1", "time": time.time() - 31 * 86400}
    await probe.put(dead, "expired", expired, refresh="true")

    monkeypatch.setenv("HOOK_FIXED", "1")
    async with StreamSync(config) as sync:
        report = await sync.replay_dead_letters(dry_run=False)

    assert await probe.get(index_name, "gone") is None, "the deleted item came back"
    now = await probe.get(index_name, "kept")
    assert now is not None
    assert now["_source"] == {"pk": "kept", "n": 1, "explode": True}
    assert (report.total, report.replayed, report.still_failing) == (3, 2, 0)
    assert report.expired == 1
    assert await probe.count(dead) == 0


def shifted_clock(monkeypatch: pytest.MonkeyPatch, module: Any, seconds: float) -> None:
    """This host's clock, as `module` reads it, shifted by `seconds`."""
    clock = types.SimpleNamespace(
        time=lambda: time.time() + seconds, monotonic=time.monotonic, sleep=time.sleep
    )
    monkeypatch.setattr(module, "time", clock, raising=False)


@every_engine
async def test_a_replay_indexes_the_item_as_it_is_now_and_never_over_a_newer_change(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two dead letters whose items changed since: `newer`'s change is indexed already (and
    made after the replay began, by the replay's clock), `later`'s is still in the stream. The
    replay must leave `newer`'s document as it is, counted as stale (a version conflict is
    done, never a dead letter nor an indexed document), and index `later` as the table holds
    it now, not as its letter saw it."""
    table = aws.unique_name("changed")
    await aws.create_stream_table(clients.dynamodb, table)
    dead = f"{index_name}-dead"
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": table,
                "index": index_name,
                "transform": "tests.support.hooks:explode_unless_fixed",
            }
        ],
        dead_letters={"index": dead},
    )
    async with running(config):
        await put(clients.dynamodb, table, "newer", n=1, explode=True)
        await put(clients.dynamodb, table, "later", n=1, explode=True)

        async def both_stored() -> bool:
            return await probe.count(dead) == 2

        await eventually(both_stored)
        await put(clients.dynamodb, table, "newer", n=2)
        await wait_for_ids(probe, index_name, {"newer"})
    await put(clients.dynamodb, table, "later", n=2, explode=True)  # not streamed yet
    before = await probe.get(index_name, "newer")
    assert before is not None

    shifted_clock(monkeypatch, replay_module, -3600)  # the replay began an hour ago
    monkeypatch.setenv("HOOK_FIXED", "1")
    async with StreamSync(config) as sync:
        report = await sync.replay_dead_letters(dry_run=False)

    after = await probe.get(index_name, "newer")
    assert after is not None
    assert (after["_source"], after["_version"]) == (before["_source"], before["_version"])
    assert after["_source"] == {"pk": "newer", "n": 2}
    later = await probe.get(index_name, "later")
    assert later is not None
    assert later["_source"] == {"pk": "later", "n": 2, "explode": True}
    assert (report.replayed, report.still_failing) == (2, 0)
    counted = {
        name: sync.metrics.value(f"streamsync_{name}_total", table=table)
        for name in ("documents_stale", "documents_indexed", "dead_letters")
    }
    assert counted == {"documents_stale": 1, "documents_indexed": 1, "dead_letters": 0}
    assert await probe.count(dead) == 0


async def test_dead_letters_hold_no_attribute_the_table_excludes(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    """`exclude_fields` keeps `secret` out of documents; a rejected change must not put it in
    a dead letter either (neither image), while the letter keeps the item's keys."""
    table = aws.unique_name("secret")
    await aws.create_stream_table(clients.dynamodb, table)
    dead = f"{index_name}-dead"
    letters = tmp_path / "dead.jsonl"
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": table,
                "index": index_name,
                "exclude_fields": ["secret"],
                "index_mappings": {"properties": {"qty": {"type": "long"}}},
            }
        ],
        dead_letters={"index": dead, "file": str(letters)},
    )
    async with running(config):
        await put(clients.dynamodb, table, "x", qty=1, secret="s3cr3t-old")
        await wait_for_ids(probe, index_name, {"x"})
        await put(clients.dynamodb, table, "x", qty="many", secret="s3cr3t-new")

        async def stored() -> bool:
            return len(dead_letter_lines(letters)) == 1 and await probe.count(dead) == 1

        await eventually(stored)

    [in_index] = (await probe.documents(dead)).values()
    [in_file] = dead_letter_lines(letters)
    for letter in (in_index, in_file):
        assert b"s3cr3t" not in orjson.dumps(letter)
        change = letter["record"]["dynamodb"]
        assert change["Keys"] == {"pk": {"S": "x"}}
        assert change["NewImage"] == {"pk": {"S": "x"}, "qty": {"S": "many"}}
        assert change["OldImage"] == {"pk": {"S": "x"}, "qty": {"N": "1"}}


@every_engine
async def test_replays_and_overlapping_consumers_never_go_back_in_time(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    """A second consumer (its own lease table) replays the whole stream from its start while the
    first keeps going and new writes arrive: every document's version only ever grows, and the
    index ends equal to the table."""
    table = aws.unique_name("replay")
    await aws.create_stream_table(clients.dynamodb, table)
    tables = [{"table": table, "index": index_name}]
    first = make_config(moto_endpoint, target, aws.unique_name("leases"), tables)
    replayer = make_config(moto_endpoint, target, aws.unique_name("leases"), tables)
    for round_ in range(5):
        for key in ("a", "b", "c"):
            await put(clients.dynamodb, table, key, n=round_)
    seen: dict[str, int] = {}
    went_back: list[str] = []

    async def watch_versions() -> None:
        while True:
            found = await probe.request(
                "POST",
                f"/{index_name}/_mget",
                {"ids": ["a", "b", "c"]},
                params={"realtime": "true"},
                ok=(404,),
            )
            for doc in (found or {}).get("docs", []):
                if doc.get("found"):
                    if doc["_version"] < seen.get(doc["_id"], 0):
                        went_back.append(doc["_id"])
                    seen[doc["_id"]] = doc["_version"]
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch_versions())
    try:
        async with running(first):
            await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
            async with running(replayer):
                for round_ in range(5, 10):
                    for key in ("a", "b", "c"):
                        await put(clients.dynamodb, table, key, n=round_)
                await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert went_back == []
    assert len(seen) == 3


async def test_a_child_continues_the_version_clock_of_its_parent(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    """An item changed in a parent and again in its child within the same second: the child's
    image gets the higher version (its clock starts at the parent's last), so it wins even when
    the parent's image is replayed later."""
    table = aws.unique_name("sameSecond".lower())
    await aws.create_stream_table(clients.dynamodb, table)
    sim = streams_sim.stream_of(table)
    await put(clients.dynamodb, table, "k", n=1)
    sim.rollover(sim.open_shards()[0].shard_id)
    await put(clients.dynamodb, table, "k", n=2)
    config = make_config(
        moto_endpoint, target, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    async with running(config):
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
    child = await probe.get(index_name, "k")
    assert child is not None
    child_version = child["_version"]
    # Replaying the parent's image (its version is older) must not win.
    with pytest.raises(ProbeError) as refused:
        await probe.put(
            index_name, "k", {"n": 1}, version=str(child_version - 1), version_type="external"
        )
    assert refused.value.status == 409, refused.value
    after = await probe.get(index_name, "k")
    assert after is not None
    assert after["_source"]["n"] == 2


@every_engine
async def test_a_delete_is_not_undone_by_an_older_image_after_gc_deletes(
    target: Target, probe: Probe, index_name: str
) -> None:
    """With index.gc_deletes shortened, the engine forgets a delete's version within a second,
    and a plain external-version write of an older image brings the document back (shown with a
    probe document). Through the bulk indexer, the tombstone makes it go again."""
    await probe.create_index(index_name, {"settings": {"index.gc_deletes": "0s"}})
    engine = engine_for(target)
    indexer = BulkIndexer(engine, BulkConfig(), Metrics(), _no_rejections)
    lanes = asyncio.create_task(indexer.run())
    tracker = AckTracker()

    def action(doc_id: str, version: int, document: dict[str, Any] | None) -> tuple[Action, Ticket]:
        op = "index" if document is not None else "delete"
        source = orjson.dumps(document) if document is not None else None
        act = Action(op, index_name, doc_id, version, source, Origin("t", "s", version, b"{}"))  # type: ignore[arg-type]
        return act, tracker.register(version, version, 1)

    try:
        await indexer.put(*action("gone", 10, {"n": 1}))
        await indexer.put(*action("probe", 10, {"n": 1}))
        await indexer.drain()
        await indexer.put(*action("gone", 20, None))
        await probe.request(
            "DELETE",
            f"/{index_name}/_doc/probe",
            params={"version": "20", "version_type": "external"},
        )
        await indexer.drain()

        async def delete_forgotten() -> bool:
            await probe.refresh(index_name)
            await probe.request("POST", f"/{index_name}/_flush")
            try:
                await probe.put(
                    index_name, "probe", {"n": 1}, version="11", version_type="external"
                )
            except ProbeError as error:
                if error.status == 409:
                    return False
                raise
            return True

        await eventually(delete_forgotten, within=30)
        await indexer.put(*action("gone", 10, {"n": 1}))  # the old image, late
        await indexer.drain()
    finally:
        await indexer.close()
        await lanes
        await engine.close()
    assert await probe.get(index_name, "gone") is None, "the delete stands"
    assert await probe.get(index_name, "probe") is not None, "without tombstones it came back"


async def test_an_unreadable_tombstone_is_waited_for_not_assumed_absent(
    target: Target, probe: Probe, index_name: str
) -> None:
    """The day's tombstone index is closed, so the look-up after a create answers with an
    error for it: the check must retry until it can read the tombstone, then delete again."""
    engine = engine_for(target)
    try:
        await check_an_unreadable_tombstone(engine, probe, index_name)
    finally:
        await engine.close()


async def check_an_unreadable_tombstone(
    engine: SearchEngine, probe: Probe, index_name: str
) -> None:
    tombstones = Tombstones(engine)
    await tombstones.ensure_template()

    def action(op: str, version: int) -> Action:
        source = orjson.dumps({"n": 1}) if op == "index" else None
        return Action(op, index_name, "x", version, source, Origin("t", "s", version, b"{}"))  # type: ignore[arg-type]

    # The tombstone exactly as the bulk indexer records it (the same index, id and version).
    meta_line, tombstone_line, _ = tombstones.lines(action("delete", 20)).split(b"\n")
    meta = orjson.loads(meta_line)["index"]
    day = meta["_index"]
    await probe.put(
        day,
        meta["_id"],
        orjson.loads(tombstone_line),
        version=str(meta["version"]),
        version_type=meta["version_type"],
        refresh="true",
    )
    await probe.put(index_name, "x", {"n": 1}, version="10", version_type="external")
    await probe.request("POST", f"/{day}/_close")
    try:
        check = asyncio.create_task(tombstones.bury_again([action("index", 10)]))
        await asyncio.sleep(3)
        assert not check.done(), "an error answer was taken for 'no tombstone'"
    finally:
        await probe.request("POST", f"/{day}/_open", params={"wait_for_active_shards": "1"})
    await asyncio.wait_for(check, timeout=60)
    assert await probe.get(index_name, "x") is None, "the delete stands"


async def _no_rejections(action: Action, error: dict[str, Any]) -> None:
    raise AssertionError(f"unexpected rejection of {action.doc_id}: {error}")
