"""One reader per held shard: GetRecords in a loop, records to the bulk indexer, checkpoints.

The reader polls without pause while records flow and backs off on empty polls, up to a cap, so
idle shards cost little and a new record still arrives within about a second. It checkpoints only
the acknowledged prefix of what it read. At the end of a closed shard it waits until everything is
acknowledged, then marks the shard finished, which lets its children start. When asked to stop it
finishes the page in hand, waits for the acknowledgements, checkpoints and releases the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streamsync.config import PollingConfig
from streamsync.leases.checkpoints import AckTracker, Position
from streamsync.leases.held import HeldLease
from streamsync.leases.model import LATEST, TRIM_HORIZON, Lease
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.bulk import BulkIndexer
from streamsync.source.client import AwsError, StreamsApi, is_transient
from streamsync.transform.actions import RecordTransformer, TransformError
from streamsync.transform.versions import VersionClock

log = logging.getLogger("streamsync.source")

# (table, shard id, the record, why): the record becomes a dead letter and the shard moves on.
OnRejectedRecord = Callable[[str, str, dict[str, Any], TransformError], Awaitable[None]]


class _Outcome(enum.Enum):
    SHARD_END = "the shard is closed and read to its end"
    STOPPED = "a stop was asked for"
    LEASE_GONE = "the lease was lost or went unrenewed for a failover time"


class ShardPoller:
    def __init__(
        self,
        *,
        api: StreamsApi,
        held: HeldLease,
        transformer: RecordTransformer,
        sink: BulkIndexer,
        polling: PollingConfig,
        checkpoint_interval: float,
        start_version: int,
        stopping: asyncio.Event,
        metrics: Metrics,
        on_shard_end: Callable[[Lease], Awaitable[None]],
        on_rejected_record: OnRejectedRecord,
    ) -> None:
        self._api = api
        self._held = held
        self._transformer = transformer
        self._sink = sink
        self._polling = polling
        self._checkpoint_interval = checkpoint_interval
        self._clock = VersionClock(start_version)
        self._stopping = stopping
        self._metrics = metrics
        self._on_shard_end = on_shard_end
        self._on_rejected_record = on_rejected_record
        self._tracker = AckTracker()
        self._acked_change = asyncio.Event()
        self._tracker.on_advance = self._acked_change.set
        self._last_read: int | None = None
        self._written: Position | None = None
        lease = held.lease
        self._fields = {"table": lease.table, "shard": lease.shard_id}

    @property
    def lease(self) -> Lease:
        return self._held.lease

    async def run(self) -> None:
        checkpointer = asyncio.create_task(self._checkpoint_periodically())
        try:
            outcome = await self._poll()
            if outcome is _Outcome.LEASE_GONE:
                log.warning("lease lost or expired; stopped reading", extra=self._fields)
                return
            await self._wait_acknowledged()
            if outcome is _Outcome.SHARD_END:
                if await self._held.finish(self._clock.last):
                    log.info("shard read to its end", extra=self._fields)
                    await self._on_shard_end(self._held.lease)
                return
            await self._checkpoint()
            await self._held.release()
        except asyncio.CancelledError:
            # Stopped before everything was acknowledged (grace period over, or lease lost):
            # keep what is acknowledged, hand the rest to the next owner.
            with contextlib.suppress(Exception):
                await self._checkpoint()
                await self._held.release()
            raise
        finally:
            checkpointer.cancel()

    async def _poll(self) -> _Outcome:
        """Reads until the shard ends, a stop is asked for, or the lease may be someone else's."""
        iterator = await self._iterator()
        wait = 0.0
        while not self._stopping.is_set():
            if not self._held.usable:
                return _Outcome.LEASE_GONE
            try:
                page = await retry_transient(
                    lambda it=iterator: self._api.get_records(it, self._polling.max_records),  # type: ignore[misc]
                    "GetRecords",
                    is_transient,
                    **self._fields,
                )
            except AwsError as error:
                if error.code != "ExpiredIteratorException":
                    raise
                log.info(
                    "iterator expired; resuming after the last record read", extra=self._fields
                )
                iterator = await self._iterator()
                continue
            self._metrics.get_records_calls.labels(self.lease.table).inc()
            if not self._held.usable:  # the call may have outlived the lease
                return _Outcome.LEASE_GONE
            for record in page.records:
                await self._process(record)
            if page.next_iterator is None:
                return _Outcome.SHARD_END
            iterator = page.next_iterator
            if page.records:
                wait = 0.0
                continue
            self._metrics.empty_polls.labels(self.lease.table).inc()
            wait = min(
                max(wait * 2, self._polling.idle_wait_min_seconds),
                self._polling.idle_wait_max_seconds,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stopping.wait()
        return _Outcome.STOPPED

    async def _iterator(self) -> str:
        """An iterator just after the last record read, or at the lease's checkpoint."""
        lease = self.lease
        if self._last_read is not None:
            kind, seq = "AFTER_SEQUENCE_NUMBER", self._last_read
        elif lease.checkpoint in (TRIM_HORIZON, LATEST):
            kind, seq = lease.checkpoint, None
        else:
            kind, seq = "AFTER_SEQUENCE_NUMBER", int(lease.checkpoint)
        return await retry_transient(
            lambda: self._api.get_shard_iterator(lease.stream_arn, lease.shard_id, kind, seq),
            "GetShardIterator",
            is_transient,
            **self._fields,
        )

    async def _process(self, record: dict[str, Any]) -> None:
        change = record["dynamodb"]
        seq = int(change["SequenceNumber"])
        if self._last_read is not None and seq <= self._last_read:
            return  # a duplicate delivery
        self._last_read = seq
        self._metrics.records_read.labels(self.lease.table).inc()
        version = self._clock.next(float(change.get("ApproximateCreationDateTime", 0)))
        try:
            actions = await self._transformer.actions(record, self.lease.shard_id, version)
        except TransformError as error:
            await self._on_rejected_record(self.lease.table, self.lease.shard_id, record, error)
            actions = []
        pending = self._tracker.register(seq, version, len(actions))
        for action in actions:
            action.ack = pending
            await self._sink.put(action)

    async def _wait_acknowledged(self) -> None:
        while self._tracker.outstanding:
            self._acked_change.clear()
            await self._acked_change.wait()

    async def _checkpoint(self) -> None:
        position = self._tracker.acknowledged
        if position is None or position == self._written:
            return
        if await self._held.checkpoint(position):
            self._written = position

    async def _checkpoint_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._checkpoint_interval)
            await self._checkpoint()
