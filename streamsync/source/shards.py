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
    for shard in _parents_first(shards):
        if shard.shard_id in existing:
            continue
        checkpoint = TRIM_HORIZON
        if first_sight and start_position == LATEST:
            checkpoint = SHARD_END if shard.closed else LATEST
        parents = (shard.parent_id,) if shard.parent_id else ()
        created.append(Lease(stream_arn, shard.shard_id, table, parents, checkpoint=checkpoint))
    return created


def _parents_first(shards: Iterable[Shard]) -> list[Shard]:
    """The shards ordered so that each comes after its parent, whatever order they were listed
    in: a child's lease must never exist before its parent's, or a worker that has not seen the
    parent yet could take the child as a root."""
    by_id = {shard.shard_id: shard for shard in shards}
    ordered: list[Shard] = []
    placed: set[str] = set()

    def place(shard: Shard) -> None:
        chain = []
        while shard.shard_id not in placed:
            chain.append(shard)
            placed.add(shard.shard_id)
            parent = by_id.get(shard.parent_id or "")
            if parent is None:
                break
            shard = parent
        ordered.extend(reversed(chain))

    for shard in by_id.values():
        place(shard)
    return ordered


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
