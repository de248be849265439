"""Dead letters without a cluster: their keys, what they keep of a record, how storing one
fails (a refusal falls back loudly, an outage is waited out), their retention, and a version
conflict that is never one (issue 13, items 3 and 13). The same paths run against real nodes in
tests/integration/test_sink.py and test_safety.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.config import BulkConfig, DeadLettersConfig, TableConfig, parse_config
from streamsync.errors import ConfigError
from streamsync.observability.metrics import Metrics
from streamsync.replay import request_key
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.deadletter import DeadLetter, DeadLetters, locked
from streamsync.sink.engine import Identity, PointInTime, Refused, SearchEngine, Unreachable
from streamsync.sink.letterstore import _rewrite_without
from streamsync.source.acks import AckTracker
from streamsync.transform.actions import Action, Origin
from streamsync.transform.records import removed_record

Answer = Callable[[str, str], Any]  # (method, path) -> an answer, or raises


class FakeEngine(SearchEngine):
    """Records every request; `answer` decides what each gets (by default an empty success)."""

    product = "Elasticsearch"
    section = "elasticsearch"

    def __init__(self, answer: Answer | None = None) -> None:
        self.requests: list[tuple[str, str, Mapping[str, str] | None, Any]] = []
        self._answer = answer

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        *,
        ndjson: bool = False,
    ) -> Any:
        if body and ndjson:
            parsed: Any = [orjson.loads(line) for line in body.splitlines()]
        else:
            parsed = orjson.loads(body) if body else None
        self.requests.append((method, path, params, parsed))
        return self._answer(method, path) if self._answer is not None else {}

    def stored(self) -> list[tuple[str, Any]]:
        """(path, document) of every PUT of a document."""
        return [(path, body) for method, path, _, body in self.requests if method == "PUT"]

    def describe(self) -> str:
        return "fake"

    @property
    def auth_hint(self) -> str:
        return ""

    async def identify(self) -> Identity:
        return Identity("Elasticsearch", "8.19.0")

    async def close(self) -> None:
        pass

    async def open_point_in_time(self, index: str, keep_alive: str) -> PointInTime:
        raise NotImplementedError

    async def close_point_in_time(self, pit: PointInTime) -> None:
        raise NotImplementedError


def scanned(pk: str, **attributes: str) -> dict[str, Any]:
    """A record as backfill dresses a scanned item: sequence number 0 for every item."""
    image = {"pk": {"S": pk}, **{k: {"S": v} for k, v in attributes.items()}}
    return {
        "eventName": "INSERT",
        "dynamodb": {"Keys": {"pk": {"S": pk}}, "NewImage": image, "SequenceNumber": "0"},
    }


def letter(record: dict[str, Any], **fields: Any) -> DeadLetter:
    defaults: dict[str, Any] = {
        "table": "orders",
        "shard": "backfill",
        "sequence_number": "0",
        "version": 7,
        "reason": "transform_error",
        "error": {"type": "transform_error", "reason": "boom"},
        "record": record,
    }
    return DeadLetter(**{**defaults, **fields})


def test_each_letter_has_its_own_key_and_keeps_it() -> None:
    """Backfill letters (shard `backfill`, sequence 0, no action) of different items, and the
    letters of several actions of one record, must not share a key: each would overwrite the
    last in the index while the checkpoint moves past it."""
    scanned_items = [letter(scanned(pk)) for pk in ("a", "b", "c")]
    one_record = [
        letter(scanned("a"), op="index", index=name, doc_id="a") for name in ("one", "two")
    ]
    keys = [x.key for x in scanned_items + one_record]
    assert len(set(keys)) == len(keys)

    again = letter(scanned("a"))
    assert again.key == scanned_items[0].key, "the same letter, stored twice, is one copy"
    assert DeadLetter.from_json(again.to_json()).key == again.key
    key_order = letter({"dynamodb": {"Keys": {"sk": {"N": "1"}, "pk": {"S": "a"}}}})
    other_order = letter({"dynamodb": {"Keys": {"pk": {"S": "a"}, "sk": {"N": "1"}}}})
    assert key_order.key == other_order.key


async def test_a_letter_keeps_only_what_documents_may_hold(tmp_path: Path) -> None:
    """An attribute `exclude_fields` keeps out of documents (or one `include_fields` leaves
    out) must not reach the dead letters, in either image; the keys stay."""
    engine = FakeEngine()
    tables = [
        TableConfig(table="orders", index="orders", exclude_fields=["secret"]),
        TableConfig(table="users", index="users", include_fields=["name"]),
    ]
    config = DeadLettersConfig(index="dlq", file=tmp_path / "dead.jsonl")
    letters = DeadLetters(engine, config, Metrics(), tables)
    images = {"pk": {"S": "k"}, "name": {"S": "n"}, "secret": {"S": "hunter2"}}
    record = {
        "eventName": "MODIFY",
        "dynamodb": {
            "Keys": {"pk": {"S": "k"}},
            "NewImage": images,
            "OldImage": images,
            "SequenceNumber": "5",
        },
    }
    await letters.put(letter(record, table="orders", shard="s", sequence_number="5"))
    await letters.put(letter(record, table="users", shard="s", sequence_number="5"))
    await letters.put(letter(record, table="unknown", shard="s", sequence_number="5"))

    in_file = [orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    in_index = [document for _, document in engine.stored()]
    assert in_index == in_file
    assert b"hunter2" not in (tmp_path / "dead.jsonl").read_bytes()
    orders, users, unknown = (stored["record"]["dynamodb"] for stored in in_file)
    assert orders["NewImage"] == orders["OldImage"] == {"pk": {"S": "k"}, "name": {"S": "n"}}
    assert users["NewImage"] == users["OldImage"] == {"name": {"S": "n"}}
    assert "NewImage" not in unknown
    assert "OldImage" not in unknown
    for stored in (orders, users, unknown):
        assert stored["Keys"] == {"pk": {"S": "k"}}, "replay needs the keys"


def refusing(status: int, times: int | None = None) -> Answer:
    """Refuses every PUT of a document (or the first `times`) with `status`."""
    left = [times]

    def answer(method: str, path: str) -> Any:
        if method == "PUT" and "/_doc/" in path and (left[0] is None or left[0] > 0):
            if left[0] is not None:
                left[0] -= 1
            raise Refused(status, "document_parsing_exception", "failed to parse [doc_id]")
        return {}

    return answer


async def test_a_letter_the_index_refuses_is_kept_in_the_file_and_the_caller_moves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 will be a 400 forever: retrying it inside a bulk lane would block that lane and,
    by back-pressure, every shard."""
    metrics = Metrics()
    file = tmp_path / "dead.jsonl"
    letters = DeadLetters(FakeEngine(refusing(400)), DeadLettersConfig(file=file), metrics)
    async with asyncio.timeout(10):
        await letters.put(letter(scanned("a")))
    [kept] = [orjson.loads(line) for line in file.read_bytes().splitlines()]
    assert DeadLetter.from_json(kept).key == letter(scanned("a")).key
    assert metrics.value("streamsync_dead_letters_refused_total", table="orders") == 1
    refused = [r for r in caplog.records if "refused a dead letter" in r.getMessage()]
    assert [r.levelname for r in refused] == ["ERROR"]
    assert str(file) in refused[0].getMessage()


async def test_a_refused_letter_without_a_file_is_logged_in_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    letters = DeadLetters(FakeEngine(refusing(400)), DeadLettersConfig(), metrics)
    async with asyncio.timeout(10):
        await letters.put(letter(scanned("a")))
    assert metrics.value("streamsync_dead_letters_refused_total", table="orders") == 1
    [logged] = [r for r in caplog.records if "only copy of the letter" in r.getMessage()]
    assert logged.levelname == "ERROR"
    kept = logged.__dict__["dead_letter"]
    assert DeadLetter.from_json(kept).key == letter(scanned("a")).key
    assert kept["error"] == {"type": "transform_error", "reason": "boom"}


@pytest.mark.parametrize(
    "failure",
    [Unreachable("connection refused"), Refused(503, "unavailable", ""), Refused(429, "x", "")],
    ids=["unreachable", "503", "429"],
)
async def test_an_outage_is_waited_out_not_taken_for_a_refusal(failure: Exception) -> None:
    failures = [failure, failure]

    def answer(method: str, path: str) -> Any:
        if method == "PUT" and failures:
            raise failures.pop()
        return {}

    engine = FakeEngine(answer)
    metrics = Metrics()
    letters = DeadLetters(engine, DeadLettersConfig(), metrics)
    await letters.put(letter(scanned("a")))
    assert len(engine.stored()) == 3, "two failures, then stored"
    assert metrics.value("streamsync_dead_letters_refused_total", table="orders") == 0


async def test_letters_past_their_retention_are_deleted() -> None:
    pages = [["old-1", "old-2"], []]

    def answer(method: str, path: str) -> Any:
        if path.endswith("/_search"):
            return {"hits": {"hits": [{"_id": doc_id} for doc_id in pages.pop(0)]}}
        if path == "/_bulk":
            return {"items": [{"delete": {"status": 200}}, {"delete": {"status": 200}}]}
        return None if method == "HEAD" else {}

    engine = FakeEngine(answer)
    config = parse_config(
        '{"aws": {"region": "us-east-1"}, "elasticsearch": {"hosts": ["http://x:1"]}, '
        '"tables": [{"table": "ttt", "index": "iii"}], '
        '"dead_letters": {"index": "dlq", "retention_days": 7}}'
    )
    assert DeadLettersConfig().retention_days == 30, "the default"
    letters = DeadLetters(engine, config.dead_letters, Metrics())
    await letters.ensure_index()  # at every start
    await letters.put(letter(scanned("a")))  # not an hour later: no second pruning
    searched = [body for _, path, _, body in engine.requests if path.endswith("/_search")]
    assert [body["query"] for body in searched] == [{"range": {"time": {"lt": "now-7d"}}}] * 2
    deleted = [body for _, path, _, body in engine.requests if path == "/_bulk"]
    assert deleted == [
        [
            {"delete": {"_index": "dlq", "_id": "old-1"}},
            {"delete": {"_index": "dlq", "_id": "old-2"}},
        ]
    ]


def test_a_retention_must_be_a_day_or_more() -> None:
    with pytest.raises(ConfigError, match=r"dead_letters\.retention_days: must be at least 1"):
        parse_config(
            '{"aws": {"region": "us-east-1"}, "elasticsearch": {"hosts": ["http://x:1"]}, '
            '"tables": [{"table": "ttt", "index": "iii"}], "dead_letters": {"retention_days": 0}}'
        )


class _Conflicts:
    """A bulk answer: every item a version conflict (an older image than the document's)."""

    async def bulk(self, body: bytes) -> dict[str, Any]:
        metas = [next(iter(orjson.loads(line).values())) for line in body.splitlines()[::2]]
        conflict = {"type": "version_conflict_engine_exception"}
        return {"items": [{"index": {"status": 409, "error": conflict}} for _ in metas]}


async def test_a_version_conflict_is_counted_as_stale_never_as_indexed_nor_dead() -> None:
    metrics = Metrics()
    rejected: list[Action] = []

    async def on_rejected(action: Action, error: dict[str, Any]) -> None:
        rejected.append(action)

    config = BulkConfig(flush_interval_seconds=0.01)
    indexer = BulkIndexer(_Conflicts(), config, metrics, on_rejected)  # type: ignore[arg-type]
    lanes = asyncio.create_task(indexer.run())
    tracker = AckTracker()
    older = Action("index", "idx", "a", 3, b'{"n":1}', Origin("orders", "s", 3, b"{}"))
    await indexer.put(older, tracker.register(3, 3, 1))
    await indexer.drain()
    await indexer.close()
    await lanes
    assert tracker.outstanding == 0, "acknowledged: the document is newer already"
    assert rejected == []
    assert metrics.value("streamsync_documents_stale_total", table="orders") == 1
    assert metrics.value("streamsync_documents_indexed_total", table="orders") == 0


def test_a_replay_reads_an_item_by_the_keys_its_letter_keeps() -> None:
    """Stream records carry binary keys as base64 text; GetItem (botocore) takes bytes."""
    keys = {"pk": {"B": "AAEC"}, "sk": {"N": "1"}}
    assert request_key(keys) == {"pk": {"B": b"\x00\x01\x02"}, "sk": {"N": "1"}}
    gone = removed_record(keys, 12.0)
    assert gone.event_name == gone.raw["eventName"] == "REMOVE"
    assert gone.keys == gone.raw["dynamodb"]["Keys"] == keys
    assert gone.old_image is None, "nothing of the letter's image is replayed"
    assert "OldImage" not in gone.raw["dynamodb"]


async def test_a_letter_appended_while_the_file_is_rewritten_is_kept(tmp_path: Path) -> None:
    """A worker appends a letter (its file open, the lock held) while `dlq delete` or `dlq
    replay` removes another: without the lock, the rewrite replaced the file under the worker,
    whose letter went to the old file and was lost."""
    path = tmp_path / "dead.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n')
    with path.open("ab") as appending, locked(path):
        rewrite = asyncio.create_task(asyncio.to_thread(_rewrite_without, path, {0}))
        await asyncio.sleep(1)  # the rewrite, were it not waiting, is done by now
        appending.write(b'{"n": 3}\n')
        appending.flush()  # before the lock is released, as DeadLetters does
    await rewrite
    assert path.read_bytes() == b'{"n": 2}\n{"n": 3}\n'
