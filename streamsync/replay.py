"""`streamsync dlq replay`: re-drive dead letters once their cause is fixed.

A letter may be older than anything else streamsync remembers: the item may have changed since,
or been deleted (a delete's tombstone lasts two days, a letter `retention_days`). So a replay
never indexes the letter's own image, nor at the letter's version. It reads the item as it is
now (a consistent GetItem, by the keys the letter keeps), puts that through the table's current
transform (so a fixed hook or mapping applies) and indexes the result at the version of a scan
that began when the replay did (`scan_version`, as backfill and verify's repairs do): every
stream change made since outranks it, so a replay never overwrites a newer document (the engine
refuses it as stale, which counts as done). When the item no longer exists, what a REMOVE of it
gives is applied instead (for the default transform: the document is deleted, with its
tombstone) at that same version, so a replay never brings a deleted item back. A table that
keeps the documents of expired items (`ttl_expirations: ignore`) cannot tell a deleted item
from an expired one: there, nothing is written for an item that is gone.

Letters of one item are replayed together (one read, one set of actions), and each letter is
judged by its own outcome: a letter that named a document still fails when that document is
refused again; a letter of a record that could not be transformed still fails when any of its
item's documents is refused, or the transform fails again. Letters that went through are
removed from their destination; the others stay, with their new error logged. Letters older
than `retention_days` are removed without a replay.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from botocore.exceptions import ParamValidationError

from streamsync.awsjson import AwsError
from streamsync.awsjson import is_transient as is_aws_transient
from streamsync.config import Config, DeadLettersConfig
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.deadletter import DeadLetter
from streamsync.sink.engine import SearchEngine
from streamsync.source.client import StreamsApi
from streamsync.transform.actions import Action, RecordTransformer, TransformError
from streamsync.transform.records import removed_record, scanned_record
from streamsync.transform.versions import scan_version

log = logging.getLogger("streamsync.deadletters")

SOURCE = "replay"  # the "shard" of replayed actions, in logs

Document = tuple[str, str]  # (index, id)


@dataclass
class ReplayReport:
    total: int = 0
    replayed: int = 0
    still_failing: int = 0
    skipped: int = 0  # their table is not in the configuration
    expired: int = 0  # older than dead_letters.retention_days: removed, not replayed

    def summary(self, dry_run: bool) -> str:
        verb = "would replay" if dry_run else "replayed"
        expired = "would expire" if dry_run else "expired"
        return (
            f"dead letters: {self.total}; {verb}: {self.replayed}; still failing: "
            f"{self.still_failing}; skipped (table not configured): {self.skipped}; "
            f"{expired} (older than retention_days): {self.expired}"
        )


@dataclass(eq=False)
class _Item:
    """An item's replay: the documents its actions wrote, or that its transform failed."""

    failed: bool = False
    documents: frozenset[Document] = frozenset()
    why: str = ""  # when it failed: the reason, for the letter's own line


@dataclass(eq=False)
class _Stored:
    """A stored letter: where it is, its id there, and what its replay depends on."""

    where: str
    stored_id: str
    letter: DeadLetter
    item: _Item | None = None  # None: the letter names no item, it cannot be replayed
    documents: frozenset[Document] = field(default_factory=frozenset)

    def succeeded(self, refused: dict[Document, str]) -> bool:
        return self.why_failing(refused) is None

    def why_failing(self, refused: dict[Document, str]) -> str | None:
        """None when the letter went through; otherwise why it did not."""
        if self.item is None:
            return "the letter names no item (its record has no keys)"
        if self.item.failed:
            return self.item.why
        again = sorted(refused[document] for document in self.documents & refused.keys())
        return f"refused again: {'; '.join(again)}" if again else None

    @property
    def fields(self) -> dict[str, object]:
        letter = self.letter
        return {
            "table": letter.table,
            "index": letter.index,
            "id": letter.doc_id,
            "dead_letter": f"{self.where} {self.stored_id}",
        }


async def _letters(
    engine: SearchEngine, config: DeadLettersConfig
) -> AsyncIterator[tuple[str, str, DeadLetter]]:
    """(where, its id there, the letter) for every stored dead letter."""
    if config.index is not None and await engine.index_exists(config.index):
        await engine.refresh(config.index)
        async for hits in engine.scan(config.index, page_size=500):
            for hit in hits:
                if not _is_letter(hit["_source"]):
                    # Not one of ours (a Serverless start-up probe left by a crash, say).
                    log.warning(
                        "not a dead letter; left alone",
                        extra={"index": config.index, "id": hit["_id"]},
                    )
                    continue
                yield "index", hit["_id"], DeadLetter.from_json(hit["_source"])
    if config.file is not None and config.file.exists():
        for number, line in enumerate(config.file.read_bytes().splitlines()):
            if line.strip():
                yield "file", str(number), DeadLetter.from_json(orjson.loads(line))


def _is_letter(source: dict[str, Any]) -> bool:
    return all(name in source for name in ("table", "shard", "sequence_number", "record"))


def request_key(keys: dict[str, Any]) -> dict[str, Any]:
    """An item's keys as the stream sends them (binary as base64 text) to botocore's form."""
    return {
        name: {"B": base64.b64decode(value["B"])}
        if isinstance(value, dict) and isinstance(value.get("B"), str)
        else value
        for name, value in keys.items()
    }


def _readable_later(error: BaseException) -> bool:
    # Keys botocore refuses to send (a letter edited by hand) will not get better.
    return is_aws_transient(error) and not isinstance(error, ParamValidationError)


class Replayer:
    def __init__(
        self,
        engine: SearchEngine,
        api: StreamsApi,
        config: Config,
        transformers: dict[str, RecordTransformer],
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self._api = api
        self._config = config
        self._transformers = transformers
        self._metrics = metrics if metrics is not None else Metrics()
        self._refused: dict[Document, str] = {}  # document -> why the cluster refused it

    async def refused_again(self, action: Action, error: dict[str, Any]) -> None:
        """The bulk indexer's `on_rejected`: the letter stays, and says so."""
        why = f"{action.op}: {error.get('type', 'rejected')}: {error.get('reason', '')}"
        self._refused[(action.index, action.doc_id)] = why.rstrip(": ")

    async def replay(self, sink: BulkIndexer | None) -> ReplayReport:
        """Replays every stored letter through `sink` (whose `on_rejected` is `refused_again`),
        and removes the letters whose documents were written; with no sink (a dry run), only
        finds out which would go through."""
        started = time.time()
        version = scan_version(started)
        cutoff = started - self._config.dead_letters.retention_days * 86400
        report = ReplayReport()
        items: dict[bytes, _Item] = {}
        stored: list[_Stored] = []
        expired: list[_Stored] = []
        async for where, stored_id, letter in _letters(self._engine, self._config.dead_letters):
            report.total += 1
            transformer = self._transformers.get(letter.table)
            if transformer is None:
                report.skipped += 1
                continue
            entry = _Stored(where, stored_id, letter)
            if letter.time and letter.time < cutoff:
                expired.append(entry)
                continue
            stored.append(entry)
            keys = letter.item_keys
            if not keys:
                continue  # it cannot be replayed: said with the letters still failing
            item_id = orjson.dumps([letter.table, keys], option=orjson.OPT_SORT_KEYS)
            item = items.get(item_id)
            if item is None:
                item = items[item_id] = await self._replay_item(
                    transformer, keys, version, started, sink
                )
            entry.item = item
            named = (letter.index, letter.doc_id)
            if named[0] is not None and named[1] is not None and named in item.documents:
                entry.documents = frozenset({(named[0], named[1])})
            else:
                entry.documents = item.documents
        if sink is not None:
            await sink.drain()
        succeeded = [entry for entry in stored if entry.succeeded(self._refused)]
        for entry in stored:
            why = entry.why_failing(self._refused)
            if why is not None:  # each letter that stays says why, whatever the log level
                log.warning("dead letter still failing: %s", why, extra=entry.fields)
        report.replayed = len(succeeded)
        report.expired = len(expired)
        report.still_failing = report.total - report.skipped - report.expired - report.replayed
        if sink is not None:
            await self._remove(succeeded + expired)
        return report

    async def _replay_item(
        self,
        transformer: RecordTransformer,
        keys: dict[str, Any],
        version: int,
        started: float,
        sink: BulkIndexer | None,
    ) -> _Item:
        """Indexes the item as it is now (or applies its removal) through `sink`; with no sink
        (a dry run), only finds out whether its transform goes through."""
        config = transformer.config
        try:
            item = await retry_transient(
                lambda: self._api.get_item(config.table, request_key(keys)),
                "dead-letter replay GetItem",
                _readable_later,
                table=config.table,
            )
        except (AwsError, ParamValidationError) as error:
            return _Item(failed=True, why=f"reading its item failed: {error}")
        if item is not None:
            record = scanned_record(item, keys, started)
        elif config.ttl_expirations == "ignore":
            return _Item()  # gone, deleted or expired: the index keeps what it has
        else:
            record = removed_record(keys, started)
        try:
            actions = await transformer.actions(record, SOURCE, version)
        except TransformError as error:
            return _Item(failed=True, why=f"the transform still fails: {error}")
        if sink is not None:
            for action in actions:
                await sink.put(action)
        return _Item(documents=frozenset((a.index, a.doc_id) for a in actions))

    async def _remove(self, entries: list[_Stored]) -> None:
        config = self._config.dead_letters
        for entry in entries:
            if entry.where == "index" and config.index is not None:
                await self._engine.delete_document(config.index, entry.stored_id)
        lines = {int(entry.stored_id) for entry in entries if entry.where == "file"}
        if lines and config.file is not None:
            _rewrite_without(config.file, lines)


def _rewrite_without(path: Path, numbers: set[int]) -> None:
    """Keeps the lines not replayed, replacing the file atomically."""
    kept = [
        line
        for number, line in enumerate(path.read_bytes().splitlines())
        if line.strip() and number not in numbers
    ]
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(b"".join(line + b"\n" for line in kept))
    os.replace(partial, path)
