"""The renewer: keeps every held lease, and this worker's heartbeat, alive.

It renews each held lease about three times per failover time, each renewal with a deadline of
its own so that a stuck one never holds up the others, and stops a shard's reader the moment its
lease is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from streamsync import clock
from streamsync.coordinator.lease_writes import (
    LEASE_WRITES_AT_ONCE,
    RENEWAL_DEADLINE_SHARE,
    LeaseWrites,
)
from streamsync.coordinator.readers import Reader, Readers
from streamsync.coordinator.shared import Worker
from streamsync.leases.ports import HeartbeatStore
from streamsync.supervise import failed

log = logging.getLogger("streamsync.coordinator")


class Renewer:
    def __init__(
        self,
        worker: Worker,
        heartbeats: HeartbeatStore,
        readers: Readers,
        writes: LeaseWrites,
        renewals_needed: Callable[[], bool],
    ) -> None:
        self._worker = worker
        self._renewals_needed = renewals_needed
        self._heartbeats = heartbeats
        self._readers = readers
        self._writes = writes
        self.heartbeat_at = clock.monotonic()  # the last successful heartbeat, for readiness

    async def heartbeat(self) -> None:
        # Only the streams this worker reads: not those of tables that stopped, or the others
        # would leave it a share of their shards that nobody reads.
        sources = self._worker.sources.items()
        streams = [arn for arn, source in sources if source.failure is None]
        if streams:
            sent = self._writes.tried()
            await self._heartbeats.beat(self._worker.id, streams)
            self._writes.answered(sent)  # a lease-table write like the renewals (see failing)
            if not self._renewals_needed():  # the others judge this worker's leases by this beat
                listed = set(streams)
                for reader in self._readers.values():
                    if reader.held.lease.stream_arn in listed:
                        reader.held.vouch(sent)
        else:  # it reads nothing: nobody may count it (and DynamoDB refuses an empty set)
            await self._heartbeats.remove(self._worker.id)
        self.heartbeat_at = clock.monotonic()

    async def run(self, interval: float) -> None:
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
                    not self._worker.stopping.is_set()
                    and not self._writes.failing(self._readers.writing)
                    and (beat is None or beat.done())
                ):
                    beat = asyncio.create_task(self._beat(), name="worker heartbeat")
                due = []
                for reader in list(self._readers.values()):
                    if reader.held.closed:  # finished, failed or released: never written again
                        continue
                    if not reader.held.usable:  # lost, or unrenewed for a failover time
                        reader.stop_now()
                    elif not reader.held.writing:  # a write in flight renews it when it lands
                        due.append(reader)
                if self._renewals_needed():  # a worker of an older version reads beside this one
                    await asyncio.gather(*(self._renew(r, gate, deadline) for r in due))
        finally:
            if beat is not None:
                beat.cancel()

    async def _beat(self) -> None:
        try:
            await self.heartbeat()
        except Exception as error:  # a missed heartbeat only delays balancing
            log.warning("heartbeat failed: %s", error or type(error).__name__)

    async def _renew(self, reader: Reader, gate: asyncio.Semaphore, deadline: float) -> None:
        held = reader.held
        async with gate:
            sent = self._writes.tried()
            try:
                async with asyncio.timeout(deadline):
                    still_ours = await held.renew()
                self._writes.answered(sent)
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
            reader.stop_now()
