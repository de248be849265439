"""The lease store and heartbeat store the coordinator and the shard readers write through.

Every write is fenced: it states the lease as the writer last saw it and raises `LeaseLost` when
the stored lease moved on (another worker took it, or a write of this worker landed unseen).
`LeaseTable`/`Heartbeats` keep them in DynamoDB; `streamsync.testing.InMemoryLeases` keeps them
in memory with the same conditions, for tests without a network.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from streamsync.leases.heartbeats import Glance
from streamsync.leases.model import Lease, WorkerBeat
from streamsync.leases.table import LeaseScan


class LeaseStore(Protocol):
    name: str

    async def scan(self, consistent: bool = True) -> LeaseScan:
        """Every lease and heartbeat (strongly consistent unless asked). Creates, takes,
        releases, finishes, fails and deletes are told to the roster (see Glance)."""
        ...

    async def create(self, lease: Lease) -> bool:
        """False when the shard has a lease already (workers discovering it together race)."""
        ...

    async def take(self, seen: Lease, owner: str, index: str | None = None) -> Lease: ...

    async def renew(self, held: Lease, iterator_age: float = 0.0) -> Lease: ...

    async def checkpoint(
        self, held: Lease, checkpoint: str, version: int, iterator_age: float = 0.0
    ) -> Lease: ...

    async def hold_version_floor(self, held: Lease, version: int) -> Lease: ...

    async def finish(self, held: Lease, version: int) -> Lease: ...

    async def fail(self, held: Lease, reason: str) -> Lease: ...

    async def release(self, held: Lease) -> Lease: ...

    async def delete(self, seen: Lease) -> None: ...


class HeartbeatStore(Protocol):
    async def beat(self, worker_id: str, streams: Iterable[str]) -> None:
        """Bumps this worker's heartbeat counter and says which streams it reads; joins the
        roster when the heartbeat is new."""
        ...

    async def remove(self, worker_id: str) -> None:
        """This worker is leaving (or reads nothing): the others stop counting it at once."""
        ...

    async def delete(self, seen: WorkerBeat) -> None:
        """Deletes another worker's heartbeat, unless it beat again since it was seen."""
        ...

    async def glance(self, worker_ids: Iterable[str]) -> Glance:
        """The roster and these workers' heartbeats, strongly consistent (the ones missing:
        deleted)."""
        ...
