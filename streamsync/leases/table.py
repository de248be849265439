"""The lease table in DynamoDB: every write is conditional on what the writer last saw (fencing).

The requests, their conditions above all, are built in streamsync.leases.requests; this store
sends them and says what a refusal means: a lease write refused on its condition is `LeaseLost`,
anything else DynamoDB answers is `AwsError`. Everything goes through the raw JSON transport
(streamsync.awsjson), as GetRecords does: checkpoints of busy shards are frequent, and the rare
calls are cheaper there too. Takes, releases, finishes and the like are announced to the roster
(see streamsync.leases.heartbeats) so that the other workers scan again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamsync.awsjson import AwsError
from streamsync.errors import StreamsyncError
from streamsync.leases import heartbeats, requests
from streamsync.leases.model import Lease, WorkerBeat
from streamsync.leases.requests import KEY, LeaseLost, LeaseWrite, Request

if TYPE_CHECKING:
    from streamsync.awsjson import AwsJsonClient

log = logging.getLogger("streamsync.leases")

ANNOUNCE_EVERY_SECONDS = 1.0  # lease changes told to the roster at most this often


@dataclass(frozen=True)
class LeaseScan:
    leases: list[Lease]
    workers: list[WorkerBeat]


async def scan_items(client: AwsJsonClient, request: Request) -> AsyncIterator[dict[str, Any]]:
    """A scan answers a megabyte at most: thousands of leases take several pages."""
    page: Request | None = request
    while page is not None:
        answer = await client.call(page.target, page.payload)
        for item in answer.get("Items", []):
            yield item
        page = requests.next_page(page, answer)


class LeaseTable:
    def __init__(self, client: AwsJsonClient, name: str) -> None:
        self._client = client
        self.name = name
        self._unannounced = False  # a change the roster has not been told of yet
        self._announcing: asyncio.Task[None] | None = None

    async def exists(self) -> bool:
        try:
            await self._send(requests.describe_table(self.name))
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return False
            raise
        return True

    async def ensure_exists(self) -> None:
        """Creates the table (on-demand billing) when missing and waits until it is active."""
        if not await self.exists():
            await self._create()
        for _ in range(300):
            status = (await self._send(requests.describe_table(self.name)))["Table"]
            if status.get("TableStatus") == "ACTIVE":
                return
            await asyncio.sleep(1)
        raise StreamsyncError(f"lease table {self.name}: not ACTIVE after 5 minutes")

    async def delete_table(self) -> None:
        """Deletes the whole table (a lease table of one `streamsync reindex`, once done); a
        lease change not announced yet is dropped: nobody is left to tell."""
        self._unannounced = False
        if self._announcing is not None:
            self._announcing.cancel()
        try:
            await self._send(requests.delete_table(self.name))
        except AwsError as error:
            if error.code != "ResourceNotFoundException":
                raise

    async def _create(self) -> None:
        try:
            await self._send(requests.create_table(self.name))
        except AwsError as error:
            if error.code == "ResourceInUseException":
                return  # another worker created it first
            raise StreamsyncError(
                f"lease table {self.name}: cannot create it ({error.code}); create it yourself "
                f"(hash key '{KEY}', type S) or grant dynamodb:CreateTable"
            ) from error

    async def scan(self, consistent: bool = True) -> LeaseScan:
        """Every lease and worker heartbeat: one scan, strongly consistent unless asked."""
        scan = LeaseScan([], [])
        async for item in scan_items(self._client, requests.scan(self.name, consistent)):
            kind = item.get("kind", {}).get("S")
            if kind == heartbeats.WORKER_KIND:
                scan.workers.append(heartbeats.from_item(item))
            elif kind is None:
                scan.leases.append(requests.from_item(item))
        return scan

    async def create(self, lease: Lease) -> bool:
        """Creates the lease unless one exists for the shard; True when this call created it."""
        try:
            await self._send(requests.create(self.name, lease))
        except AwsError as error:
            if error.code == requests.CONDITION_FAILED:
                return False
            raise
        self._changed()
        return True

    async def take(self, seen: Lease, owner: str, index: str | None = None) -> Lease:
        """Takes a lease as it was seen (unowned, expired or stolen); LeaseLost if it changed.
        `index`: the index its records go to, recorded where the lease does not say yet."""
        write = requests.take(self.name, seen, owner, index, time.time())
        return await self._write(seen, write, changes=True)

    async def hold_version_floor(self, held: Lease, version: int) -> Lease:
        """Records, before records read after a loss are numbered, where their numbering
        starts, so that a later owner never numbers them lower (see Lease.version_floor)."""
        return await self._write(held, requests.hold_version_floor(self.name, held, version))

    async def renew(self, held: Lease, iterator_age: float = 0.0) -> Lease:
        write = requests.renew(self.name, held, iterator_age, time.time())
        return await self._write(held, write)

    async def checkpoint(
        self, held: Lease, checkpoint: str, version: int, iterator_age: float = 0.0
    ) -> Lease:
        write = requests.checkpoint(self.name, held, checkpoint, version, iterator_age)
        return await self._write(held, write)

    async def finish(self, held: Lease, version: int) -> Lease:
        """Marks the shard read to its end and gives the lease up, so its children may start."""
        write = requests.finish(self.name, held, version, time.time())
        return await self._write(held, write, changes=True)

    async def fail(self, held: Lease, reason: str) -> Lease:
        """Gives a lease up for good: workers do not take it while its table's policy says so."""
        return await self._write(held, requests.fail(self.name, held, reason), changes=True)

    async def release(self, held: Lease) -> Lease:
        """Gives a lease up (graceful shutdown) so another worker takes it without waiting."""
        write = requests.release(self.name, held, time.time())
        return await self._write(held, write, changes=True)

    async def delete(self, seen: Lease) -> None:
        await self._fenced(seen, requests.delete(self.name, seen.key, seen.counter))
        self._changed()

    async def _write(self, seen: Lease, write: LeaseWrite, changes: bool = False) -> Lease:
        await self._fenced(seen, write.request)
        if changes:
            self._changed()
        return write.lease

    def _changed(self) -> None:
        """Tells the other workers (through the roster) that a lease changed hands, appeared or
        ended, so that their next cycle scans. In the background and coalesced: at most one
        announcement a second (a worker taking a thousand leases at start would otherwise write
        the one roster item a thousand times). Best effort: the write it follows has landed, and
        a change left untold is found by the others' periodic full scan."""
        self._unannounced = True
        if self._announcing is None or self._announcing.done():
            self._announcing = asyncio.create_task(self._announce(), name="lease change news")

    async def _announce(self) -> None:
        while self._unannounced:
            self._unannounced = False
            try:
                await self._send(heartbeats.changed(self.name))
            except Exception as error:  # any failure here only delays the others
                log.warning(
                    "could not tell the other workers of a lease change; they see it at their "
                    "next full scan",
                    extra={"lease_table": self.name, "error": str(error)},
                )
            await asyncio.sleep(ANNOUNCE_EVERY_SECONDS)

    async def _fenced(self, seen: Lease, request: Request) -> None:
        try:
            await self._client.call(request.target, request.payload)
        except AwsError as error:
            if error.code == requests.CONDITION_FAILED:
                raise LeaseLost(seen) from None
            raise

    async def _send(self, request: Request) -> dict[str, Any]:
        return await self._client.call(request.target, request.payload)
