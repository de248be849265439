"""The coordinator: discovers shards, keeps their leases, and runs one poller per held shard.

Three flows share this worker's leases, each an object of its own: the taker (`taker`) scans
the lease table, has new shards leased and finished leases deleted (`discovery`), and takes or
gives up leases as the planner says; the renewer (`renewer`) keeps the held leases and this
worker's heartbeat alive; and the readers of the held leases are one registry (`readers`), the
only owner of that shared state, which both flows go through so that there is never more than
one reader per lease in this worker. How the lease writes of both flows fare is kept apart
(`lease_writes`): a worker that cannot write leases stops announcing itself.
"""

from __future__ import annotations

import asyncio
import contextlib

from streamsync import clock
from streamsync.awsjson import is_transient
from streamsync.config import Config
from streamsync.coordinator.discovery import Discovery
from streamsync.coordinator.lease_writes import LeaseWrites
from streamsync.coordinator.readers import Readers
from streamsync.coordinator.renewer import Renewer
from streamsync.coordinator.scan import LeaseScanner
from streamsync.coordinator.shared import Source, Worker
from streamsync.coordinator.taker import Taker
from streamsync.leases.liveness import Liveness
from streamsync.leases.model import Lease
from streamsync.leases.ports import HeartbeatStore, LeaseStore
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.ports import ActionSink
from streamsync.source.poller import OnRejectedRecord
from streamsync.source.ports import StreamReader
from streamsync.supervise import spawn

__all__ = ["Coordinator", "Source"]


class Coordinator:
    def __init__(
        self,
        *,
        config: Config,
        worker_id: str,
        api: StreamReader,
        leases: LeaseStore,
        heartbeats: HeartbeatStore,
        sources: list[Source],
        sink: ActionSink,
        metrics: Metrics,
        stopping: asyncio.Event,
        on_rejected_record: OnRejectedRecord,
    ) -> None:
        self.worker_id = worker_id
        self._heartbeats = heartbeats
        self._worker = worker = Worker(
            id=worker_id,
            config=config,
            api=api,
            leases=leases,
            sources={s.stream_arn: s for s in sources},
            sink=sink,
            metrics=metrics,
            on_rejected_record=on_rejected_record,
            stopping=stopping,
            wake=asyncio.Event(),
        )
        self._readers = Readers(metrics, worker.wake)
        writes = LeaseWrites(config.leases.failover_seconds)
        liveness = Liveness(config.leases.failover_seconds)
        self._scanner = LeaseScanner(worker, heartbeats, liveness)
        self._discovery = Discovery(worker, self._scanner)
        self._renewer = Renewer(worker, heartbeats, self._readers, writes, liveness)
        self._taker = Taker(worker, self._scanner, self._discovery, self._readers, writes, liveness)

    def problems(self) -> list[str]:
        """What keeps this worker from doing its job, for readiness."""
        sources = self._worker.sources.values()
        problems = [s.failure for s in sources if s.failure is not None]
        silent = clock.monotonic() - self._renewer.heartbeat_at
        if silent > self._worker.config.leases.failover_seconds:
            problems.append(f"lease table: no successful write for {silent:.0f} s")
        return problems

    @property
    def held(self) -> list[Lease]:
        return [reader.held.lease for reader in self._readers.values()]

    def caught_up_at(self) -> dict[str, float | None]:
        """Lease key -> when its reader last caught up with its shard, everything read before
        acknowledged (`clock.monotonic`; None: not yet), for each lease this worker reads."""
        return {key: reader.held.caught_up_at() for key, reader in self._readers.items()}

    async def run(self) -> None:
        """Runs until `stopping` is set, then lets every poller drain, checkpoint and release."""
        failover = self._worker.config.leases.failover_seconds
        # Announce this worker before the first take, so workers starting together share at once.
        await retry_transient(self._renewer.heartbeat, "heartbeat", is_transient)
        renewer = spawn(self._renewer.run(failover / 3), "renewer", name="lease renewer")
        try:
            await self._taker.run()
            with contextlib.suppress(Exception):  # left behind, others delete it after a while
                await self._heartbeats.remove(self.worker_id)
            await self._readers.stop_all(self._worker.config.shutdown_grace_seconds)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # reported if it failed
                await renewer

    async def lease_new_stream(self, source: Source) -> bool:
        """Leases the shards of a stream nobody has leased yet (before an initial load); True
        when it was new. The leases start at TRIM_HORIZON: the position before the scan."""
        known = (await self._scanner.scan()).get(source.stream_arn, {})
        if known:
            return False
        await self._discovery.discover(source, known)
        return True
