"""`streamsync dlq replay`: re-drive dead letters once their cause is fixed.

Each dead letter's original stream record goes through the table's current transform (so a fixed
hook or mapping applies) and is indexed with the version it had, so a replay never overwrites a
newer image (an older one is a version conflict, which counts as done) and, through the
tombstones, never brings back a deleted document. Letters that went through are removed from
their destination; the others stay, with their new error logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamsync.config import Config, DeadLettersConfig
from streamsync.leases.checkpoints import AckTracker
from streamsync.observability.metrics import Metrics
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.deadletter import DeadLetter
from streamsync.sink.engine import SearchEngine
from streamsync.transform.actions import Action, RecordTransformer, TransformError


@dataclass
class ReplayReport:
    total: int = 0
    replayed: int = 0
    still_failing: int = 0
    skipped: int = 0  # their table is not in the configuration

    def summary(self, dry_run: bool) -> str:
        verb = "would replay" if dry_run else "replayed"
        return (
            f"dead letters: {self.total}; {verb}: {self.replayed}; still failing: "
            f"{self.still_failing}; skipped (table not configured): {self.skipped}"
        )


async def _letters(
    engine: SearchEngine, config: DeadLettersConfig
) -> AsyncIterator[tuple[str, str, DeadLetter]]:
    """(where, its id there, the letter) for every stored dead letter."""
    if config.index is not None and await engine.index_exists(config.index):
        await engine.refresh(config.index)
        async for hits in engine.scan(config.index, page_size=500):
            for hit in hits:
                yield "index", hit["_id"], DeadLetter.from_json(hit["_source"])
    if config.file is not None and config.file.exists():
        for number, line in enumerate(config.file.read_bytes().splitlines()):
            if line.strip():
                yield "file", str(number), DeadLetter.from_json(orjson.loads(line))


class Replayer:
    def __init__(
        self,
        engine: SearchEngine,
        config: Config,
        transformers: dict[str, RecordTransformer],
    ) -> None:
        self._engine = engine
        self._config = config
        self._transformers = transformers

    async def replay(self, dry_run: bool) -> ReplayReport:
        report = ReplayReport()
        failed: set[str] = set()
        done: list[tuple[str, str, DeadLetter]] = []
        tracker = AckTracker()
        by_origin: dict[tuple[str, str, int], str] = {}

        async def rejected(action: Action, _: dict[str, Any]) -> None:
            origin = action.origin
            failed.add(by_origin[(origin.table, origin.shard_id, origin.sequence_number)])

        indexer = BulkIndexer(self._engine, self._config.bulk, Metrics(), rejected)
        lanes = asyncio.create_task(indexer.run())
        try:
            async for where, doc_id, letter in _letters(self._engine, self._config.dead_letters):
                report.total += 1
                transformer = self._transformers.get(letter.table)
                if transformer is None:
                    report.skipped += 1
                    continue
                try:
                    actions = await transformer.actions(letter.record, letter.shard, letter.version)
                except TransformError:
                    failed.add(letter.key)
                    continue
                done.append((where, doc_id, letter))
                if dry_run:
                    continue
                seq = int(letter.sequence_number)
                by_origin[(letter.table, letter.shard, seq)] = letter.key
                pending = tracker.register(seq, letter.version, len(actions))
                for action in actions:
                    action.ack = pending
                    await indexer.put(action)
            await indexer.drain()
        finally:
            await indexer.close()
            with contextlib.suppress(asyncio.CancelledError):
                await lanes
        succeeded = [(w, i, letter) for w, i, letter in done if letter.key not in failed]
        report.replayed = len(succeeded)
        report.still_failing = report.total - report.skipped - report.replayed
        if not dry_run:
            await self._remove(succeeded)
        return report

    async def _remove(self, succeeded: list[tuple[str, str, DeadLetter]]) -> None:
        config = self._config.dead_letters
        for where, doc_id, _ in succeeded:
            if where == "index" and config.index is not None:
                await self._engine.delete_document(config.index, doc_id)
        lines = {int(doc_id) for where, doc_id, _ in succeeded if where == "file"}
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
