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
import time
from collections.abc import Awaitable, Callable
from typing import Any

from streamsync import clock
from streamsync.awsjson import AwsError, is_transient
from streamsync.config import PollingConfig
from streamsync.leases.held import HeldLease
from streamsync.leases.model import LATEST, TRIM_HORIZON, Lease, Position
from streamsync.observability.metrics import Metrics
from streamsync.observability.trace import Trace
from streamsync.retry import retry_transient
from streamsync.sink.ports import ActionSink
from streamsync.source.client import RecordsPage
from streamsync.source.ports import StreamReader
from streamsync.source.shard_state import ShardState
from streamsync.source.shards import records_may_be_lost
from streamsync.supervise import spawn
from streamsync.transform.actions import RecordTransformer, TransformError
from streamsync.transform.records import MalformedRecord, StreamRecord, parse_record
from streamsync.transform.versions import version_floor

log = logging.getLogger("streamsync.source")

# (table, shard id, the record, its version, why): the record becomes a dead letter and the
# shard moves on.
OnRejectedRecord = Callable[[str, str, dict[str, Any], int, TransformError], Awaitable[None]]


RECORDS_GONE = frozenset({"TrimmedDataAccessException", "ResourceNotFoundException"})


class _Outcome(enum.Enum):
    SHARD_END = "the shard is closed and read to its end"
    FAILED = "records were lost and the table's policy is to stop"
    STOPPED = "a stop was asked for"
    LEASE_GONE = "the lease was lost or went unrenewed for a failover time"


class ShardPoller:
    def __init__(
        self,
        *,
        api: StreamReader,
        held: HeldLease,
        transformer: RecordTransformer,
        sink: ActionSink,
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
        self._state = ShardState(start_version, held.lease.start_after)
        self._stopping = stopping
        self._metrics = metrics
        self._on_shard_end = on_shard_end
        self._on_rejected_record = on_rejected_record
        self._acked_change = asyncio.Event()
        self._state.on_acknowledged(self._acked_change.set)
        self._resumed_after_loss = False
        self._traces: list[Trace] = []
        self._on_trimmed = transformer.config.on_trimmed
        held.iterator_age = lambda: self._state.iterator_age(time.time())
        held.caught_up_at = lambda: self._state.caught_up_at
        self._written: Position | None = None
        lease = held.lease
        self._fields = {"table": lease.table, "shard": lease.shard_id}
        metrics.iterator_ages.watch(lease.table, lease.shard_id, self._state.iterator_age)
        self._records_read = metrics.records_read.labels(lease.table)  # looked up once: per record

    @property
    def lease(self) -> Lease:
        return self._held.lease

    async def run(self) -> None:
        # Supervised: a checkpointer refused for good (expired credentials, access denied) is
        # logged, counted and fails /healthz, instead of leaving a reader that never checkpoints.
        checkpointer = spawn(
            self._checkpoint_periodically(),
            "checkpointer",
            name=f"checkpointer {self.lease.table} {self.lease.shard_id}",
            fields=self._fields,
        )
        try:
            outcome = await self._poll()
            if outcome is _Outcome.LEASE_GONE:
                log.warning("lease lost or expired; stopped reading", extra=self._fields)
                return
            if outcome is _Outcome.FAILED:
                await self._wait_acknowledged()
                checkpointer.cancel()
                await self._checkpoint()
                await self._held.fail("records lost: trimmed before they were read")
                return
            await self._wait_acknowledged()
            checkpointer.cancel()  # the lease's last write is one of those below
            if outcome is _Outcome.SHARD_END:
                if await self._held.finish(self._state.version):
                    log.info("shard read to its end", extra=self._fields)
                    await self._on_shard_end(self._held.lease)
                return
            await self._checkpoint()
            await self._held.release()
        except asyncio.CancelledError:
            # Stopped before everything was acknowledged (grace period over, or lease lost):
            # keep what is acknowledged, hand the rest to the next owner. Unless the lease's last
            # write was asked for already (cancelled while finishing, say): nothing may follow
            # it, least of all a checkpoint over SHARD_END (HeldLease refuses them too).
            if not self._held.closed:
                with contextlib.suppress(Exception):
                    await self._checkpoint()
                    await self._held.release()
            raise
        finally:
            checkpointer.cancel()
            self._metrics.iterator_ages.forget(self.lease.table, self.lease.shard_id)

    async def _poll(self) -> _Outcome:
        """Reads until the shard ends, a stop is asked for, or the lease may be someone else's."""
        iterator: str | None = None
        wait = 0.0
        polled_at = clock.monotonic()
        while not self._stopping.is_set():
            if not self._held.usable:
                return _Outcome.LEASE_GONE
            sent = clock.monotonic()
            outcome, iterator, page = await self._next_page(iterator)
            if outcome is not None:
                return outcome
            if page is None:
                continue  # a new iterator first
            now = clock.monotonic()
            self._metrics.polled(self.lease.table, now - polled_at)
            polled_at = now
            if not self._held.usable:  # the call may have outlived the lease
                return _Outcome.LEASE_GONE
            read = len(page.records)
            await self._take_in(page, sent)
            if page.next_iterator is None:
                return _Outcome.SHARD_END
            iterator = page.next_iterator
            if read >= self._polling.max_records:
                wait = 0.0  # more is waiting
            elif read:
                wait = 0.0
                await self._pause(self._polling.tip_wait_seconds)
            else:
                wait = await self._idle(wait, now - sent)
        return _Outcome.STOPPED

    async def _next_page(
        self, iterator: str | None
    ) -> tuple[_Outcome | None, str | None, RecordsPage | None]:
        """(why reading ends, or None; the iterator to go on from; the page read, or None when
        an iterator must be opened first: none yet, expired, or after records were lost)."""
        try:
            if iterator is None:
                outcome, iterator = await self._iterator()
                if outcome is not None or iterator is None:
                    return outcome, None, None
            page = await retry_transient(
                lambda it=iterator: self._api.get_records(it, self._polling.max_records),  # type: ignore[misc]
                "GetRecords",
                is_transient,
                **self._fields,
            )
        except AwsError as error:
            if error.code == "ExpiredIteratorException":
                log.info(
                    "iterator expired; resuming after the last record read", extra=self._fields
                )
                return None, None, None
            if error.code not in RECORDS_GONE:
                raise
            outcome, iterator = await self._records_lost(error.code)
            return outcome, iterator, None
        return None, iterator, page

    async def _take_in(self, page: RecordsPage, asked_at: float) -> None:
        """Empties the page: each record is let go once its actions are queued, not with the
        whole page (1,000 parsed records take megabytes, held while a full queue makes a put
        wait, on every busy shard at once)."""
        last: StreamRecord | None = None
        raws = page.records
        raws.reverse()
        while raws:
            if (record := await self._parsed(raws.pop())) is not None:
                await self._process(record)
                last = record
        self._state.page_read(last, asked_at)

    async def _idle(self, wait: float, polled_in: float) -> float:
        """An empty poll (answered in `polled_in` seconds): waits twice as long as after the
        last one, from idle_wait_min_seconds up to what keeps the next poll's answer within
        pickup_seconds of this one's (or until a stop); returns how long it waited."""
        self._metrics.empty_polls.labels(self.lease.table).inc()
        wait = min(
            max(wait * 2, self._polling.idle_wait_min_seconds),
            max(self._polling.pickup_seconds - polled_in, 0.0),
        )
        await self._pause(wait)
        return wait

    async def _pause(self, seconds: float) -> None:
        """Waits `seconds`, or less if a stop is asked for."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _records_lost(self, why: str) -> tuple[_Outcome | None, str | None]:
        """The position to read from fell out of the stream's retention (or the shard is gone):
        records were lost. Never silent: an error log with the lost range, a metric, and the
        table's policy: fail (stop this shard), or restart from the oldest record still there."""
        lease = self.lease
        after = self._state.last_read or (lease.checkpoint if lease.checkpoint.isdigit() else None)
        restart = self._on_trimmed == "restart_from_trim_horizon"
        try:
            iterator: str | None = await self._api.get_shard_iterator(
                lease.stream_arn, lease.shard_id, TRIM_HORIZON
            )
        except AwsError as gone:
            if gone.code != "ResourceNotFoundException":
                raise
            iterator = None  # the whole shard expired and left the stream
        self._metrics.records_lost.labels(lease.table).inc()
        log.error(
            "records lost: %s; the records after %s %s were trimmed from the stream before they "
            "were read (policy on_trimmed=%s)",
            why,
            after if after is not None else "the shard's start",
            "up to the shard's end" if iterator is None else "up to the current trim horizon",
            self._on_trimmed,
            extra={**self._fields, "lost_after": after, "shard_gone": iterator is None},
        )
        if not restart:
            return _Outcome.FAILED, None
        if iterator is None:
            return _Outcome.SHARD_END, None  # nothing left to read: let its children go on
        await self._hold_version_floor()
        self._resumed_after_loss = True
        return None, iterator

    async def _hold_version_floor(self) -> None:
        """Numbers what is read after a loss from the present second on, and says so in the
        lease first. Versions count records within a second; a later owner that finds more of
        them trimmed would number the same records lower, and refuse a newer change as stale.
        From a floor written before numbering, and a later owner's higher one, it cannot."""
        floor = max(self._state.version, version_floor(time.time()))
        if await self._held.hold_version_floor(floor):
            self._state.hold_floor(floor)

    async def _iterator(self) -> tuple[_Outcome | None, str | None]:
        """An iterator just after the last record read, or at the lease's checkpoint; when a
        never-read lease starts at TRIM_HORIZON after the stream's retention passed what it
        must not lose, that is a loss like any trim (a TRIM_HORIZON iterator never says so)."""
        lease = self.lease
        if self._state.last_read is not None:
            kind, seq = "AFTER_SEQUENCE_NUMBER", self._state.last_read
        elif lease.checkpoint in (TRIM_HORIZON, LATEST):
            if lease.checkpoint == TRIM_HORIZON and records_may_be_lost(lease, time.time()):
                return await self._records_lost(
                    "the shard was not read within the stream's 24 h retention of when its "
                    f"records are wanted from ({lease.wanted_since:.0f})"
                )
            kind, seq = lease.checkpoint, None
        else:
            kind, seq = "AFTER_SEQUENCE_NUMBER", int(lease.checkpoint)
        iterator = await retry_transient(
            lambda: self._api.get_shard_iterator(lease.stream_arn, lease.shard_id, kind, seq),
            "GetShardIterator",
            is_transient,
            **self._fields,
        )
        return None, iterator

    async def _parsed(self, raw: dict[str, Any]) -> StreamRecord | None:
        """The record, typed; a record that is not a stream record at all (nothing to order or
        checkpoint it by) becomes a dead letter, and the shard goes on."""
        try:
            return parse_record(raw)
        except MalformedRecord as error:
            version = self._state.version
            malformed = TransformError(str(error))
            await self._on_rejected_record(
                self.lease.table, self.lease.shard_id, raw, version, malformed
            )
            return None

    async def _process(self, record: StreamRecord) -> None:
        if not self._state.read(record):
            return  # a duplicate delivery
        seq = record.sequence_number
        if self._resumed_after_loss:
            self._resumed_after_loss = False
            log.error(
                "resumed after lost records at %s",
                seq,
                extra={**self._fields, "sequence_number": str(seq), "lost_before": str(seq)},
            )
        self._records_read.inc()
        version = self._state.version_for(record)
        if version is None:
            return  # created before a LATEST start: not wanted
        trace = self._trace(record)
        try:
            actions = await self._transformer.actions(record, self.lease.shard_id, version)
        except TransformError as error:
            await self._on_rejected_record(
                self.lease.table, self.lease.shard_id, record.raw, version, error
            )
            actions = []
        if trace is not None:
            trace.stage("transformed", actions=len(actions), version=version)
            self._traces.append(trace)
        ticket = self._state.sent(record, version, len(actions))
        for action in actions:
            action.trace = trace
            await self._sink.put(action, ticket)
            if trace is not None:
                trace.stage("queued", op=action.op, index=action.index)

    def _trace(self, record: StreamRecord) -> Trace | None:
        doc_id = self._transformer.traced_id(record)
        if doc_id is None:
            return None
        trace = Trace(self.lease.table, self.lease.shard_id, record.sequence_number, doc_id)
        trace.stage("read", event=record.event_name)
        return trace

    async def _wait_acknowledged(self) -> None:
        while self._state.outstanding:
            self._acked_change.clear()
            await self._acked_change.wait()

    async def _checkpoint(self) -> None:
        position = self._state.acknowledged
        if position is None or position == self._written:
            return
        if await self._held.checkpoint(position):
            self._written = position
            done = [t for t in self._traces if t.sequence_number <= position.sequence_number]
            for trace in done:
                trace.stage("checkpointed", checkpoint=str(position.sequence_number))
            self._traces = [t for t in self._traces if t not in done]

    async def _checkpoint_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._checkpoint_interval)
            await self._checkpoint()
