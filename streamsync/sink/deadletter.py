"""Dead letters: what could not be indexed, kept with everything needed to replay it.

One bad document must not block its shard (Lambda's default blocks it for up to a day), nor be
dropped silently. So a rejected document or a record that cannot be transformed becomes a dead
letter, holding the stream record, the action, the error, and where it came from (table, shard,
sequence number), in an Elasticsearch index and/or a JSON Lines file. Only once it is stored does
the shard's checkpoint move past it. `streamsync dlq replay` re-drives them.

A letter keeps of the record only what the table's documents may hold: its images lose the
attributes `include_fields`/`exclude_fields` keep out of documents, and the item's keys always
stay (a replay re-reads the item by them). Each letter has its own key (table, shard, sequence
number, the item's keys, the action's op, index and id): a letter stored twice is one copy, and
two letters never overwrite each other. The index maps the record and the error as unindexed
objects and its keywords with `ignore_above`, so it accepts any letter; should it still refuse
one (an index created beforehand with other mappings), the letter stays in the file when there is
one, else in an ERROR log line, and is counted: the shard moves on. Only transient failures (an
unreachable cluster, throttling) are retried, for as long as they last. Letters older than
`retention_days` are deleted.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from streamsync.config import DeadLettersConfig, TableConfig
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.engine import Refused, SearchEngine, is_transient, path_of, retriable
from streamsync.transform.records import keys_in, redacted

log = logging.getLogger("streamsync.deadletters")

PRUNE_EVERY_SECONDS = 3600.0
"""While letters keep arriving, those past the retention are deleted at most this often."""
PRUNE_PAGE = 500
PRUNE_PAGES = 200  # at most 100,000 letters per pruning; the rest go the next time

_KEYWORD: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
INDEX_MAPPINGS: dict[str, Any] = {
    # The record and the error stay in _source, never parsed: any shape, depth or field name
    # fits. Keywords longer than ignore_above (a hook's long id) are kept, just not indexed.
    "dynamic": False,
    "properties": {
        "time": {"type": "date", "format": "epoch_second"},
        "table": _KEYWORD,
        "shard": _KEYWORD,
        "sequence_number": _KEYWORD,
        "index": _KEYWORD,
        "doc_id": _KEYWORD,
        "op": _KEYWORD,
        "reason": _KEYWORD,
        "record": {"type": "object", "enabled": False},
        "error": {"type": "object", "enabled": False},
    },
}


@dataclass(frozen=True)
class DeadLetter:
    table: str
    shard: str
    sequence_number: str
    version: int
    reason: str  # short: the error type
    error: dict[str, Any]
    record: dict[str, Any]  # the stream record (images limited to what documents may hold)
    index: str | None = None  # the action, when there was one
    doc_id: str | None = None
    op: str | None = None
    time: float = 0.0

    @property
    def item_keys(self) -> dict[str, Any]:
        """The item's key attributes (DynamoDB JSON, as the stream sends them); empty when the
        letter does not name an item."""
        return keys_in(self.record)

    @property
    def key(self) -> str:
        """Its id where it is stored: unique per letter (scanned items all have sequence number
        0, one record may give several rejected actions), and the same for the same letter, so
        storing it twice (a record read again after a restart) keeps one copy."""
        raw = orjson.dumps(
            [
                self.table,
                self.shard,
                self.sequence_number,
                self.item_keys,
                self.op,
                self.index,
                self.doc_id,
            ],
            default=_as_text,
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(raw).hexdigest()

    def to_json(self) -> dict[str, Any]:
        # Whatever a hook or a client left in the record (bytes, say) must not keep it from
        # being stored: such values are stored as text.
        data: dict[str, Any] = orjson.loads(orjson.dumps(asdict(self), default=_as_text))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeadLetter:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def storable_again(error: BaseException) -> bool:
    """A letter the index refuses for what it is still has the file or the log to go to, so a
    refusal is retried only when `retriable` says the cluster may take it later; no answer at
    all is waited out, as for any request."""
    if isinstance(error, Refused):
        return retriable(error.status, error.type)
    return is_transient(error)


def _file_transient(error: BaseException) -> bool:
    return isinstance(error, OSError)


class DeadLetters:
    def __init__(
        self,
        engine: SearchEngine,
        config: DeadLettersConfig,
        metrics: Metrics,
        tables: Iterable[TableConfig] = (),
    ) -> None:
        self._engine = engine
        self._config = config
        self._metrics = metrics
        self._tables = {table.table: table for table in tables}
        self._file_lock = asyncio.Lock()
        self._pruned_at: float | None = None  # monotonic

    async def ensure_index(self) -> None:
        index = self._config.index
        if index is None:
            return
        if not await self._engine.index_exists(index):
            await self._engine.create_index(index, {"mappings": INDEX_MAPPINGS})
        await self.prune()

    async def prune(self) -> int:
        """Deletes the letters older than `retention_days` from the index (a search and bulk
        deletes, which every engine has); a failure is logged, and tried again later. Returns
        how many were deleted."""
        index = self._config.index
        if index is None:
            return 0
        self._pruned_at = time.monotonic()
        days = self._config.retention_days
        search = orjson.dumps(
            {
                "query": {"range": {"time": {"lt": f"now-{days}d"}}},
                "size": PRUNE_PAGE,
                "_source": False,
            }
        )
        deleted = 0
        try:
            for _ in range(PRUNE_PAGES):
                answer = await self._engine.request("POST", path_of(index, "_search"), body=search)
                ids = [hit["_id"] for hit in ((answer or {}).get("hits") or {}).get("hits", [])]
                if not ids:
                    break
                body = b"".join(
                    orjson.dumps({"delete": {"_index": index, "_id": doc_id}}) + b"\n"
                    for doc_id in ids
                )
                items = (await self._engine.bulk(body))["items"]
                gone = sum(1 for item in items if int(item["delete"]["status"]) < 300)
                deleted += gone
                if gone == 0:  # what the search still shows was deleted already
                    break
                await self._engine.refresh(index)
        except Exception as error:  # never a reason to stop storing letters: tried again later
            log.warning(
                "deleting dead letters older than %d days from %s failed: %s", days, index, error
            )
        if deleted:
            log.info("deleted %d dead letters older than %d days from %s", deleted, days, index)
        return deleted

    async def put(self, letter: DeadLetter) -> None:
        """Stores a dead letter; the checkpoint waits for it. Transient failures are retried for
        as long as they last; a letter the index refuses is kept in the file (if configured)
        or logged in full, counted, and the caller moves on."""
        letter = replace(
            letter,
            time=letter.time or time.time(),
            record=redacted(letter.record, self._tables.get(letter.table)),
        )
        self._metrics.dead_letters.labels(letter.table).inc()
        log.error(
            "dead letter: %s",
            letter.reason,
            extra={
                "table": letter.table,
                "shard": letter.shard,
                "sequence_number": letter.sequence_number,
                "index": letter.index,
                "id": letter.doc_id,
                "error": letter.error,
            },
        )
        if self._config.index is not None:
            await self._store(self._config.index, letter)
        if self._config.file is not None:
            await retry_transient(
                lambda: self._append(letter),
                "storing a dead letter",
                _file_transient,
                table=letter.table,
            )
        due = self._pruned_at is None or time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS
        if self._config.index is not None and due:
            await self.prune()

    async def _store(self, index: str, letter: DeadLetter) -> None:
        try:
            await retry_transient(
                lambda: self._engine.put_document(index, letter.key, letter.to_json()),
                "storing a dead letter",
                storable_again,
                table=letter.table,
            )
        except Refused as error:
            self._metrics.dead_letters_refused.labels(letter.table).inc()
            where = {
                "table": letter.table,
                "shard": letter.shard,
                "sequence_number": letter.sequence_number,
                "index": letter.index,
                "id": letter.doc_id,
            }
            if self._config.file is not None:
                log.error(
                    "the dead-letter index %s refused a dead letter (%s); it is kept in %s only",
                    index,
                    error,
                    self._config.file,
                    extra=where,
                )
            else:
                log.error(
                    "the dead-letter index %s refused a dead letter (%s) and no dead-letter file "
                    "is configured: this log line is the only copy of the letter",
                    index,
                    error,
                    extra={**where, "dead_letter": letter.to_json()},
                )

    async def _append(self, letter: DeadLetter) -> None:
        assert self._config.file is not None
        line = orjson.dumps(letter.to_json()) + b"\n"
        async with self._file_lock:
            await asyncio.to_thread(_append_line, self._config.file, line)


def _append_line(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path), path.open("ab") as file:
        file.write(line)
        file.flush()


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds the dead-letter file's lock, across processes. A worker appends letters while
    `dlq delete` or `dlq replay` rewrites the file (read, write the rest, replace): a letter
    appended between the read and the replace would go to the replaced file, and be lost. The
    lock is a file of its own beside it (`<file>.lock`), as the rewrite replaces the file."""
    with path.with_name(path.name + ".lock").open("ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
