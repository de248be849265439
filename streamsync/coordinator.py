"""The coordinator: discovers shards, keeps their leases, and runs one poller per held shard.

Each taker cycle scans the lease table once (the only O(leases) read), lists the streams' shards
when discovery is due, creates leases for new shards, deletes finished leases nobody needs any
more, and takes what the planner says (free and expired leases, or one steal). A shard reaching
its end wakes the cycle early, after its children's leases were created from a CHILD_SHARDS
look-up, so children start at once. Meanwhile the renewer renews every held lease about three
times per failover time, each renewal with a deadline of its own so that a stuck one never holds
up the others, and stops a shard's poller the moment its lease is lost. There is never more than
one reader per lease in this worker: a lease is taken again only once its previous reader ended.
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
from streamsync.leases.model import LATEST, TRIM_HORIZON, Lease, other_target, target_changed
from streamsync.leases.planner import ExpiryClock, live_workers, plan
from streamsync.leases.table import LeaseLost, LeaseTable
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.bulk import BulkIndexer
from streamsync.source.client import Shard, StreamsApi, TableStream
from streamsync.source.poller import OnRejectedRecord, ShardPoller
from streamsync.source.shards import leases_for_new_shards, ready_to_read, starting_version
from streamsync.supervise import failed, spawn
from streamsync.transform.actions import RecordTransformer

log = logging.getLogger("streamsync.coordinator")

T = TypeVar("T")
LEASE_WRITES_AT_ONCE = 20  # concurrent renewals or takes, as the KCL's renewer threads
# Each renewal's deadline, as a share of the renewal interval: a renewal stuck on a black-holed
# connection (a request may take 30 s) frees its place for the others well before the next round.
RENEWAL_DEADLINE_SHARE = 0.5

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
        self._retake: set[str] = set()  # chosen while their previous reader was still ending
        # This worker's lease writes (renewals, takes): when one was last answered within its
        # deadline, when one last started or ended, and how many takes are in flight.
        self._lease_write_answered_at = time.monotonic()
        self._lease_write_tried_at = 0.0
        self._takes_in_flight = 0
        self._live_workers: dict[str, set[str]] = {}  # stream ARN -> the live workers reading it
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
        renewer = spawn(self._renew_periodically(failover / 3), "renewer", name="lease renewer")
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
            with contextlib.suppress(asyncio.CancelledError, Exception):  # reported if it failed
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
        # Only the streams this worker reads: not those of tables that stopped, or the others
        # would leave it a share of their shards that nobody reads.
        streams = [arn for arn, source in self._sources.items() if source.failure is None]
        if streams:
            await self._leases.heartbeat(self.worker_id, streams)
        else:  # it reads nothing: nobody may count it (and DynamoDB refuses an empty set)
            await self._leases.remove_heartbeat(self.worker_id)
        self._heartbeat_at = time.monotonic()

    async def _scan(self) -> Snapshot:
        scan = await retry_transient(self._leases.scan, "lease scan", is_transient)
        snapshot: Snapshot = {}
        for lease in scan.leases:
            if lease.stream_arn in self._sources:  # tables this worker is configured for
                snapshot.setdefault(lease.stream_arn, {})[lease.shard_id] = lease
        for arn, by_shard in snapshot.items():
            self._refuse_other_target(self._sources[arn], by_shard.values())
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

    def _refuse_other_target(self, source: Source, leases: Iterable[Lease]) -> None:
        """Leases that fed another index (another deployment sharing the lease table, started
        alongside this one): this table stops here, loudly, rather than share the shards and
        leave both indexes with holes."""
        other = other_target(leases, source.config.index)
        if other is None or source.failure is not None:
            return
        position = self._config.tables.index(source.config)
        source.failure = target_changed(
            source.config.table, position, self._leases.name, source.config.index, other
        )
        log.error(source.failure, extra={"table": source.config.table})

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
            source.config.table,
            source.stream_arn,
            shards,
            known,
            source.config.start_position,
            time.time(),
            source.config.index,
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
        # Only the streams this worker reads, as its heartbeat lists them: a table that stopped
        # is not balanced here any more (counted, it would merge its readers' groups with this
        # worker's and make it aim for a share it cannot read).
        leases = [
            lease
            for arn, by_shard in snapshot.items()
            if self._sources[arn].failure is None
            for lease in by_shard.values()
        ]
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
        for streams, count in decided.release_from.items():  # from the group it is above in
            still_mine = {
                lease.key
                for lease in leases
                if lease.owner == self.worker_id and lease.stream_arn in streams
            }
            self._give_up(count, still_mine)
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
        earlier = self._readers.get(seen.key)
        if earlier is not None:
            # Its previous reader has not ended yet (stuck handing a page to the cluster, say,
            # after its lease expired): never a second reader beside it, or a third on the shard
            # once another worker takes it too. It is told to go; the lease is taken again once
            # it is gone (its end wakes the taker).
            if not earlier.held.usable and not earlier.held.closed:
                _stop_now(earlier)
            self._retake.add(seen.key)
            return
        sent = time.monotonic()

        async def take() -> Lease:
            nonlocal sent
            sent = time.monotonic()
            return await self._leases.take(seen, self.worker_id, source.config.index)

        self._takes_in_flight += 1
        try:
            taken = await retry_transient(take, "lease take", is_transient)
        except LeaseLost:
            self._lease_write_answered(sent)
            return  # another worker was faster
        finally:
            self._takes_in_flight -= 1
            self._lease_write_tried_at = time.monotonic()
        self._lease_write_answered(sent)
        self._metrics.leases_taken.inc()
        held = HeldLease(self._leases, taken, self._config.leases.failover_seconds)
        # The take may have landed any time after it was sent (as for HeldLease's own writes): a
        # take held up for a failover time leaves a lease that is already stale here.
        held.renewed_at = sent
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
        reader = _Reader(held, task, stop)
        self._readers[taken.key] = reader
        self._metrics.leases_held.set(len(self._readers))
        task.add_done_callback(lambda t: self._poller_done(reader, t))
        log.info(
            "reading shard",
            extra={"table": taken.table, "shard": taken.shard_id, "from": taken.checkpoint},
        )

    def _poller_done(self, reader: _Reader, task: asyncio.Task[None]) -> None:
        key = reader.held.lease.key
        if self._readers.get(key) is reader:  # by identity: never another reader of the lease
            del self._readers[key]
        self._metrics.leases_held.set(len(self._readers))
        if key in self._retake:  # chosen while this reader was ending: take it now
            self._retake.discard(key)
            self._wake.set()
        if task.cancelled() or task.exception() is None:
            return
        failed(
            "shard_reader",
            task.exception(),
            recovery="its lease will be taken again",
            fields=reader.held.fields,
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
        """Every `interval`: this worker's heartbeat, and a renewal of every held lease. Each
        renewal has its own deadline (RENEWAL_DEADLINE_SHARE of the interval); one that misses
        it goes on in the background (a sent write is never abandoned, see HeldLease._write)
        and its lease is skipped until it is done, so one black-holed request never holds up
        the other leases, nor the next round. The heartbeat runs beside the renewals, never in
        their way. A renewal refused for good (expired credentials, access denied) is reported
        to the supervisor (logged, counted, /healthz fails) and the other leases go on."""
        loop = asyncio.get_running_loop()
        deadline = interval * RENEWAL_DEADLINE_SHARE
        gate = asyncio.Semaphore(LEASE_WRITES_AT_ONCE)
        beat: asyncio.Task[None] | None = None
        next_round = loop.time() + interval
        try:
            while True:
                await asyncio.sleep(max(next_round - loop.time(), 0))
                next_round = max(next_round + interval, loop.time())
                # Leaving, or unable to hold leases: no heartbeat, so the others stop counting
                # this worker (and take its leases as they expire instead of leaving it a share).
                if (
                    not self._stopping.is_set()
                    and not self._lease_writes_failing()
                    and (beat is None or beat.done())
                ):
                    beat = asyncio.create_task(self._beat(), name="worker heartbeat")
                due = []
                for reader in list(self._readers.values()):
                    if reader.held.closed:  # finished, failed or released: never written again
                        continue
                    if not reader.held.usable:  # lost, or unrenewed for a failover time
                        _stop_now(reader)
                    elif not reader.held.writing:  # a write in flight renews it when it lands
                        due.append(reader)
                await asyncio.gather(*(self._renew(reader, gate, deadline) for reader in due))
        finally:
            if beat is not None:
                beat.cancel()

    def _lease_write_answered(self, sent: float) -> None:
        """Notes a lease write answered (done, or refused on its condition): in time if within
        the renewal deadline of when it was sent."""
        now = time.monotonic()
        deadline = self._config.leases.failover_seconds / 3 * RENEWAL_DEADLINE_SHARE
        if now - sent <= deadline:
            self._lease_write_answered_at = now

    def _lease_writes_failing(self) -> bool:
        """True when this worker is writing leases (renewing or taking) and none of its lease
        writes was answered in time for half a failover time (all stalled or refused): it
        cannot hold leases for now. A heartbeat sent beside its renewals, not after them, would
        otherwise keep announcing a worker that only lets its leases expire."""
        now = time.monotonic()
        failover = self._config.leases.failover_seconds
        trying = (
            self._takes_in_flight > 0
            or now - self._lease_write_tried_at < failover
            or any(reader.held.writing for reader in self._readers.values())
        )
        return trying and now - self._lease_write_answered_at > failover / 2

    async def _beat(self) -> None:
        try:
            await self._heartbeat()
        except Exception as error:  # a missed heartbeat only delays balancing
            log.warning("heartbeat failed: %s", error or type(error).__name__)

    async def _renew(self, reader: _Reader, gate: asyncio.Semaphore, deadline: float) -> None:
        held = reader.held
        async with gate:
            sent = self._lease_write_tried_at = time.monotonic()
            try:
                async with asyncio.timeout(deadline):
                    still_ours = await held.renew()
                self._lease_write_answered(sent)
            except TimeoutError:
                log.warning(
                    "lease renewal not done within %.1f s; it goes on in the background",
                    deadline,
                    extra=held.fields,
                )
                return
            except Exception as error:  # not transient: those are retried within the renewal
                failed("renewer", error, fields=held.fields)
                return
        if not still_ours and not held.closed:  # lost, not finished meanwhile
            _stop_now(reader)

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


def _stop_now(reader: _Reader) -> None:
    """Cancels a reader whose lease is gone (once: a second cancellation would interrupt its
    clean-up)."""
    if not reader.task.done() and not reader.task.cancelling():
        reader.task.cancel()


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
