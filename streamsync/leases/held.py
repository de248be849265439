"""A lease this worker holds: its writes are serialized, and once lost it never writes again.

Renewals and checkpoints of one lease both bump its counter, so two of them in flight at once
would fence each other out; a lock orders them. A lease counts as lost when a conditional write
fails (someone else took it), or when nothing kept it alive for a whole failover time (neither
its own writes nor, see Liveness, this worker's heartbeat), since from then on another worker may
take it: its reader must stop at once either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from streamsync import clock
from streamsync.awsjson import is_transient
from streamsync.leases.liveness import Liveness
from streamsync.leases.model import Lease, Position
from streamsync.leases.ports import LeaseStore
from streamsync.leases.requests import LeaseLost
from streamsync.retry import retry_transient

log = logging.getLogger("streamsync.leases")


class HeldLease:
    def __init__(
        self,
        table: LeaseStore,
        lease: Lease,
        failover_seconds: float,
        liveness: Liveness | None = None,
        on_answered: Callable[[float], None] | None = None,
    ) -> None:
        self._table = table
        self.lease = lease
        self._failover = failover_seconds
        self._liveness = liveness  # None: the lease lives by its own writes alone
        # Told when each write sent then was answered (done, or refused on its condition): how
        # the worker tells lease writes that stall from a table that answers.
        self._on_answered = on_answered or (lambda sent: None)
        self._lock = asyncio.Lock()
        self._writes: set[asyncio.Task[bool]] = set()  # referenced until done (see _write)
        self.lost = False
        # A last write (finish, fail, release) was asked for: nothing else is ever written, even
        # while that write is in flight or after its caller was cancelled.
        self.closed = False
        self._last_written = False  # the last write ran: whatever was queued behind it is refused
        self.renewed_at = clock.monotonic()
        self.iterator_age: Callable[[], float] = lambda: 0.0  # set by the shard's reader
        # also set by the reader: see ShardState.caught_up_at
        self.caught_up_at: Callable[[], float | None] = lambda: None

    @property
    def fields(self) -> dict[str, object]:
        return {"table": self.lease.table, "shard": self.lease.shard_id}

    def expired_locally(self) -> bool:
        """True once the lease went a failover time without a write that keeps it alive (its
        own, or this worker's heartbeat: see Liveness): another worker may have taken it by
        now."""
        alive_since = self.renewed_at
        if self._liveness is not None:
            alive_since = self._liveness.alive_since(self.lease.stream_arn, self.renewed_at)
        return clock.monotonic() - alive_since > self._failover

    @property
    def usable(self) -> bool:
        return not self.lost and not self.expired_locally()

    @property
    def writing(self) -> bool:
        """A write is in flight or waiting for the lock (landing, it renews the lease too)."""
        return bool(self._writes)

    async def _write(
        self, what: str, write: Callable[[Lease], Awaitable[Lease]], last: bool = False
    ) -> bool:
        """A sent write cannot be called back. Were it cancelled in flight (its poller stopping,
        a grace period ending), it could land without this worker learning the counter it set,
        and the next write (the release, above all) would be fenced out by this worker's own:
        the lease would sit unread for a failover time. So each write runs to its end in a task
        of its own, holding the lock, even when the caller stops waiting for it.

        Nothing is written once a last write was asked for, and a lease already lost or
        unrenewed for a failover time refuses at once (instead of queueing behind a write that
        may hang for a whole request timeout)."""
        if self.closed and not last:
            return False
        if self.lost or self.expired_locally():
            return False
        task = asyncio.create_task(self._locked_write(what, write, last))
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        return await asyncio.shield(task)

    def _write_done(self, task: asyncio.Task[bool]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()  # seen here too, in case the caller stopped waiting for it

    async def _locked_write(
        self, what: str, write: Callable[[Lease], Awaitable[Lease]], last: bool
    ) -> bool:
        async with self._lock:
            if self._last_written:
                return False
            if last:
                self._last_written = True
            if self.lost or self.expired_locally():
                self.lost = True
                return False

            started = clock.monotonic()

            async def attempt() -> Lease:
                nonlocal started
                if self.expired_locally():
                    raise LeaseLost(self.lease)
                started = clock.monotonic()
                return await write(self.lease)

            try:
                self.lease = await retry_transient(attempt, what, is_transient, **self.fields)
            except LeaseLost:
                self._on_answered(started)
                self.lost = True
                log.warning("lease lost; the shard's reader stops", extra=self.fields)
                return False
            self._on_answered(started)
            # The write may have landed any time after it was sent: count from then.
            self.renewed_at = started
            return True

    async def _last_write(self, what: str, write: Callable[[Lease], Awaitable[Lease]]) -> bool:
        """A write after which the lease is no longer this worker's to write. The lease closes
        the moment it is asked for, not once it is done: a poller cancelled while its shard's
        end is being written would otherwise checkpoint (and release) after it, replacing
        SHARD_END, and the shard would be read again."""
        if self.closed:
            return False
        self.closed = True
        return await self._write(what, write, last=True)

    async def renew(self) -> bool:
        return await self._write(
            "lease renewal", lambda held: self._table.renew(held, self.iterator_age())
        )

    async def checkpoint(self, position: Position) -> bool:
        return await self._write(
            "checkpoint",
            lambda held: self._table.checkpoint(
                held, str(position.sequence_number), position.version, self.iterator_age()
            ),
        )

    async def hold_version_floor(self, version: int) -> bool:
        return await self._write(
            "version floor", lambda held: self._table.hold_version_floor(held, version)
        )

    async def finish(self, version: int) -> bool:
        return await self._last_write("shard end", lambda held: self._table.finish(held, version))

    async def fail(self, reason: str) -> bool:
        return await self._last_write(
            "marking the lease failed", lambda held: self._table.fail(held, reason)
        )

    async def release(self) -> bool:
        return await self._last_write("lease release", self._table.release)
