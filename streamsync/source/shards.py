"""Shard lineage: which shards need leases, and which may be read yet.

DynamoDB keeps an item's changes in order only along a shard's lineage: after a split or a
rollover, later changes of an item are in a child shard. So a child is read only after all its
parents were read to their end; a parent that is gone from the stream (its records expired) and
has no lease no longer holds its children back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from streamsync.leases.model import LATEST, SHARD_END, TRIM_HORIZON, Lease
from streamsync.source.client import Shard


def leases_for_new_shards(
    table: str,
    stream_arn: str,
    shards: Iterable[Shard],
    existing: Mapping[str, Lease],
    start_position: str,
) -> list[Lease]:
    """Leases for the shards that have none, parents first.

    `start_position` applies only the first time a stream is seen (no leases yet): with LATEST,
    open shards start at the tip and closed ones count as read. Shards that appear later (splits,
    rollovers) always start at TRIM_HORIZON, since their parents were read to their end.
    """
    first_sight = not existing
    created: list[Lease] = []
    for shard in shards:
        if shard.shard_id in existing:
            continue
        checkpoint = TRIM_HORIZON
        if first_sight and start_position == LATEST:
            checkpoint = SHARD_END if shard.closed else LATEST
        parents = (shard.parent_id,) if shard.parent_id else ()
        created.append(Lease(stream_arn, shard.shard_id, table, parents, checkpoint=checkpoint))
    return created


def ready_to_read(lease: Lease, by_shard: Mapping[str, Lease], listed: set[str]) -> bool:
    if lease.finished:
        return False
    for parent in lease.parent_shard_ids:
        parent_lease = by_shard.get(parent)
        if parent_lease is None:
            if parent in listed:
                return False  # its lease is not created yet
            continue  # gone from the stream and never leased here: nothing to wait for
        if not parent_lease.finished:
            return False
    return True


def starting_version(lease: Lease, by_shard: Mapping[str, Lease]) -> int:
    """The version clock a shard's reader starts from: its checkpoint's, or its parents' last."""
    if lease.checkpoint_version:
        return lease.checkpoint_version
    parents = [by_shard[p].checkpoint_version for p in lease.parent_shard_ids if p in by_shard]
    return max(parents, default=0)
