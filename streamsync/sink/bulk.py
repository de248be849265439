"""The shared bulk indexer: every poller of every table feeds it; it keeps each document in order.

Actions are spread over lanes by document, and each lane has at most one bulk request in flight,
so several requests run at once while two actions on the same document never race: a lane sends
the next batch only when the previous one is settled, retries included. Lanes are bounded
queues: a slow cluster makes pollers wait (back-pressure) instead of growing memory.

What each item's answer means is decided in batch.py (`classify`, pure); a lane only awaits
the cluster and acts on it: documents settled are counted and acknowledged (version conflicts,
an older image arriving after a newer one, as stale), refusals the cluster may take later are
retried, and the rest go to `on_rejected` (dead letters) and are then acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from streamsync.config import BulkConfig
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient_per_table
from streamsync.sink.batch import Batch, Done, Entry, Outcome, bulk_body, classify
from streamsync.sink.engine import SearchEngine, SearchError, is_transient
from streamsync.sink.ports import Ticket
from streamsync.sink.tombstones import Tombstones
from streamsync.transform.actions import Action

log = logging.getLogger("streamsync.sink")

Rejected = Callable[[Action, dict[str, Any]], Awaitable[None]]
_Queued = tuple[Action, Ticket | None]


class _ItemsToRetry(Exception):
    def __init__(self, count: int, reason: str) -> None:
        super().__init__(f"{count} item(s) to retry: {reason}")


def _transient(error: BaseException) -> bool:
    # Items the cluster may take later are sent again as a failed request is (see is_transient).
    return isinstance(error, _ItemsToRetry) or is_transient(error)


def _acknowledge(entry: Entry) -> None:
    for ticket in entry.tickets:
        ticket.ack()


class BulkIndexer:
    def __init__(
        self,
        engine: SearchEngine,
        config: BulkConfig,
        metrics: Metrics,
        on_rejected: Rejected,
        tombstones: Tombstones | None = None,
    ) -> None:
        self._engine = engine
        self._tombstones = tombstones or Tombstones(engine)
        self._config = config
        self._metrics = metrics
        self._on_rejected = on_rejected
        self._documents = {
            "stale": metrics.documents_stale,
            "index": metrics.documents_indexed,
            "delete": metrics.documents_deleted,
        }
        lane_size = max(1, config.queue_size // config.max_in_flight)
        self._lanes: list[asyncio.Queue[_Queued | None]] = [
            asyncio.Queue(lane_size) for _ in range(config.max_in_flight)
        ]
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.failing_since: float | None = None  # monotonic time of the first failure in a row
        self.last_error: str | None = None

    @property
    def outstanding(self) -> int:
        """Actions accepted and not yet settled."""
        return self._outstanding

    async def put(self, action: Action, ticket: Ticket | None = None) -> None:
        """Queues an action; waits while its lane is full (back-pressure). `ticket` is
        acknowledged once the action is settled."""
        lane = self._lanes[hash((action.index, action.doc_id)) % len(self._lanes)]
        await lane.put((action, ticket))
        # Counted once queued (a put cancelled while waiting never counts); the lane cannot take
        # it before this line runs, since nothing awaits in between.
        self._outstanding += 1
        self._idle.clear()

    async def drain(self) -> None:
        """Waits until every action put so far is settled."""
        await self._idle.wait()

    async def run(self) -> None:
        """Runs the lanes until `close()`; what was put before is sent first."""
        async with asyncio.TaskGroup() as lanes:
            for queue in self._lanes:
                lanes.create_task(self._lane(queue))

    async def close(self) -> None:
        for queue in self._lanes:
            await queue.put(None)

    async def _lane(self, queue: asyncio.Queue[_Queued | None]) -> None:
        while True:
            first = await queue.get()
            if first is None:
                return
            batch = Batch(self._config.max_actions, self._config.max_bytes)
            batch.add(*first)
            closing = await self._fill(batch, queue)
            await self._send(batch.entries)
            self._outstanding -= batch.actions
            if self._outstanding == 0:
                self._idle.set()
            if closing:
                return

    async def _fill(self, batch: Batch, queue: asyncio.Queue[_Queued | None]) -> bool:
        """Adds what arrives within the flush interval, until the batch is full; True when
        `close()` came, so the lane stops after sending it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.flush_interval_seconds
        while not batch.full:
            if queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    async with asyncio.timeout(remaining):
                        nxt = await queue.get()
                except TimeoutError:
                    return False
            else:
                nxt = queue.get_nowait()
            if nxt is None:
                return True
            batch.add(*nxt)
        return False

    async def _send(self, entries: list[Entry]) -> None:
        pending = entries

        async def attempt() -> None:
            nonlocal pending
            pending = await self._send_once(pending)
            if pending:
                raise _ItemsToRetry(len(pending), self.last_error or "")

        await retry_transient_per_table(
            attempt,
            "bulk request",
            _transient,
            lambda: {entry.action.origin.table for entry in pending},
            actions=len(pending),
        )
        if self.failing_since is not None:
            # The retries logged each failure; without this line the outage has no end in the log.
            outage = round(time.monotonic() - self.failing_since, 1)
            log.info("recovered", extra={"cluster": self._engine.product, "outage_seconds": outage})
        self.failing_since = None
        self.last_error = None

    async def _send_once(self, entries: list[Entry]) -> list[Entry]:
        """Sends one bulk request; returns the entries to retry."""
        body = bulk_body([entry.action for entry in entries], self._tombstones)
        started = time.monotonic()
        try:
            response = await self._engine.bulk(body)
        except SearchError as error:
            self._note_failure(f"bulk request failed: {error}")
            raise
        finished = time.monotonic()
        self._metrics.bulk_seconds.observe(finished - started)
        self._metrics.bulk_actions.observe(len(entries))
        self._metrics.bulk_bytes.observe(len(body))
        outcome = classify(entries, response)
        await self._dispatch(outcome, time.time())
        return outcome.retry

    async def _dispatch(self, outcome: Outcome, now: float) -> None:
        """Acts on `classify`'s verdict. A rejected entry is acknowledged only once
        `on_rejected` has kept it (its dead letter stored): the checkpoint never passes a
        document that is neither indexed nor kept."""
        self._count(outcome.done, now)
        for done in outcome.done:
            action = done.entry.action
            if action.trace is not None:
                action.trace.stage("indexed", status=done.status, result=done.result)
            _acknowledge(done.entry)
        if outcome.retry_reason is not None:
            self._note_failure(outcome.retry_reason)
        for entry, error in outcome.rejected:
            await self._on_rejected(entry.action, error)
            _acknowledge(entry)
        await self._tombstones.bury_again(outcome.created)

    def _count(self, settled: list[Done], now: float) -> None:
        """Counts a bulk answer's documents once per table and kind, and looks each table's lag
        histogram up once: per document, those lookups cost more than the answer's parsing."""
        kinds: Counter[tuple[str, str]] = Counter()
        lags: dict[str, list[float]] = defaultdict(list)
        for done in settled:
            origin = done.entry.action.origin
            # A 409 under external versions: the document holds a newer change already.
            kind = "stale" if done.stale else done.entry.action.op
            kinds[(origin.table, kind)] += 1
            if origin.created_at is not None:
                lags[origin.table].append(max(now - origin.created_at, 0.0))
        for (table, counted), count in kinds.items():
            self._documents[counted].labels(table).inc(count)
        for table, seconds in lags.items():
            histogram = self._metrics.lag.labels(table)
            for value in seconds:
                histogram.observe(value)

    def _note_failure(self, reason: str) -> None:
        self.last_error = reason
        if self.failing_since is None:
            self.failing_since = time.monotonic()
