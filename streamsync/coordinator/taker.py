"""The taker: decides which leases this worker reads, and starts a reader for each one taken.

Each cycle looks at the lease table (see LeaseScanner.cycle), lists the streams' shards when
discovery is due, then takes what the planner says (free and expired leases, or one steal) and
gives up what it says to balance the load. A cycle runs every half failover time, or sooner
when woken: a shard ended (its children may start) or a reader ended (its lease is taken again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from streamsync import clock
from streamsync.awsjson import is_transient
from streamsync.coordinator.discovery import Discovery
from streamsync.coordinator.lease_writes import LeaseWrites, bounded
from streamsync.coordinator.readers import Reader, Readers
from streamsync.coordinator.scan import LeaseScanner, Snapshot
from streamsync.coordinator.shared import Source, Worker, guarded
from streamsync.leases.held import HeldLease
from streamsync.leases.liveness import Liveness
from streamsync.leases.model import Lease
from streamsync.leases.planner import ExpiryClock, Plan, lease_expiry, plan
from streamsync.leases.requests import LeaseLost
from streamsync.retry import retry_transient
from streamsync.source.poller import ShardPoller
from streamsync.source.shards import ready_to_read, starting_version

log = logging.getLogger("streamsync.coordinator")


class Taker:
    def __init__(
        self,
        worker: Worker,
        scanner: LeaseScanner,
        discovery: Discovery,
        readers: Readers,
        writes: LeaseWrites,
        liveness: Liveness,
    ) -> None:
        self._worker = worker
        self._liveness = liveness
        self._by_counter = liveness.by_counter
        self._scanner = scanner
        self._discovery = discovery
        self._readers = readers
        self._writes = writes
        self._expiry = ExpiryClock(worker.config.leases.failover_seconds)
        self._quick_until = 0.0  # quick cycles end then (see _pause); 0: not in quick cycles
        self._steal_after = 0.0  # one steal per half failover time, quick cycles or not

    async def run(self) -> None:
        """Runs cycles until `stopping` is set: every half failover time, or sooner when woken
        (a shard ended) or when others are about to give this worker its share (see `_pause`)."""
        loop = asyncio.get_running_loop()
        next_discovery = 0.0
        while not self._worker.stopping.is_set():
            # Cleared before the scan: a wake-up during the cycle (a take lost to a release, a
            # shard's end) calls for another cycle at once, not after the pause.
            woken = self._worker.wake.is_set()
            self._worker.wake.clear()
            snapshot = await self._scanner.cycle(full=woken)
            if loop.time() >= next_discovery:
                for source in self._worker.sources.values():
                    known = snapshot.setdefault(source.stream_arn, {})
                    await guarded(source, lambda s=source, k=known: self._discovery.discover(s, k))  # type: ignore[misc]
                next_discovery = loop.time() + self._worker.config.leases.discovery_interval_seconds
            pause = self._pause(await self._take(snapshot), loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await _first(self._worker.wake.wait(), self._worker.stopping.wait())

    def _pause(self, decided: Plan, now: float) -> float:
        """Half a failover time; a twelfth while others hold more than their share and give
        leases up for this worker (a lease they release would otherwise sit unread until the
        next cycle), for one failover time at most, so a worker that never sheds costs little."""
        failover = self._worker.config.leases.failover_seconds
        if not decided.releases_expected:
            self._quick_until = 0.0
            return failover / 2
        if self._quick_until == 0.0:
            self._quick_until = now + failover
        return failover / 12 if now < self._quick_until else failover / 2

    async def _take(self, snapshot: Snapshot) -> Plan:
        # Only the streams this worker reads, as its heartbeat lists them: a table that stopped
        # is not balanced here any more (counted, it would merge its readers' groups with this
        # worker's and make it aim for a share it cannot read).
        leases = [
            lease
            for arn, by_shard in snapshot.items()
            if self._worker.sources[arn].failure is None
            for lease in by_shard.values()
        ]
        if self._liveness.by_counter and not self._by_counter:
            # Judged by their counters again (an older worker appeared): idle leases' counters
            # stood still for long, so their owners get a failover time from now to renew.
            self._expiry = ExpiryClock(self._worker.config.leases.failover_seconds)
        self._by_counter = self._liveness.by_counter
        expired = lease_expiry(
            leases,
            self._expiry.expired(leases, asyncio.get_running_loop().time()),
            [] if self._by_counter else self._scanner.beats,
            self._scanner.stale_beats,
        )
        self._readers.stop_taken(leases, self._worker.id)
        for lease in leases:
            if lease.owner == self._worker.id and lease.key not in self._readers:
                expired[lease.key] = 0.0  # ours but not being read (a reader failed): retake
        decided = plan(
            leases,
            self._worker.id,
            expired,
            lambda lease: self._ready(lease, snapshot),
            workers=self._scanner.live_workers,
        )
        for streams, count in decided.release_from.items():  # from the group it is above in
            still_mine = {
                lease.key
                for lease in leases
                if lease.owner == self._worker.id and lease.stream_arn in streams
            }
            self._readers.give_up(count, still_mine)
        now = asyncio.get_running_loop().time()
        if decided.steal is not None and now >= self._steal_after:
            self._steal_after = now + self._worker.config.leases.failover_seconds / 2
        else:
            decided.steal = None
        chosen = [*decided.take, *([decided.steal] if decided.steal else [])]
        for lease in chosen:
            if lease.owner not in (None, self._worker.id):
                log.info(
                    "taking over a lease",
                    extra={"table": lease.table, "shard": lease.shard_id, "from": lease.owner},
                )
        await bounded(
            lambda lease=lease: self._start(  # type: ignore[misc]
                self._worker.sources[lease.stream_arn],
                lease,
                starting_version(lease, snapshot[lease.stream_arn]),
            )
            for lease in chosen
        )
        return decided

    def _ready(self, lease: Lease, snapshot: Snapshot) -> bool:
        source = self._worker.sources[lease.stream_arn]
        if source.failure is not None:
            return False
        if lease.failure is not None and source.config.on_trimmed == "fail":
            return False  # records were lost; an operator decides (see the lease's failure)
        return ready_to_read(lease, snapshot[lease.stream_arn], source.listed)

    async def _start(self, source: Source, seen: Lease, start_version: int) -> None:
        if self._worker.stopping.is_set() or not self._liveness.may_take():
            return  # its heartbeat about to lapse, a lease taken now would lapse with it
        if not self._readers.may_take(seen.key):
            return
        sent = clock.monotonic()

        async def take() -> Lease:
            nonlocal sent
            sent = clock.monotonic()
            return await self._worker.leases.take(seen, self._worker.id, source.config.index)

        try:
            with self._writes.taking():
                taken = await retry_transient(take, "lease take", is_transient)
        except LeaseLost:
            # Changed since the scan: taken by another worker, or released (a worker giving
            # its share up for this one); a fresh scan tells which, without waiting a cycle.
            self._writes.answered(sent)
            self._worker.wake.set()
            return
        self._writes.answered(sent)
        self._worker.metrics.leases_taken.inc()
        held = HeldLease(
            self._worker.leases,
            taken,
            self._worker.config.leases.failover_seconds,
            self._liveness,
            self._writes.answered,
        )
        # The take may have landed any time after it was sent (as for HeldLease's own writes): a
        # take held up for a failover time leaves a lease that is already stale here.
        held.renewed_at = sent
        self._read(source, held, start_version)

    def _read(self, source: Source, held: HeldLease, start_version: int) -> None:
        stop = asyncio.Event()
        poller = ShardPoller(
            api=self._worker.api,
            held=held,
            transformer=source.transformer,
            sink=self._worker.sink,
            polling=self._worker.config.polling,
            checkpoint_interval=self._worker.config.checkpoint_interval_seconds,
            start_version=start_version,
            stopping=stop,
            metrics=self._worker.metrics,
            on_shard_end=lambda lease: guarded(
                source, lambda: self._discovery.shard_ended(source, lease)
            ),
            on_rejected_record=self._worker.on_rejected_record,
        )
        taken = held.lease
        task = asyncio.create_task(poller.run(), name=f"poller {taken.table} {taken.shard_id}")
        self._readers.register(Reader(held, task, stop))
        log.info(
            "reading shard",
            extra={"table": taken.table, "shard": taken.shard_id, "from": taken.checkpoint},
        )


async def _first(*waits: Awaitable[object]) -> None:
    """Waits until the first of several awaitables is done; cancels the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
