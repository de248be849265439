"""The taker's view of the lease table: every lease, and which workers are alive.

A full scan reads every lease and heartbeat; a glance only the roster and the heartbeats of the
workers this one knows of (see streamsync.leases.heartbeats). Each cycle judges which workers
are alive (their heartbeat counters moving, by this worker's clock), deletes the heartbeats of
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

# A change to the lease table nobody told the roster of (its bump failed) is found within this
# many failover times: the periodic full scan, eventually consistent since it looks only for that.
FULL_SCAN_FAILOVERS = 6


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
        self._leases_seen: list[Lease] | None = None  # as the last full scan read them
        self._known: frozenset[str] = frozenset()  # the workers whose heartbeats glances read
        self._members: frozenset[str] = frozenset()  # the roster's, as last glanced
        self._changes: int | None = None  # the roster's count of changes, as last glanced
        self._full_scan_due = 0.0  # loop time

    async def scan(self) -> Snapshot:
        """Every lease and heartbeat, strongly consistent."""
        scan = await retry_transient(self._leases.scan, "lease scan", is_transient)
        return await self._judge(scan.leases, scan.workers, full=True)

    async def cycle(self, full: bool = False) -> Snapshot:
        """A taker cycle's view, as cheap as it can be made. While a worker of an older version
        may read beside (Liveness.renewals), a full scan each cycle, as that worker expects;
        otherwise a glance, and a full scan only when asked (`full`: woken by a change this
        worker saw), when the roster counted a change or a new member since the last glance (any
        worker's take, release, finish, create, delete, join, leave, including this worker's
        own), or when the periodic one is due. Between full scans the leases are as the last
        one read them: only counted changes move them for planning (checkpoints do not), and a
        take planned from an older view is refused by its fence."""
        if full or self._liveness.renewals or self._leases_seen is None:
            return await self.scan()
        glance = await retry_transient(
            lambda: self._heartbeats.glance(self._known), "roster glance", is_transient
        )
        moved = glance.changes != self._changes or not glance.members <= self._known
        self._changes, self._members = glance.changes, glance.members
        if moved:
            return await self.scan()
        if asyncio.get_running_loop().time() < self._full_scan_due:
            return await self._judge(self._leases_seen, glance.beats, full=False)
        scan = await retry_transient(
            lambda: self._leases.scan(consistent=False), "lease scan", is_transient
        )
        # Judged by the glance's heartbeats (a heartbeat read behind would look dead); a worker
        # the scan shows that no glance asked for yet (an older version's) counts from now.
        unknown = [beat for beat in scan.workers if beat.worker_id not in self._known]
        return await self._judge(scan.leases, [*glance.beats, *unknown], full=True)

    async def _judge(self, leases: list[Lease], beats: list[WorkerBeat], full: bool) -> Snapshot:
        now = asyncio.get_running_loop().time()
        if full:
            failover = self._config.leases.failover_seconds
            self._leases_seen, self._full_scan_due = leases, now + FULL_SCAN_FAILOVERS * failover
        # Glanced at next: every worker seen, and every lease owner (a lease whose owner's
        # heartbeat goes unread would be judged by its counter, which idle leases never move).
        owners = {lease.owner for lease in leases if lease.owner is not None}
        self._known = self._members | owners | {beat.worker_id for beat in beats}
        snapshot: Snapshot = {}
        for lease in leases:
            if lease.stream_arn in self._sources:  # tables this worker is configured for
                snapshot.setdefault(lease.stream_arn, {})[lease.shard_id] = lease
        for arn, by_shard in snapshot.items():
            self._refuse_other_target(self._sources[arn], by_shard.values())
        stale = self._worker_expiry.expired(beats, now)
        self.live_workers = live_workers(beats, stale, self._sources)
        self.beats, self.stale_beats = beats, stale
        older = older_worker_reads(beats, stale, self._me)
        if older:
            if not self._liveness.renewals:
                log.error(
                    "a worker of an older version reads this lease table beside workers that "
                    "no longer renew idle leases; stop it (to go back to an older version, stop "
                    "every worker first: see the README's Upgrades)",
                    extra={"lease_table": self._leases.name},
                )
            self._older_seen_at = now
        self._liveness.by_counter = older
        failover = self._config.leases.failover_seconds
        self._liveness.renewals = now - self._older_seen_at < failover
        for beat in beats:
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
