"""Shard discovery: leases for new shards, and deletion of finished leases nobody needs any more.

Discovery lists a stream's shards now and then; a shard reaching its end does not wait for it:
its children's leases are created at once from a CHILD_SHARDS look-up and the taker is woken, so
the children start without delay.
"""

from __future__ import annotations

import contextlib
import logging
import time

from streamsync.awsjson import is_transient
from streamsync.coordinator.lease_writes import bounded
from streamsync.coordinator.scan import LeaseScanner
from streamsync.coordinator.shared import Source, Worker
from streamsync.leases.model import LATEST, TRIM_HORIZON, Lease
from streamsync.leases.requests import LeaseLost
from streamsync.retry import retry_transient
from streamsync.source.client import Shard
from streamsync.source.shards import leases_for_new_shards

log = logging.getLogger("streamsync.coordinator")


class Discovery:
    def __init__(self, worker: Worker, scanner: LeaseScanner) -> None:
        self._worker = worker
        self._leases = worker.leases
        self._api = worker.api
        self._scanner = scanner

    async def discover(self, source: Source, known: dict[str, Lease]) -> None:
        """Lists the stream's shards, creates the missing leases and deletes the finished ones
        nobody needs; `known` (the stream's leases, by shard id) is kept up to date."""
        shards = await retry_transient(
            lambda: self._api.describe_shards(source.stream_arn),
            "DescribeStream",
            is_transient,
            table=source.config.table,
        )
        source.listed = {s.shard_id for s in shards}
        closed = sum(s.closed for s in shards)
        self._worker.metrics.shards.labels(source.config.table, "open").set(len(shards) - closed)
        self._worker.metrics.shards.labels(source.config.table, "closed").set(closed)
        for lease in await self._create_leases(source, shards, known):
            known[lease.shard_id] = lease
        await self._clean_up(source, known)

    async def shard_ended(self, source: Source, lease: Lease) -> None:
        children = await retry_transient(
            lambda: self._api.child_shards(lease.stream_arn, lease.shard_id),
            "DescribeStream (children)",
            is_transient,
            table=lease.table,
            shard=lease.shard_id,
        )
        if children:
            source.listed |= {c.shard_id for c in children}
            # The finished parent is known, so these count as later shards: TRIM_HORIZON.
            await self._create_leases(source, children, {lease.shard_id: lease})
        else:  # the look-up can lag behind the split: list the whole stream instead
            known = (await self._scanner.scan()).get(source.stream_arn, {})
            await self.discover(source, known)
        self._worker.wake.set()

    async def _create_leases(
        self, source: Source, shards: list[Shard], known: dict[str, Lease]
    ) -> list[Lease]:
        """Creates the missing leases; returns those this worker created (others may race)."""
        new = leases_for_new_shards(
            source.config.table,
            source.stream_arn,
            shards,
            known,
            source.config.start_position,
            time.time(),
            source.config.index,
        )
        created = await bounded(
            lambda lease=lease: retry_transient(  # type: ignore[misc]
                lambda: self._leases.create(lease),
                "lease creation",
                is_transient,
                table=lease.table,
            )
            for lease in new
        )
        mine = [lease for lease, was_created in zip(new, created, strict=True) if was_created]
        for lease in mine:
            log.info(
                "new shard",
                extra={"table": lease.table, "shard": lease.shard_id, "at": lease.checkpoint},
            )
        return mine

    async def _clean_up(self, source: Source, known: dict[str, Lease]) -> None:
        """Deletes finished leases whose shard left the stream, whose children started, and
        whose shard ended longer ago than the stream's retention. Deleting one earlier would
        let discovery lease its shard again and read it twice, or hold its children back."""
        horizon = time.time() - self._worker.config.leases.cleanup_after_seconds
        children: dict[str, list[Lease]] = {}
        for lease in known.values():
            for parent in lease.parent_shard_ids:
                children.setdefault(parent, []).append(lease)
        for lease in list(known.values()):
            kids = children.get(lease.shard_id, [])
            if (
                lease.finished
                and lease.finished_at is not None
                and lease.finished_at < horizon
                and lease.shard_id not in source.listed
                and kids
                and all(_started(kid) for kid in kids)
            ):
                with contextlib.suppress(LeaseLost):
                    await retry_transient(
                        lambda lease=lease: self._leases.delete(lease),  # type: ignore[misc]
                        "lease clean-up",
                        is_transient,
                        table=lease.table,
                    )
                    del known[lease.shard_id]
                    log.info(
                        "deleted a finished lease",
                        extra={"table": lease.table, "shard": lease.shard_id},
                    )


def _started(lease: Lease) -> bool:
    return (
        lease.finished
        or lease.owner is not None
        or lease.checkpoint
        not in (
            TRIM_HORIZON,
            LATEST,
        )
    )
