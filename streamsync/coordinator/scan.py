"""The scan of the lease table: the only read of every lease, once per taker cycle.

The same scan reads the workers' heartbeats, so it is also where this worker learns which
workers are alive (their counters moving, by this worker's clock), deletes the heartbeats of
workers killed long ago, and stops a table whose leases fed another index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from streamsync.awsjson import is_transient
from streamsync.coordinator.shared import Source, Worker
from streamsync.leases.liveness import Liveness
from streamsync.leases.model import Lease, WorkerBeat, other_target, target_changed
from streamsync.leases.planner import ExpiryClock, live_workers, older_worker_reads
from streamsync.leases.ports import HeartbeatStore
from streamsync.retry import retry_transient

log = logging.getLogger("streamsync.coordinator")

Snapshot = dict[str, dict[str, Lease]]  # stream ARN -> shard id -> lease


class LeaseScanner:
    def __init__(self, worker: Worker, heartbeats: HeartbeatStore, liveness: Liveness) -> None:
        self._config = worker.config
        self._leases = worker.leases
        self._sources = worker.sources
        self._heartbeats = heartbeats
        self._worker_expiry = ExpiryClock(worker.config.leases.failover_seconds)
        self.live_workers: dict[str, set[str]] = {}  # stream ARN -> the live workers reading it
        self.beats: list[WorkerBeat] = []  # as the last scan read them
        self.stale_beats: dict[str, float] = {}  # of those, still for a failover time: since when
        self._liveness = liveness
        self._older_seen_at = -float("inf")  # loop time a scan last showed an older worker
        self._me = worker.id

    async def scan(self) -> Snapshot:
        scan = await retry_transient(self._leases.scan, "lease scan", is_transient)
        snapshot: Snapshot = {}
        for lease in scan.leases:
            if lease.stream_arn in self._sources:  # tables this worker is configured for
                snapshot.setdefault(lease.stream_arn, {})[lease.shard_id] = lease
        for arn, by_shard in snapshot.items():
            self._refuse_other_target(self._sources[arn], by_shard.values())
        now = asyncio.get_running_loop().time()
        stale = self._worker_expiry.expired(scan.workers, now)
        self.live_workers = live_workers(scan.workers, stale, self._sources)
        self.beats, self.stale_beats = scan.workers, stale
        older = older_worker_reads(scan.workers, stale, self._me)
        if older:
            self._older_seen_at = now
        self._liveness.by_counter = older
        failover = self._config.leases.failover_seconds
        self._liveness.renewals = now - self._older_seen_at < failover
        for beat in scan.workers:
            # A worker gone for a while (killed: it could not delete its own heartbeat).
            if (
                beat.key in stale
                and beat.worker_id != self._me  # its own beats may only be held up
                and now - stale[beat.key] > 3 * self._config.leases.failover_seconds
            ):
                with contextlib.suppress(Exception):
                    await self._heartbeats.delete(beat)
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
