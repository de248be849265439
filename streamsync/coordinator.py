"""The coordinator: discovers shards, keeps their leases, and runs one poller per held shard.

Three loops share the lease table. Discovery lists each stream's shards (DescribeStream, paged)
and creates leases for new ones. The taker scans the lease table once per cycle and takes the
leases that are free and ready (all parents finished); a shard reaching its end wakes it at once,
after its children's leases were created from a CHILD_SHARDS look-up. The renewer renews every
held lease about three times per failover time, and stops a shard's poller the moment its lease
is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field

from streamsync.config import Config, TableConfig
from streamsync.leases.held import HeldLease
from streamsync.leases.model import Lease
from streamsync.leases.planner import ExpiryClock, plan
from streamsync.leases.table import LeaseLost, LeaseTable
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.bulk import BulkIndexer
from streamsync.source.client import Shard, StreamsApi, TableStream, is_transient
from streamsync.source.poller import OnRejectedRecord, ShardPoller
from streamsync.source.shards import leases_for_new_shards, ready_to_read, starting_version
from streamsync.transform.actions import RecordTransformer

log = logging.getLogger("streamsync.coordinator")


@dataclass
class Source:
    """One configured table and what was learnt about its stream."""

    config: TableConfig
    stream: TableStream
    transformer: RecordTransformer
    listed: set[str] = field(default_factory=set)  # shard ids DescribeStream listed last

    @property
    def stream_arn(self) -> str:
        assert self.stream.stream_arn is not None
        return self.stream.stream_arn


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
        self._pollers: dict[str, tuple[HeldLease, asyncio.Task[None]]] = {}

    @property
    def held(self) -> list[Lease]:
        return [held.lease for held, _ in self._pollers.values()]

    async def run(self) -> None:
        """Runs until `stopping` is set, then lets every poller drain, checkpoint and release."""
        failover = self._config.leases.failover_seconds
        renewer = asyncio.create_task(self._renew_periodically(failover / 3))
        try:
            next_discovery = 0.0
            loop = asyncio.get_running_loop()
            while not self._stopping.is_set():
                if loop.time() >= next_discovery:
                    for source in self._sources.values():
                        await self._discover(source)
                    next_discovery = loop.time() + self._config.leases.discovery_interval_seconds
                await self._take()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(failover / 2):
                        await _first(self._wake.wait(), self._stopping.wait())
            await self._stop_pollers()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _discover(self, source: Source) -> None:
        shards = await retry_transient(
            lambda: self._api.describe_shards(source.stream_arn),
            "DescribeStream",
            is_transient,
            table=source.config.table,
        )
        source.listed = {s.shard_id for s in shards}
        await self._create_leases(source, shards)

    async def _create_leases(self, source: Source, shards: list[Shard]) -> None:
        existing = {
            lease.shard_id: lease
            for lease in await retry_transient(
                lambda: self._leases.list(source.stream_arn), "lease scan", is_transient
            )
        }
        for lease in leases_for_new_shards(
            source.config.table,
            source.stream_arn,
            shards,
            existing,
            source.config.start_position,
        ):
            if await retry_transient(
                lambda lease=lease: self._leases.create(lease),  # type: ignore[misc]
                "lease creation",
                is_transient,
            ):
                log.info(
                    "new shard",
                    extra={"table": lease.table, "shard": lease.shard_id, "at": lease.checkpoint},
                )

    async def _take(self) -> None:
        leases = [
            lease
            for lease in await retry_transient(
                lambda: self._leases.list(), "lease scan", is_transient
            )
            if lease.stream_arn in self._sources  # tables this worker is configured for
        ]
        expired = self._expiry.expired(leases, asyncio.get_running_loop().time())
        for lease in leases:
            if lease.owner == self.worker_id and lease.key not in self._pollers:
                expired[lease.key] = 0.0  # ours but not being read (a reader failed): retake
        by_stream: dict[str, dict[str, Lease]] = {}
        for lease in leases:
            by_stream.setdefault(lease.stream_arn, {})[lease.shard_id] = lease

        def ready(lease: Lease) -> bool:
            source = self._sources[lease.stream_arn]
            return ready_to_read(lease, by_stream[lease.stream_arn], source.listed)

        decided = plan(leases, self.worker_id, expired, ready)
        for lease in [*decided.take, *([decided.steal] if decided.steal else [])]:
            if self._stopping.is_set():
                return
            if lease.owner not in (None, self.worker_id):
                log.info(
                    "taking over a lease",
                    extra={"table": lease.table, "shard": lease.shard_id, "from": lease.owner},
                )
            start_version = starting_version(lease, by_stream[lease.stream_arn])
            await self._start(self._sources[lease.stream_arn], lease, start_version)

    async def _start(self, source: Source, seen: Lease, start_version: int) -> None:
        try:
            taken = await retry_transient(
                lambda: self._leases.take(seen, self.worker_id), "lease take", is_transient
            )
        except LeaseLost:
            return  # another worker was faster
        self._metrics.leases_taken.inc()
        held = HeldLease(self._leases, taken, self._config.leases.failover_seconds)
        poller = ShardPoller(
            api=self._api,
            held=held,
            transformer=source.transformer,
            sink=self._sink,
            polling=self._config.polling,
            checkpoint_interval=self._config.checkpoint_interval_seconds,
            start_version=start_version,
            stopping=self._stopping,
            metrics=self._metrics,
            on_shard_end=lambda lease, source=source: self._shard_ended(source, lease),  # type: ignore[misc]
            on_rejected_record=self._on_rejected_record,
        )
        task = asyncio.create_task(poller.run(), name=f"poller {taken.table} {taken.shard_id}")
        self._pollers[taken.key] = (held, task)
        self._metrics.leases_held.set(len(self._pollers))
        task.add_done_callback(lambda t, key=taken.key: self._poller_done(key, t))  # type: ignore[misc]
        log.info(
            "reading shard",
            extra={"table": taken.table, "shard": taken.shard_id, "from": taken.checkpoint},
        )

    def _poller_done(self, key: str, task: asyncio.Task[None]) -> None:
        held, _ = self._pollers.pop(key, (None, None))
        self._metrics.leases_held.set(len(self._pollers))
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        fields = held.fields if held is not None else {}
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
        if not children:  # the look-up can lag behind the split: list the whole stream instead
            await self._discover(source)
        else:
            source.listed |= {c.shard_id for c in children}
            await self._create_leases(source, children)
        self._wake.set()

    async def _renew_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for held, task in list(self._pollers.values()):
                if not await held.renew():
                    task.cancel()

    async def _stop_pollers(self) -> None:
        pollers = [task for _, task in self._pollers.values()]
        if not pollers:
            return
        _, late = await asyncio.wait(pollers, timeout=self._config.shutdown_grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)


async def _first(*waits: Awaitable[object]) -> None:
    """Waits until the first of several awaitables is done; cancels the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
