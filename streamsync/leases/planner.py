"""Which leases a worker takes or gives up in a taker cycle: lease-count balancing, pure logic.

Expiry is judged by each worker's own clock, never by comparing timestamps written by other
machines: a lease (or a worker's heartbeat) whose counter did not move for a failover time, as
seen from here, belongs to a worker that stopped.

Balancing is done per group of streams that the same workers read. Deployments can share one
lease table, and the workers sharing it need not read the same streams: another deployment reads
other tables, perhaps some of the same, and a worker whose table stopped no longer reads that
table's stream. A share computed over all of a worker's leases and every worker reading any of
its streams counts workers that can never take some of those leases, so the workers that can
stop at a share too small and leave the rest unowned for good. So a worker groups the leases of
the streams it reads by who reads them (the workers whose fresh heartbeats list the stream, and
itself); within a group every worker can take every lease, and each aims for ceil(leases of the
group / workers of the group), those workers being its readers plus the owners of its live
leases. These targets add up to at least the group's leases, so while a lease of the group is
free, some worker of the group is below target (one above target gives its excess up), and a
reader below target takes it in its next cycle. Streams with the same readers form one group, so
the workers of one deployment balance the sum of their tables' leases, not each table apart
(with tables of a shard or two, a new replica would otherwise get nothing). Between groups there
is no balancing: a worker's load is the sum of its groups' shares (a worker cannot tell how
loaded another deployment's workers are, it does not see the leases of their other streams).

Within a group the worker takes free and expired leases first (the longest-expired first, ties in
random order so that workers scanning at once do not all reach for the same ones). A worker
holding more than its share while another holds less gives the excess up gracefully (final
checkpoint, then release), so a new worker gets its share within a cycle or two instead of one
steal per cycle. Only when nothing in a group is free does a worker steal there, one lease per
cycle in all (in the group where it is furthest below target), from the group's most-loaded
worker, and only when that evens the load out, so leases do not ping-pong; stealing covers owners
that do not give leases up. Finished leases do not count, and leases whose parents are unfinished
are neither taken nor counted, since nobody can read them yet.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from streamsync.leases.model import LIVENESS_BY_HEARTBEAT, Lease, WorkerBeat


class Observed(Protocol):
    """A lease or a worker heartbeat: something whose counter moves while its owner lives."""

    @property
    def key(self) -> str: ...

    @property
    def counter(self) -> int: ...

    @property
    def owner(self) -> str | None: ...


class ExpiryClock:
    """Remembers when each lease's (or heartbeat's) counter last changed, by this worker's
    clock."""

    def __init__(self, failover_seconds: float) -> None:
        self._failover = failover_seconds
        self._seen: dict[str, tuple[int, float]] = {}

    def expired(self, leases: Iterable[Observed], now: float) -> dict[str, float]:
        """The owned leases that have been still for a failover time: key -> since when."""
        still: dict[str, float] = {}
        seen: dict[str, tuple[int, float]] = {}
        for lease in leases:
            counter, since = self._seen.get(lease.key, (lease.counter, now))
            if counter != lease.counter:
                since = now
            seen[lease.key] = (lease.counter, since)
            if lease.owner is not None and now - since > self._failover:
                still[lease.key] = since
        self._seen = seen
        return still


def live_workers(
    beats: Iterable[WorkerBeat], stale: dict[str, float], streams: Iterable[str]
) -> dict[str, set[str]]:
    """For each of `streams`, the workers whose heartbeats are fresh and list it: a worker counts
    only toward the streams it reads (a worker of another deployment sharing the lease table, or
    one whose table stopped, cannot take the leases of the others)."""
    readers: dict[str, set[str]] = {stream: set() for stream in streams}
    for beat in beats:
        if beat.key not in stale:
            for stream in beat.streams:
                if stream in readers:
                    readers[stream].add(beat.worker_id)
    return readers


def lease_expiry(
    leases: Iterable[Lease],
    by_counter: dict[str, float],
    beats: Iterable[WorkerBeat],
    stale_beats: dict[str, float],
) -> dict[str, float]:
    """The owned leases another worker may take: key -> since when. A lease whose owner proves
    it alive by heartbeat (protocol 2) and lists the lease's stream there lives while that
    heartbeat moves: it expires once the heartbeat stood still for a failover time. Any other
    lease (an owner of an older version, one that left, or one that no longer reads the stream)
    lives by its own counter, as `by_counter` (an ExpiryClock over the leases) says. While a
    worker of an older version reads (see Liveness.by_counter), pass no beats: every lease is
    judged by its counter, as that worker judges them."""
    by_worker = {beat.worker_id: beat for beat in beats}
    expired: dict[str, float] = {}
    for lease in leases:
        if lease.owner is None:
            continue
        beat = by_worker.get(lease.owner)
        if (
            beat is not None
            and beat.protocol >= LIVENESS_BY_HEARTBEAT
            and lease.stream_arn in beat.streams
        ):
            if beat.key in stale_beats:
                expired[lease.key] = stale_beats[beat.key]
        elif lease.key in by_counter:
            expired[lease.key] = by_counter[lease.key]
    return expired


def older_worker_reads(beats: Iterable[WorkerBeat], stale_beats: dict[str, float], me: str) -> bool:
    """A live worker of an older version (during a rolling upgrade) judges every lease by its
    own counter: it would take an idle lease as expired unless it is renewed one by one."""
    return any(
        beat.protocol < LIVENESS_BY_HEARTBEAT
        for beat in beats
        if beat.key not in stale_beats and beat.worker_id != me
    )


@dataclass
class Plan:
    take: list[Lease] = field(default_factory=list)  # free or expired: take these
    steal: Lease | None = None  # held by a live, overloaded worker
    release: int = 0  # how many of its leases this worker should give up for others, in all
    # Where from: the streams of a group -> how many of its leases of those streams to give up.
    release_from: dict[frozenset[str], int] = field(default_factory=dict)
    releases_expected: bool = False
    """This worker is below its share where another is above it: that one gives leases up at
    its next cycle, and this one should look again soon rather than a whole cycle later."""


def plan(
    leases: Iterable[Lease],
    me: str,
    expired: dict[str, float],
    ready: Callable[[Lease], bool],
    rng: random.Random | None = None,
    workers: Iterable[str] | Mapping[str, Iterable[str]] = (),
) -> Plan:
    """`workers`: the workers whose heartbeats are fresh, per stream ARN those that read it (as
    `live_workers` gives them), or just ids, of workers that read every stream of `leases`. This
    worker reads every stream of `leases` (pass only the leases of the streams it reads)."""
    cycle = _Cycle(me, expired, ready, rng or random.Random())
    for readers, candidates in _groups(leases, me, ready, workers).items():
        cycle.balance(readers, candidates)
    return cycle.decided()


def _groups(
    leases: Iterable[Lease],
    me: str,
    ready: Callable[[Lease], bool],
    workers: Iterable[str] | Mapping[str, Iterable[str]],
) -> dict[frozenset[str], list[Lease]]:
    """The leases to balance, grouped by the workers that read their streams."""
    if isinstance(workers, Mapping):
        announced = {stream: frozenset(ids) | {me} for stream, ids in workers.items()}
        everywhere = frozenset({me})
    else:
        announced = {}
        everywhere = frozenset(workers) | {me}
    groups: dict[frozenset[str], list[Lease]] = {}
    for lease in leases:
        if not lease.finished and (lease.owner is not None or ready(lease)):
            readers = announced.get(lease.stream_arn, everywhere)
            groups.setdefault(readers, []).append(lease)
    return groups


@dataclass
class _Cycle:
    """One planning cycle: each group of leases is balanced in turn, then the takes are ordered
    and at most one steal is chosen over all groups."""

    me: str
    expired: dict[str, float]
    ready: Callable[[Lease], bool]
    rng: random.Random
    plan: Plan = field(default_factory=Plan)
    chosen: list[tuple[tuple[bool, float, float], Lease]] = field(default_factory=list)
    steals: list[tuple[int, list[Lease]]] = field(default_factory=list)
    """(how far below target, the victim's leases)"""

    def balance(self, readers: frozenset[str], candidates: list[Lease]) -> None:
        me, expired, ready = self.me, self.expired, self.ready
        live = [
            lease for lease in candidates if lease.owner is not None and lease.key not in expired
        ]
        load = Counter(lease.owner for lease in live)
        target = math.ceil(len(candidates) / len(set(load) | readers))
        mine = load[me]
        if mine > target:  # then someone holds less: the group's leases fit workers * target
            streams = frozenset(lease.stream_arn for lease in candidates)
            self.plan.release_from[streams] = mine - target
            self.plan.release += mine - target
            return
        if mine >= target:
            return
        if any(n > target for worker, n in load.items() if worker != me):
            self.plan.releases_expected = True
        # Expired first, the longest expired first; then free leases; ties in random order.
        available = [
            ((lease.owner is None, expired.get(lease.key, 0.0), self.rng.random()), lease)
            for lease in candidates
            if ready(lease) and (lease.owner is None or lease.key in expired)
        ]
        if available:
            available.sort(key=lambda pair: pair[0])
            self.chosen += available[: target - mine]
            return
        busiest, busiest_load = max(
            ((worker, n) for worker, n in load.items() if worker != me),
            key=lambda pair: pair[1],
            default=(None, 0),
        )
        if busiest is None or not (
            busiest_load > target or (busiest_load == target and mine < target - 1)
        ):
            return
        victims = [lease for lease in live if lease.owner == busiest and ready(lease)]
        if victims:
            self.steals.append((target - mine, victims))

    def decided(self) -> Plan:
        self.chosen.sort(key=lambda pair: pair[0])
        self.plan.take = [lease for _, lease in self.chosen]
        if self.steals:  # one per cycle: where this worker is furthest below target
            furthest = max(short for short, _ in self.steals)
            tied = [victims for short, victims in self.steals if short == furthest]
            self.plan.steal = self.rng.choice(tied[0] if len(tied) == 1 else self.rng.choice(tied))
        return self.plan
