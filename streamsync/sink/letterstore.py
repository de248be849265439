"""Stored dead letters, read back and removed: what `dlq list/show/delete` and `dlq replay` see.

A letter may be kept twice (in the index and in the file), and the file may hold one letter
on several lines (the file is only appended to, so a record read again after a restart adds its
letter again). So each stored copy is handled on its own, and is named to users by its letter's
key: the same name in both places, for every copy, so that naming a letter once finds (and
deletes) all of them. A copy in the index is named by its document id, which is that key for
every letter streamsync stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamsync.config import DeadLettersConfig
from streamsync.sink.deadletter import DeadLetter, locked
from streamsync.sink.engine import SearchEngine

log = logging.getLogger("streamsync.deadletters")

PAGE = 500


@dataclass(frozen=True)
class StoredLetter:
    """One stored copy of a letter: where it is, its id there, and the letter."""

    where: str  # "index" or "file"
    stored_id: str  # its document id in the index; its line number in the file
    letter: DeadLetter

    @property
    def name(self) -> str:
        """How users name the letter (see the module's docstring)."""
        return self.stored_id if self.where == "index" else self.letter.key


async def stored_letters(
    engine: SearchEngine, config: DeadLettersConfig
) -> AsyncIterator[StoredLetter]:
    """Every stored copy of every dead letter: the index's, then the file's."""
    if config.index is not None and await engine.index_exists(config.index):
        await engine.refresh(config.index)
        async for hits in engine.scan(config.index, page_size=PAGE):
            for hit in hits:
                if not _is_letter(hit["_source"]):
                    # Not one of ours (a Serverless start-up probe left by a crash, say).
                    log.warning(
                        "not a dead letter; left alone",
                        extra={"index": config.index, "id": hit["_id"]},
                    )
                    continue
                yield StoredLetter("index", hit["_id"], DeadLetter.from_json(hit["_source"]))
    if config.file is not None and config.file.exists():
        for number, line in enumerate(config.file.read_bytes().splitlines()):
            if line.strip():
                yield StoredLetter("file", str(number), DeadLetter.from_json(orjson.loads(line)))


def _is_letter(source: dict[str, Any]) -> bool:
    return all(name in source for name in ("table", "shard", "sequence_number", "record"))


async def remove(
    engine: SearchEngine, config: DeadLettersConfig, copies: Iterable[StoredLetter]
) -> None:
    """Removes these copies from where they are kept (those of the file read by the same
    `stored_letters`: a copy there is known by its line number)."""
    copies = list(copies)
    for copy in copies:
        if copy.where == "index" and config.index is not None:
            await engine.delete_document(config.index, copy.stored_id)
    lines = {int(copy.stored_id) for copy in copies if copy.where == "file"}
    if lines and config.file is not None:
        await asyncio.to_thread(_rewrite_without, config.file, lines)


def _rewrite_without(path: Path, numbers: set[int]) -> None:
    """Keeps the other lines, replacing the file atomically; letters appended meanwhile wait
    for it (`locked`), then go to the new file."""
    with locked(path):
        kept = [
            line
            for number, line in enumerate(path.read_bytes().splitlines())
            if line.strip() and number not in numbers
        ]
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_bytes(b"".join(line + b"\n" for line in kept))
        os.replace(partial, path)
