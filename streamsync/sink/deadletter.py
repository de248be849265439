"""Dead letters: what could not be indexed, kept with everything needed to replay it.

One bad document must not block its shard (Lambda's default blocks it for up to a day), nor be
dropped silently. So a rejected document or a record that cannot be transformed becomes a dead
letter, holding the original stream record, the action, the error, and where it came from
(table, shard, sequence number), in an Elasticsearch index and/or a JSON Lines file. Only once it
is stored does the shard's checkpoint move past it. `streamsync dlq replay` re-drives them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from streamsync.config import DeadLettersConfig
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.engine import SearchEngine, is_transient

log = logging.getLogger("streamsync.deadletters")

INDEX_MAPPINGS: dict[str, Any] = {
    # The record and the document stay in _source, unindexed: any shape fits.
    "dynamic": False,
    "properties": {
        "time": {"type": "date", "format": "epoch_second"},
        "table": {"type": "keyword"},
        "shard": {"type": "keyword"},
        "sequence_number": {"type": "keyword"},
        "index": {"type": "keyword"},
        "doc_id": {"type": "keyword"},
        "reason": {"type": "keyword"},
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
    record: dict[str, Any]  # the stream record as read
    index: str | None = None  # the action, when there was one
    doc_id: str | None = None
    op: str | None = None
    time: float = 0.0

    @property
    def key(self) -> str:
        """Stable per record and document: storing it twice (after a replay) keeps one copy."""
        raw = f"{self.table}|{self.shard}|{self.sequence_number}|{self.index}|{self.doc_id}"
        return hashlib.sha256(raw.encode()).hexdigest()

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


def _transient(error: BaseException) -> bool:
    return is_transient(error) or isinstance(error, OSError)


class DeadLetters:
    def __init__(self, engine: SearchEngine, config: DeadLettersConfig, metrics: Metrics) -> None:
        self._engine = engine
        self._config = config
        self._metrics = metrics
        self._file_lock = asyncio.Lock()

    async def ensure_index(self) -> None:
        index = self._config.index
        if index is not None and not await self._engine.index_exists(index):
            await self._engine.create_index(index, {"mappings": INDEX_MAPPINGS})

    async def put(self, letter: DeadLetter) -> None:
        """Stores a dead letter, retrying for as long as it takes: the checkpoint waits for it."""
        letter = DeadLetter(**{**asdict(letter), "time": letter.time or time.time()})
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
            index = self._config.index
            await retry_transient(
                lambda: self._engine.put_document(index, letter.key, letter.to_json()),
                "storing a dead letter",
                _transient,
                table=letter.table,
            )
        if self._config.file is not None:
            await retry_transient(lambda: self._append(letter), "storing a dead letter", _transient)

    async def _append(self, letter: DeadLetter) -> None:
        assert self._config.file is not None
        line = orjson.dumps(letter.to_json()) + b"\n"
        async with self._file_lock:
            await asyncio.to_thread(_append_line, self._config.file, line)


def _append_line(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        file.write(line)
        file.flush()
