"""Which leases a worker takes or gives up in a taker cycle: lease-count balancing, pure logic.

Expiry is judged by each worker's own clock, never by comparing timestamps written by other
machines: a lease (or a worker's heartbeat) whose counter did not move for a failover time, as
seen from here, belongs to a worker that stopped. Each worker aims for ceil(leases / live
workers), where live workers are those with a fresh heartbeat or a fresh lease. It takes free and
expired leases first (the longest-expired first, ties in random order so that workers scanning
at once do not all reach for the same ones). A worker holding more than its share while another
holds less gives the excess up gracefully (final checkpoint, then release), so a new worker gets
its share within a cycle or two instead of one steal per cycle. Only when nothing is free does a
worker steal, one lease per cycle, from the most-loaded worker, and only when that evens the load
out, so leases do not ping-pong; stealing covers owners that do not give leases up. Finished
leases do not count, and leases whose parents are unfinished are neither taken nor counted, since
nobody can read them yet.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from streamsync.leases.model import Lease, WorkerBeat


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
) -> set[str]:
    """The workers whose heartbeats are fresh and that read at least one of `streams`: workers
    of another deployment sharing the lease table do not count toward this one's share."""
    mine = set(streams)
    return {b.worker_id for b in beats if b.key not in stale and b.streams & mine}


@dataclass
class Plan:
    take: list[Lease] = field(default_factory=list)  # free or expired: take these
    steal: Lease | None = None  # held by a live, overloaded worker
    release: int = 0  # how many of its leases this worker should give up for others


def plan(
    leases: Iterable[Lease],
    me: str,
    expired: dict[str, float],
    ready: Callable[[Lease], bool],
    rng: random.Random | None = None,
    workers: Iterable[str] = (),
) -> Plan:
    """`workers`: the ids of workers whose heartbeats are fresh (this one counts in any case)."""
    rng = rng or random.Random()
    candidates = [
        lease
        for lease in leases
        if not lease.finished and (ready(lease) or (lease.owner is not None))
    ]
    live = [lease for lease in candidates if lease.owner is not None and lease.key not in expired]
    load = Counter(lease.owner for lease in live)
    everyone = set(load) | set(workers) | {me}
    target = math.ceil(len(candidates) / len(everyone))
    mine = load[me]
    if mine > target:  # then someone holds less: the leases fit workers * target
        return Plan(release=mine - target)
    if mine >= target:
        return Plan()
    available = [
        lease
        for lease in candidates
        if ready(lease) and (lease.owner is None or lease.key in expired)
    ]
    # Expired first, the longest expired first; then free leases; ties in random order.
    available.sort(
        key=lambda lease: (lease.owner is None, expired.get(lease.key, 0.0), rng.random())
    )
    if available:
        return Plan(take=available[: target - mine])
    busiest, busiest_load = max(
        ((worker, n) for worker, n in load.items() if worker != me),
        key=lambda pair: pair[1],
        default=(None, 0),
    )
    if busiest is None or not (
        busiest_load > target or (busiest_load == target and mine < target - 1)
    ):
        return Plan()
    victims = [lease for lease in live if lease.owner == busiest and ready(lease)]
    return Plan(steal=rng.choice(victims)) if victims else Plan()
