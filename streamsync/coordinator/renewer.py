"""The renewer: keeps this worker's heartbeat, and with it every held lease, alive.

It beats about three times per failover time; a beat that hangs never holds up the next (up to
BEATS_AT_ONCE in flight). Leases live by the heartbeat (see Liveness); only while a worker of an
older version reads beside does it renew each held lease too, each renewal with a deadline of its
own so that a stuck one never holds up the others. It stops a shard's reader the moment its lease
is lost or lapsed.
"""

from __future__ import annotations

import asyncio
import logging

from streamsync import clock
from streamsync.awsjson import AwsError, is_transient
from streamsync.coordinator.lease_writes import (
    LEASE_WRITES_AT_ONCE,
    RENEWAL_DEADLINE_SHARE,
    LeaseWrites,
)
from streamsync.coordinator.readers import Reader, Readers
from streamsync.coordinator.shared import Worker
from streamsync.leases.liveness import Liveness
from streamsync.leases.ports import HeartbeatStore
from streamsync.supervise import failed

log = logging.getLogger("streamsync.coordinator")

# Heartbeats in flight at once: one that hangs (a black-holed connection may take a whole
# request timeout) must not keep the next from landing, or every lease would lapse with it.
BEATS_AT_ONCE = 3


class Renewer:
    def __init__(
        self,
        worker: Worker,
        heartbeats: HeartbeatStore,
        readers: Readers,
        writes: LeaseWrites,
        liveness: Liveness,
    ) -> None:
        self._worker = worker
        self._heartbeats = heartbeats
        self._readers = readers
        self._writes = writes
        self._liveness = liveness
        self.heartbeat_at = clock.monotonic()  # the last successful heartbeat, for readiness

    async def heartbeat(self) -> None:
        # Only the streams this worker reads: not those of tables that stopped, or the others
        # would leave it a share of their shards that nobody reads.
        sources = self._worker.sources.items()
        streams = frozenset(arn for arn, source in sources if source.failure is None)
        if streams:
            # Not a lease write for LeaseWrites.failing: a worker whose lease items cannot be
            # written must stop beating even while its heartbeat item still can be.
            sent = clock.monotonic()
            await self._heartbeats.beat(self._worker.id, streams)
            self._liveness.beat_landed(sent, streams)
        else:  # it reads nothing: nobody may count it (and DynamoDB refuses an empty set)
            await self._heartbeats.remove(self._worker.id)
        self.heartbeat_at = clock.monotonic()

    async def run(self, interval: float) -> None:
        """Every `interval`: this worker's heartbeat, and while renewals are on (see Liveness) a
        renewal of every held lease. Each renewal has its own deadline (RENEWAL_DEADLINE_SHARE
        of the interval); one that misses it goes on in the background (a sent write is never
        abandoned, see HeldLease._write) and its lease is skipped until it is done, so one
        black-holed request never holds up the other leases, nor the next round. The heartbeat
        runs beside the renewals, never in their way. A heartbeat or renewal refused for good
        (expired credentials, access denied) is reported to the supervisor (logged, counted,
        /healthz fails) and the rest goes on."""
        loop = asyncio.get_running_loop()
        deadline = interval * RENEWAL_DEADLINE_SHARE
        gate = asyncio.Semaphore(LEASE_WRITES_AT_ONCE)
        beats: set[asyncio.Task[None]] = set()
        renewing = self._liveness.renewals
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
                    and len(beats) < BEATS_AT_ONCE
                ):
                    beat = asyncio.create_task(self._beat(), name="worker heartbeat")
                    beats.add(beat)
                    beat.add_done_callback(beats.discard)
                started = self._liveness.renewals and not renewing
                renewing = self._liveness.renewals
                due = []
                for reader in list(self._readers.values()):
                    if reader.held.closed:  # finished, failed or released: never written again
                        continue
                    if started:  # an older worker appeared: see Liveness.counting_from
                        reader.held.renewed_at = self._liveness.counting_from(
                            reader.held.renewed_at
                        )
                    if not reader.held.usable:  # lost, or kept alive by nothing for a failover
                        reader.stop_now()
                    elif not reader.held.writing:  # a write in flight renews it when it lands
                        due.append(reader)
                if renewing:
                    await asyncio.gather(*(self._renew(r, gate, deadline) for r in due))
        finally:
            for beat in list(beats):
                beat.cancel()

    async def _beat(self) -> None:
        try:
            await self.heartbeat()
        except Exception as error:
            self._worker.metrics.heartbeat_failures.inc()
            if isinstance(error, AwsError) and not is_transient(error):
                # Refused for good (expired credentials, access denied): this worker's leases
                # live by its heartbeat, so it will lose them; a restart gets fresh credentials.
                failed("renewer", error, fields={"worker": self._worker.id})
                return
            # Throttling, a server error, the connection: the next beat, a third of a failover
            # time on, may land.
            log.warning("heartbeat failed: %s", error or type(error).__name__)

    async def _renew(self, reader: Reader, gate: asyncio.Semaphore, deadline: float) -> None:
        held = reader.held
        async with gate:
            self._writes.tried()
            try:
                async with asyncio.timeout(deadline):
                    still_ours = await held.renew()  # answered: see HeldLease's on_answered
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
