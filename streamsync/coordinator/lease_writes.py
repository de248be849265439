"""How this worker's lease writes (takes, checkpoints, renewals) fare, shared by the taker, the
held leases and the renewer.

A worker whose every lease write stalls or is refused cannot hold leases: it must stop announcing
itself, or the others leave it a share of the shards that it only lets expire. Every flow that
writes leases reports here when a write is answered (a held lease through its `on_answered`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

from streamsync import clock

T = TypeVar("T")
LEASE_WRITES_AT_ONCE = 20  # concurrent renewals or takes, as the KCL's renewer threads
# Each renewal's deadline, as a share of the renewal interval: a renewal stuck on a black-holed
# connection (a request may take 30 s) frees its place for the others well before the next round.
RENEWAL_DEADLINE_SHARE = 0.5


async def bounded(calls: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Runs calls concurrently, at most LEASE_WRITES_AT_ONCE at a time."""
    gate = asyncio.Semaphore(LEASE_WRITES_AT_ONCE)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


class LeaseWrites:
    def __init__(self, failover_seconds: float) -> None:
        self._failover = failover_seconds
        # When a write was last answered within its deadline, when one last started or ended,
        # and how many takes are in flight.
        self._answered_at = clock.monotonic()
        self._tried_at = 0.0
        self._takes_in_flight = 0

    def tried(self) -> None:
        """Notes a lease write starting (its answer comes through `answered`)."""
        self._tried_at = clock.monotonic()

    @contextlib.contextmanager
    def taking(self) -> Iterator[None]:
        """Counts a take in flight while the block runs (with its retries)."""
        self._takes_in_flight += 1
        try:
            yield
        finally:
            self._takes_in_flight -= 1
            self._tried_at = clock.monotonic()

    def answered(self, sent: float) -> None:
        """Notes a lease write answered (done, or refused on its condition): in time if within
        the renewal deadline of when it was sent."""
        now = clock.monotonic()
        deadline = self._failover / 3 * RENEWAL_DEADLINE_SHARE
        if now - sent <= deadline:
            self._answered_at = now

    def failing(self, renewing: bool) -> bool:
        """True when this worker is writing leases (`renewing`, or taking) and none of its lease
        writes was answered in time for half a failover time (all stalled or refused): it
        cannot hold leases for now. A heartbeat sent beside its renewals, not after them, would
        otherwise keep announcing a worker that only lets its leases expire."""
        now = clock.monotonic()
        trying = self._takes_in_flight > 0 or now - self._tried_at < self._failover or renewing
        return trying and now - self._answered_at > self._failover / 2
