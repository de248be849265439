"""The coordinator: discovers shards, keeps their leases, and runs one poller per held shard.

Each taker cycle scans the lease table once (the only O(leases) read), lists the streams' shards
when discovery is due, creates leases for new shards, deletes finished leases nobody needs any
more, and takes what the planner says (free and expired leases, or one steal). A shard reaching
its end wakes the cycle early, after its children's leases were created from a CHILD_SHARDS
look-up, so children start at once. Meanwhile the renewer renews every held lease about three
times per failover time and stops a shard's poller the moment its lease is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from streamsync.awsjson import AwsError, is_transient
from streamsync.config import Config, TableConfig
from streamsync.leases.held import HeldLease
from streamsync.leases.model import LATEST, TRIM_HORIZON, Lease
from streamsync.leases.planner import ExpiryClock, live_workers, plan
from streamsync.leases.table import LeaseLost, LeaseTable
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.bulk import BulkIndexer
from streamsync.source.client import Shard, StreamsApi, TableStream
from streamsync.source.poller import OnRejectedRecord, ShardPoller
from streamsync.source.shards import leases_for_new_shards, ready_to_read, starting_version
from streamsync.transform.actions import RecordTransformer

log = logging.getLogger("streamsync.coordinator")

T = TypeVar("T")
LEASE_WRITES_AT_ONCE = 20  # concurrent renewals or takes, as the KCL's renewer threads

Snapshot = dict[str, dict[str, Lease]]  # stream ARN -> shard id -> lease


@dataclass
class _Reader:
    held: HeldLease
    task: asyncio.Task[None]
    stop: asyncio.Event  # asks this reader to drain, checkpoint and release


@dataclass
class Source:
    """One configured table and what was learnt about its stream."""

    config: TableConfig
    stream: TableStream
    transformer: RecordTransformer
    listed: set[str] = field(default_factory=set)  # shard ids DescribeStream listed last
    failure: str | None = None  # why this table stopped streaming (table deleted, ...)

    @property
    def stream_arn(self) -> str:
        assert self.stream.stream_arn is not None
        return self.stream.stream_arn


async def _bounded(calls: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Runs calls concurrently, at most LEASE_WRITES_AT_ONCE at a time."""
    gate = asyncio.Semaphore(LEASE_WRITES_AT_ONCE)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


class Coordinator:
    def __init__(
        self,
        *,
        config: Config,
        worker_id: str,
        api: StreamsApi,
        leases: LeaseTable,
        sources: list[Source],
        sink: BulkIndexer,
        metrics: Metrics,
        stopping: asyncio.Event,
        on_rejected_record: OnRejectedRecord,
    ) -> None:
        self._config = config
        self.worker_id = worker_id
        self._api = api
        self._leases = leases
        self._sources = {s.stream_arn: s for s in sources}
        self._sink = sink
        self._metrics = metrics
        self._stopping = stopping
        self._on_rejected_record = on_rejected_record
        self._wake = asyncio.Event()
        self._expiry = ExpiryClock(config.leases.failover_seconds)
        self._worker_expiry = ExpiryClock(config.leases.failover_seconds)
        self._readers: dict[str, _Reader] = {}
        self._live_workers: set[str] = set()
        self._heartbeat_at = time.monotonic()

    def problems(self) -> list[str]:
        """What keeps this worker from doing its job, for readiness."""
        problems = [s.failure for s in self._sources.values() if s.failure is not None]
        silent = time.monotonic() - self._heartbeat_at
        if silent > self._config.leases.failover_seconds:
            problems.append(f"lease table: no successful write for {silent:.0f} s")
        return problems

    @property
    def held(self) -> list[Lease]:
        return [reader.held.lease for reader in self._readers.values()]

    async def run(self) -> None:
        """Runs until `stopping` is set, then lets every poller drain, checkpoint and release."""
        failover = self._config.leases.failover_seconds
        # Announce this worker before the first take, so workers starting together share at once.
        await retry_transient(self._heartbeat, "heartbeat", is_transient)
        renewer = asyncio.create_task(self._renew_periodically(failover / 3))
        try:
            loop = asyncio.get_running_loop()
            next_discovery = 0.0
            while not self._stopping.is_set():
                snapshot = await self._scan()
                if loop.time() >= next_discovery:
                    for source in self._sources.values():
                        known = snapshot.setdefault(source.stream_arn, {})
                        await self._guarded(source, lambda s=source, k=known: self._discover(s, k))  # type: ignore[misc]
                    next_discovery = loop.time() + self._config.leases.discovery_interval_seconds
                await self._take(snapshot)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(failover / 2):
                        await _first(self._wake.wait(), self._stopping.wait())
            with contextlib.suppress(Exception):  # left behind, others delete it after a while
                await self._leases.remove_heartbeat(self.worker_id)
            await self._stop_readers()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def lease_new_stream(self, source: Source) -> bool:
        """Leases the shards of a stream nobody has leased yet (before an initial load); True
        when it was new. The leases start at TRIM_HORIZON: the position before the scan."""
        known = (await self._scan()).get(source.stream_arn, {})
        if known:
            return False
        await self._discover(source, known)
        return True

    async def _heartbeat(self) -> None:
        await self._leases.heartbeat(self.worker_id, self._sources)
        self._heartbeat_at = time.monotonic()

    async def _scan(self) -> Snapshot:
        scan = await retry_transient(self._leases.scan, "lease scan", is_transient)
        snapshot: Snapshot = {}
        for lease in scan.leases:
            if lease.stream_arn in self._sources:  # tables this worker is configured for
                snapshot.setdefault(lease.stream_arn, {})[lease.shard_id] = lease
        now = asyncio.get_running_loop().time()
        stale = self._worker_expiry.expired(scan.workers, now)
        self._live_workers = live_workers(scan.workers, stale, self._sources)
        for beat in scan.workers:
            # A worker gone for a while (killed: it could not delete its own heartbeat).
            if (
                beat.key in stale
                and now - stale[beat.key] > 3 * self._config.leases.failover_seconds
            ):
                with contextlib.suppress(Exception):
                    await self._leases.delete_worker(beat)
        return snapshot

    async def _guarded(self, source: Source, work: Callable[[], Awaitable[None]]) -> None:
        """Runs one table's discovery work so that its failure stops only that table: a deleted
        table or a disabled stream is an error for it while the other tables keep flowing."""
        if source.failure is not None:
            return
        try:
            await work()
        except AwsError as error:
            if error.code != "ResourceNotFoundException":
                raise
            source.failure = (
                f"table {source.config.table}: its stream {source.stream_arn} is gone (the table "
                "was deleted or its stream disabled); its changes are no longer streamed. Fix: "
                "enable the stream again and restart streamsync (a new stream needs a backfill)"
            )
            log.error(source.failure, extra={"table": source.config.table})

    async def _discover(self, source: Source, known: dict[str, Lease]) -> None:
        shards = await retry_transient(
            lambda: self._api.describe_shards(source.stream_arn),
            "DescribeStream",
            is_transient,
            table=source.config.table,
        )
        source.listed = {s.shard_id for s in shards}
        closed = sum(s.closed for s in shards)
        self._metrics.shards.labels(source.config.table, "open").set(len(shards) - closed)
        self._metrics.shards.labels(source.config.table, "closed").set(closed)
        for lease in await self._create_leases(source, shards, known):
            known[lease.shard_id] = lease
        await self._clean_up(source, known)

    async def _create_leases(
        self, source: Source, shards: list[Shard], known: dict[str, Lease]
    ) -> list[Lease]:
        """Creates the missing leases; returns those this worker created (others may race)."""
        new = leases_for_new_shards(
            source.config.table, source.stream_arn, shards, known, source.config.start_position
        )
        created = await _bounded(
            lambda lease=lease: retry_transient(  # type: ignore[misc]
                lambda: self._leases.create(lease), "lease creation", is_transient
            )
            for lease in new
        )
        mine = [lease for lease, was_created in zip(new, created, strict=True) if was_created]
        for lease in mine:
            log.info(
                "new shard",
                extra={"table": lease.table, "shard": lease.shard_id, "at": lease.checkpoint},
            )
        return mine

    async def _clean_up(self, source: Source, known: dict[str, Lease]) -> None:
        """Deletes finished leases whose shard left the stream, whose children started, and
        whose shard ended longer ago than the stream's retention. Deleting one earlier would
        let discovery lease its shard again and read it twice, or hold its children back."""
        horizon = time.time() - self._config.leases.cleanup_after_seconds
        children: dict[str, list[Lease]] = {}
        for lease in known.values():
            for parent in lease.parent_shard_ids:
                children.setdefault(parent, []).append(lease)
        for lease in list(known.values()):
            kids = children.get(lease.shard_id, [])
            if (
                lease.finished
                and lease.finished_at is not None
                and lease.finished_at < horizon
                and lease.shard_id not in source.listed
                and kids
                and all(_started(kid) for kid in kids)
            ):
                with contextlib.suppress(LeaseLost):
                    await retry_transient(
                        lambda lease=lease: self._leases.delete(lease),  # type: ignore[misc]
                        "lease clean-up",
                        is_transient,
                    )
                    del known[lease.shard_id]
                    log.info(
                        "deleted a finished lease",
                        extra={"table": lease.table, "shard": lease.shard_id},
                    )

    async def _take(self, snapshot: Snapshot) -> None:
        leases = [lease for by_shard in snapshot.values() for lease in by_shard.values()]
        expired = self._expiry.expired(leases, asyncio.get_running_loop().time())
        for lease in leases:
            if lease.owner == self.worker_id and lease.key not in self._readers:
                expired[lease.key] = 0.0  # ours but not being read (a reader failed): retake

        def ready(lease: Lease) -> bool:
            source = self._sources[lease.stream_arn]
            if source.failure is not None:
                return False
            if lease.failure is not None and source.config.on_trimmed == "fail":
                return False  # records were lost; an operator decides (see the lease's failure)
            return ready_to_read(lease, snapshot[lease.stream_arn], source.listed)

        decided = plan(leases, self.worker_id, expired, ready, workers=self._live_workers)
        if decided.release:
            still_mine = {lease.key for lease in leases if lease.owner == self.worker_id}
            self._give_up(decided.release, still_mine)
        chosen = [*decided.take, *([decided.steal] if decided.steal else [])]
        for lease in chosen:
            if lease.owner not in (None, self.worker_id):
                log.info(
                    "taking over a lease",
                    extra={"table": lease.table, "shard": lease.shard_id, "from": lease.owner},
                )
        await _bounded(
            lambda lease=lease: self._start(  # type: ignore[misc]
                self._sources[lease.stream_arn],
                lease,
                starting_version(lease, snapshot[lease.stream_arn]),
            )
            for lease in chosen
        )

    def _give_up(self, count: int, still_mine: set[str]) -> None:
        """Asks readers to hand their leases over gracefully (checkpoint, release) until `count`
        are on their way out; only leases the scan still shows as this worker's count."""
        mine = [r for key, r in self._readers.items() if key in still_mine]
        leaving = sum(r.stop.is_set() for r in mine)
        running = [r for r in mine if not r.stop.is_set()]
        for reader in running[len(running) - max(count - leaving, 0) :]:  # the most recent
            log.info("giving a lease up to balance the load", extra=reader.held.fields)
            reader.stop.set()

    async def _start(self, source: Source, seen: Lease, start_version: int) -> None:
        if self._stopping.is_set():
            return
        try:
            taken = await retry_transient(
                lambda: self._leases.take(seen, self.worker_id), "lease take", is_transient
            )
        except LeaseLost:
            return  # another worker was faster
        self._metrics.leases_taken.inc()
        held = HeldLease(self._leases, taken, self._config.leases.failover_seconds)
        stop = asyncio.Event()
        poller = ShardPoller(
            api=self._api,
            held=held,
            transformer=source.transformer,
            sink=self._sink,
            polling=self._config.polling,
            checkpoint_interval=self._config.checkpoint_interval_seconds,
            start_version=start_version,
            stopping=stop,
            metrics=self._metrics,
            on_shard_end=lambda lease: self._guarded(
                source, lambda: self._shard_ended(source, lease)
            ),
            on_rejected_record=self._on_rejected_record,
        )
        task = asyncio.create_task(poller.run(), name=f"poller {taken.table} {taken.shard_id}")
        self._readers[taken.key] = _Reader(held, task, stop)
        self._metrics.leases_held.set(len(self._readers))
        task.add_done_callback(lambda t: self._poller_done(taken.key, t))
        log.info(
            "reading shard",
            extra={"table": taken.table, "shard": taken.shard_id, "from": taken.checkpoint},
        )

    def _poller_done(self, key: str, task: asyncio.Task[None]) -> None:
        reader = self._readers.pop(key, None)
        self._metrics.leases_held.set(len(self._readers))
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        fields = reader.held.fields if reader is not None else {}
        log.error(
            "shard reader failed; its lease will be taken again", exc_info=error, extra=fields
        )
        self._wake.set()

    async def _shard_ended(self, source: Source, lease: Lease) -> None:
        children = await retry_transient(
            lambda: self._api.child_shards(lease.stream_arn, lease.shard_id),
            "DescribeStream (children)",
            is_transient,
            table=lease.table,
            shard=lease.shard_id,
        )
        if children:
            source.listed |= {c.shard_id for c in children}
            # The finished parent is known, so these count as later shards: TRIM_HORIZON.
            await self._create_leases(source, children, {lease.shard_id: lease})
        else:  # the look-up can lag behind the split: list the whole stream instead
            await self._discover(source, (await self._scan()).get(source.stream_arn, {}))
        self._wake.set()

    async def _renew_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self._stopping.is_set():  # leaving: the others stop counting this worker
                try:
                    await self._heartbeat()
                except Exception as error:  # a missed heartbeat only delays balancing
                    log.warning("heartbeat failed: %s", error)
            readers = [r for r in self._readers.values() if not r.held.closed]
            renewed = await _bounded(reader.held.renew for reader in readers)
            for reader, still_ours in zip(readers, renewed, strict=True):
                if not still_ours and not reader.held.closed:  # lost, not finished meanwhile
                    reader.task.cancel()

    async def _stop_readers(self) -> None:
        for reader in self._readers.values():
            reader.stop.set()
        pollers = [reader.task for reader in self._readers.values()]
        if not pollers:
            return
        _, late = await asyncio.wait(pollers, timeout=self._config.shutdown_grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)


def _started(lease: Lease) -> bool:
    return (
        lease.finished
        or lease.owner is not None
        or lease.checkpoint
        not in (
            TRIM_HORIZON,
            LATEST,
        )
    )


async def _first(*waits: Awaitable[object]) -> None:
    """Waits until the first of several awaitables is done; cancels the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
