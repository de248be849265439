"""`streamsync backfill`: the items a table already holds, indexed through the same path.

A stream only carries the last 24 hours, so every real deployment starts with a table scan. The
scan is a parallel Scan (Segment/TotalSegments) whose items go through the table's transform and
the shared bulk indexer, like stream records. It is safe beside a live `streamsync run`: every
scanned image carries a version below the second the backfill started, less a margin for this
host's clock (`scan_version`), so any stream change made after that (an update, or a delete and
its tombstone) outranks it, even from a host whose clock runs minutes ahead. Each segment
checkpoints, in the lease table, the scan position up to which everything was acknowledged, so
an interrupted backfill resumes where it stopped (with the same start time, hence the same
versions); `restart` starts over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

from streamsync.awsjson import is_transient
from streamsync.leases.progress import BackfillProgress, SegmentProgress
from streamsync.retry import retry_transient
from streamsync.sink.bulk import BulkIndexer
from streamsync.source.acks import AckTracker
from streamsync.source.client import StreamsApi
from streamsync.transform.actions import RecordTransformer, TransformError
from streamsync.transform.records import scanned_record
from streamsync.transform.versions import scan_version

log = logging.getLogger("streamsync.backfill")

SOURCE = "backfill"  # the "shard" of scanned images, in dead letters and logs
PROGRESS_EVERY_SECONDS = 2.0

RejectRecord = Callable[[str, str, dict[str, Any], int, TransformError], Any]


@dataclass
class Progress:
    """Items done so far, their rate and an estimated time left, for a terminal or the logs."""

    table: str
    expected: int  # DynamoDB's approximate item count
    out: TextIO | None  # a terminal to draw a progress line on; None: log lines instead
    done: int = 0
    started: float = 0.0
    shown: float = 0.0

    def add(self, count: int, final: bool = False) -> None:
        self.done += count
        now = time.monotonic()
        if not self.started:
            self.started = now
        if not final and now - self.shown < (0.2 if self.out else PROGRESS_EVERY_SECONDS):
            return
        self.shown = now
        rate = self.done / max(now - self.started, 1e-9)
        left = max(self.expected - self.done, 0)
        eta = f"{int(left / rate) // 60}:{int(left / rate) % 60:02d}" if rate > 0 and left else "-"
        if self.out is not None:
            line = (
                f"\rbackfill {self.table}: {self.done:,}/{self.expected:,} items, "
                f"{rate:,.0f} items/s, ETA {eta}"
            )
            self.out.write(line + ("\n" if final else ""))
            self.out.flush()
        else:
            log.info(
                "backfill progress",
                extra={
                    "table": self.table,
                    "items": self.done,
                    "expected_items": self.expected,
                    "items_per_second": round(rate, 1),
                    "eta": eta,
                },
            )


class Backfill:
    def __init__(
        self,
        *,
        api: StreamsApi,
        checkpoints: BackfillProgress,
        sink: BulkIndexer,
        transformer: RecordTransformer,
        hash_key: str,
        range_key: str | None,
        on_rejected_record: RejectRecord,
        rate_limit: float | None = None,
    ) -> None:
        self._api = api
        self._checkpoints = checkpoints
        self._sink = sink
        self._transformer = transformer
        self._table = transformer.config.table
        self._key_names = [hash_key] + ([range_key] if range_key else [])
        self._reject = on_rejected_record
        self._rate_limit = rate_limit
        self._started_pacing = 0.0
        self._paced_items = 0

    async def run(self, segments: int, restart: bool, progress: Progress) -> int:
        """Scans the table into its index; returns how many items this run indexed."""
        saved = await retry_transient(
            lambda: self._checkpoints.load(self._table),
            "backfill progress",
            is_transient,
            table=self._table,
        )
        resumed = bool(saved) and not restart
        if resumed:
            # A resumed backfill keeps its split and its start time (hence its versions); a
            # segment that saved nothing before the interruption starts from its beginning.
            segments, started_at = saved[0].segments, saved[0].started_at
            by_segment = {p.segment: p for p in saved}
        else:
            await self._checkpoints.clear(self._table)
            started_at, by_segment = time.time(), {}
        saved = [
            by_segment.get(s) or SegmentProgress(self._table, segments, s, started_at)
            for s in range(segments)
        ]
        for fresh in (p for p in saved if p.segment not in by_segment):
            await self._checkpoints.save(fresh)
        progress.add(sum(p.items for p in saved))
        pending = [p for p in saved if not p.done]
        log.info(
            "backfill starting",
            extra={
                "table": self._table,
                "segments": segments,
                "segments_done": segments - len(pending),
                "resumed": resumed,
            },
        )
        counts = await asyncio.gather(*(self._segment(p, progress) for p in pending))
        progress.add(0, final=True)
        return sum(counts)

    async def _segment(self, progress: SegmentProgress, shown: Progress) -> int:
        version = scan_version(progress.started_at)
        tracker = AckTracker()
        acked = asyncio.Event()
        tracker.on_advance = acked.set
        pages: dict[int, SegmentProgress] = {}  # page number -> the progress once it is acked
        start_key = json.loads(progress.last_key) if progress.last_key else None
        saved = progress
        indexed = 0
        page_number = 0
        while True:
            items, next_key = await retry_transient(
                lambda key=start_key: self._api.scan_page(  # type: ignore[misc]
                    self._table, progress.segment, progress.segments, key
                ),
                "backfill Scan",
                is_transient,
                table=self._table,
                segment=progress.segment,
            )
            await self._pace(len(items))
            page_number += 1
            actions = []
            for item in items:
                actions.extend(await self._actions(item, version, progress.started_at))
            indexed += len(items)
            pages[page_number] = replace(
                saved,
                last_key=json.dumps(next_key, sort_keys=True) if next_key else None,
                done=next_key is None,
                items=saved.items + indexed,
            )
            pending = tracker.register(page_number, version, len(actions))
            for action in actions:
                await self._sink.put(action, pending)
            shown.add(len(items))
            saved = await self._save_acknowledged(tracker, pages, saved)
            if next_key is None:
                break
            start_key = next_key
        while tracker.outstanding:
            acked.clear()
            await acked.wait()
        await self._save_acknowledged(tracker, pages, saved)
        return indexed

    async def _save_acknowledged(
        self, tracker: AckTracker, pages: dict[int, SegmentProgress], saved: SegmentProgress
    ) -> SegmentProgress:
        """Checkpoints the segment's scan position up to the last fully acknowledged page."""
        position = tracker.acknowledged
        if position is None or pages.get(position.sequence_number) is None:
            return saved
        newest = pages[position.sequence_number]
        for number in [n for n in pages if n <= position.sequence_number]:
            del pages[number]
        if newest != saved:
            await retry_transient(
                lambda: self._checkpoints.save(newest),
                "backfill checkpoint",
                is_transient,
                table=self._table,
            )
        return newest

    async def _actions(self, item: dict[str, Any], version: int, started_at: float) -> list[Any]:
        keys = {name: item[name] for name in self._key_names if name in item}
        record = scanned_record(item, keys, started_at)
        try:
            return await self._transformer.actions(record, SOURCE, version)
        except TransformError as error:
            await self._reject(self._table, SOURCE, record.raw, version, error)
            return []

    async def _pace(self, items: int) -> None:
        """Keeps the average below the rate limit, to leave the table's capacity to others."""
        if self._rate_limit is None:
            return
        now = time.monotonic()
        if not self._started_pacing:
            self._started_pacing = now
        self._paced_items += items
        ahead = self._paced_items / self._rate_limit - (now - self._started_pacing)
        if ahead > 0:
            await asyncio.sleep(ahead)


def terminal() -> TextIO | None:
    return sys.stderr if sys.stderr.isatty() else None
