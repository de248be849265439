"""The shared bulk indexer: every poller of every table feeds it; it keeps each document in order.

Actions are spread over lanes by document, and each lane has at most one bulk request in flight,
so several requests run at once while two actions on the same document never race: a lane sends
the next batch only when the previous one is settled, retries included. Within a batch, later
actions on a document replace earlier ones (the newest image wins anyway), so a hot item costs one
write per batch. Lanes are bounded queues: a slow cluster makes pollers wait (back-pressure)
instead of growing memory.

Per-item outcomes: success and version conflicts (an older image arriving after a newer one,
counted as stale, not as indexed) are acknowledged; throttling and unavailable shards are
retried; anything else is rejected through `on_rejected` (dead letters) and then acknowledged,
so one bad document never blocks a shard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamsync.config import BulkConfig
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.engine import SearchEngine, SearchError, is_transient
from streamsync.sink.tombstones import Tombstones
from streamsync.transform.actions import Action

log = logging.getLogger("streamsync.sink")

RETRYABLE_ITEM_ERRORS = frozenset(
    {
        "es_rejected_execution_exception",
        "unavailable_shards_exception",
        "no_shard_available_action_exception",
        "node_not_connected_exception",
        "circuit_breaking_exception",
    }
)

Rejected = Callable[[Action, dict[str, Any]], Awaitable[None]]


class _ItemsToRetry(Exception):
    def __init__(self, count: int, reason: str) -> None:
        super().__init__(f"{count} item(s) to retry: {reason}")


def _transient(error: BaseException) -> bool:
    # Whole-request failures are retried whatever they are: an unreachable cluster, a 429, or an
    # authentication problem an operator must fix, none of them may lose the batch.
    return isinstance(error, _ItemsToRetry) or is_transient(error)


@dataclass(slots=True)
class _Entry:
    action: Action
    superseded: list[Action] = field(default_factory=list)

    def acknowledge(self) -> None:
        for action in (*self.superseded, self.action):
            if action.ack is not None:
                action.ack.ack()


def _retryable(status: int, error: dict[str, Any] | None) -> bool:
    return status == 429 or status >= 500 or (error or {}).get("type") in RETRYABLE_ITEM_ERRORS


def bulk_body(actions: list[Action], tombstones: Tombstones) -> bytes:
    """The NDJSON body of a bulk request: each action with its external version, and each
    delete's tombstone."""
    body = bytearray()
    for action in actions:
        meta = {
            "_index": action.index,
            "_id": action.doc_id,
            "version": action.version,
            "version_type": "external",
        }
        body += orjson.dumps({action.op: meta})
        body += b"\n"
        if action.source is not None:
            body += action.source
            body += b"\n"
        else:
            body += tombstones.lines(action)
    return bytes(body)


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
        lane_size = max(1, config.queue_size // config.max_in_flight)
        self._lanes: list[asyncio.Queue[Action | None]] = [
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

    async def put(self, action: Action) -> None:
        """Queues an action; waits while its lane is full (back-pressure)."""
        lane = self._lanes[hash((action.index, action.doc_id)) % len(self._lanes)]
        await lane.put(action)
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

    async def _lane(self, queue: asyncio.Queue[Action | None]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await queue.get()
            if first is None:
                return
            batch: dict[tuple[str, str], _Entry] = {}
            size = self._add(batch, first)
            closing = False
            deadline = loop.time() + self._config.flush_interval_seconds
            while len(batch) < self._config.max_actions and size < self._config.max_bytes:
                if queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            nxt = await queue.get()
                    except TimeoutError:
                        break
                else:
                    nxt = queue.get_nowait()
                if nxt is None:
                    closing = True
                    break
                size += self._add(batch, nxt)
            settled = sum(1 + len(e.superseded) for e in batch.values())
            await self._send(list(batch.values()))
            self._outstanding -= settled
            if self._outstanding == 0:
                self._idle.set()
            if closing:
                return

    @staticmethod
    def _add(batch: dict[tuple[str, str], _Entry], action: Action) -> int:
        key = (action.index, action.doc_id)
        earlier = batch.get(key)
        if earlier is None:
            batch[key] = _Entry(action)
        elif action.version >= earlier.action.version:
            earlier.superseded.append(earlier.action)
            earlier.action = action
        else:
            earlier.superseded.append(action)  # older than what the batch holds: only ack it
        return len(action.source or b"") + 100

    async def _send(self, entries: list[_Entry]) -> None:
        pending = entries

        async def attempt() -> None:
            nonlocal pending
            pending = await self._send_once(pending)
            if pending:
                raise _ItemsToRetry(len(pending), self.last_error or "")

        await retry_transient(attempt, "bulk request", _transient, actions=len(pending))
        self.failing_since = None
        self.last_error = None

    async def _send_once(self, entries: list[_Entry]) -> list[_Entry]:
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
        now = time.time()
        items = iter(response["items"])
        retry: list[_Entry] = []
        created: list[Action] = []
        for entry in entries:
            action = entry.action
            outcome = next(items)[action.op]
            status = int(outcome["status"])
            problem = outcome.get("error")
            if action.op == "delete":
                status, problem = self._worse(status, problem, next(items)["index"])
            if status < 300 or status == 409 or (status == 404 and action.op == "delete"):
                if outcome.get("result") == "created":
                    created.append(action)
                self._count(action, now, stale=status == 409)
                if action.trace is not None:
                    action.trace.stage("indexed", status=status, result=outcome.get("result"))
                entry.acknowledge()
            elif _retryable(status, problem):
                retry.append(entry)
                self._note_failure(f"{status} {(problem or {}).get('type')}")
            else:
                await self._on_rejected(action, {"status": status, **(problem or {})})
                entry.acknowledge()
        await self._tombstones.bury_again(created)
        return retry

    @staticmethod
    def _worse(
        status: int, problem: dict[str, Any] | None, tombstone: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None]:
        """A delete counts as done once its tombstone is stored too (or is older than one
        already there); when the tombstone failed, its failure decides."""
        tombstone_status = int(tombstone["status"])
        if tombstone_status < 300 or tombstone_status == 409:
            return status, problem
        return tombstone_status, tombstone.get("error")

    def _count(self, action: Action, now: float, stale: bool = False) -> None:
        table = action.origin.table
        if stale:  # a 409 under external versions: the document holds a newer change already
            self._metrics.documents_stale.labels(table).inc()
        elif action.op == "index":
            self._metrics.documents_indexed.labels(table).inc()
        else:
            self._metrics.documents_deleted.labels(table).inc()
        created = action.origin.record.get("dynamodb", {}).get("ApproximateCreationDateTime")
        if isinstance(created, int | float):
            self._metrics.lag.labels(table).observe(max(now - created, 0.0))

    def _note_failure(self, reason: str) -> None:
        self.last_error = reason
        if self.failing_since is None:
            self.failing_since = time.monotonic()
