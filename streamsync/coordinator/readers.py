"""The readers of the leases this worker holds, one per lease and never two.

A lease chosen again while its previous reader is still ending (stuck handing a page to the
cluster after its lease expired, say) is not taken beside it, nor would a third reader start on
the shard once another worker took it too: that reader is told to go, and the lease is taken
again once it ended, its end waking the taker. An ending reader removes itself only, never a
later reader of the same lease, which would then go unrenewed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from streamsync.leases.held import HeldLease
from streamsync.leases.model import Lease
from streamsync.observability.metrics import Metrics
from streamsync.supervise import failed

log = logging.getLogger("streamsync.coordinator")


@dataclass
class Reader:
    held: HeldLease
    task: asyncio.Task[None]
    stop: asyncio.Event  # asks this reader to drain, checkpoint and release

    def stop_now(self) -> None:
        """Cancels a reader whose lease is gone (once: a second cancellation would interrupt its
        clean-up)."""
        if not self.task.done() and not self.task.cancelling():
            self.task.cancel()


class Readers(Mapping[str, Reader]):
    """Lease key -> its reader; read-only to others, so that only a reader's own end removes
    it."""

    def __init__(self, metrics: Metrics, wake: asyncio.Event) -> None:
        self._metrics = metrics
        self._wake = wake  # wakes the taker
        self._by_key: dict[str, Reader] = {}
        self._retake: set[str] = set()  # chosen while their previous reader was still ending

    def __getitem__(self, key: str) -> Reader:
        return self._by_key[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def writing(self) -> bool:
        """A write of a held lease is in flight (see LeaseWrites.failing)."""
        return any(reader.held.writing for reader in self._by_key.values())

    def may_take(self, key: str) -> bool:
        """False while a previous reader of the lease has not ended; it is told to go, and its
        end wakes the taker to take the lease again."""
        earlier = self._by_key.get(key)
        if earlier is None:
            return True
        if not earlier.held.usable and not earlier.held.closed:
            earlier.stop_now()
        self._retake.add(key)
        return False

    def register(self, reader: Reader) -> None:
        self._by_key[reader.held.lease.key] = reader
        self._metrics.leases_held.set(len(self._by_key))
        reader.task.add_done_callback(lambda task: self._ended(reader, task))

    def _ended(self, reader: Reader, task: asyncio.Task[None]) -> None:
        key = reader.held.lease.key
        if self._by_key.get(key) is reader:  # by identity: never another reader of the lease
            del self._by_key[key]
        self._metrics.leases_held.set(len(self._by_key))
        if key in self._retake:  # chosen while this reader was ending: take it now
            self._retake.discard(key)
            self._wake.set()
        if task.cancelled() or task.exception() is None:
            return
        failed(
            "shard_reader",
            task.exception(),
            recovery="its lease will be taken again",
            fields=reader.held.fields,
        )
        self._wake.set()

    def stop_taken(self, scanned: Iterable[Lease], me: str) -> None:
        """Stops the readers of leases the scan shows written by another worker since this one
        last wrote them (taken). Idle leases are not renewed one by one any more: without this a
        reader would learn it lost its lease only at its next checkpoint."""
        for lease in scanned:
            reader = self._by_key.get(lease.key)
            if reader is None or reader.held.closed or lease.owner == me:
                continue
            if lease.counter > reader.held.lease.counter:
                reader.held.lost = True
                log.warning(
                    "lease taken by another worker; the shard's reader stops",
                    extra=reader.held.fields,
                )
                reader.stop_now()

    def give_up(self, count: int, still_mine: set[str]) -> None:
        """Asks readers to hand their leases over gracefully (checkpoint, release) until `count`
        are on their way out; only leases the scan still shows as this worker's count."""
        mine = [r for key, r in self._by_key.items() if key in still_mine]
        leaving = sum(r.stop.is_set() for r in mine)
        running = [r for r in mine if not r.stop.is_set()]
        for reader in running[len(running) - max(count - leaving, 0) :]:  # the most recent
            log.info("giving a lease up to balance the load", extra=reader.held.fields)
            reader.stop.set()

    async def stop_all(self, grace: float) -> None:
        """Lets every reader drain, checkpoint and release within `grace` seconds; cancels the
        late ones."""
        for reader in self._by_key.values():
            reader.stop.set()
        pollers = [reader.task for reader in self._by_key.values()]
        if not pollers:
            return
        _, late = await asyncio.wait(pollers, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
