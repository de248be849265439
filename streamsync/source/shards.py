"""Shard lineage: which shards need leases, and which may be read yet.

DynamoDB keeps an item's changes in order only along a shard's lineage: after a split or a
rollover, later changes of an item are in a child shard. So a child is read only after all its
parents were read to their end; a parent that is gone from the stream (its records expired) and
has no lease no longer holds its children back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from streamsync.leases.model import LATEST, SHARD_END, TRIM_HORIZON, Lease
from streamsync.source.client import Shard

RETENTION_SECONDS = 24 * 3600
"""How long DynamoDB Streams keeps a record."""

_SHARD_ID = re.compile(r"shardId-(\d{20})-")


def shard_created_at(shard_id: str) -> float | None:
    """When a shard was created, from its id: DynamoDB's shard ids carry their creation time in
    milliseconds (`shardId-00000001592367572726-07776efd` was created on 2020-06-17 at
    04:19:32.726 UTC); None for ids of another form."""
    found = _SHARD_ID.match(shard_id)
    if found is None:
        return None
    seconds = int(found.group(1)) / 1000
    return seconds if 1.3e9 < seconds < 1e10 else None  # 2011 (Streams' launch) .. 2286


def records_may_be_lost(lease: Lease, now: float) -> bool:
    """Whether a never-read lease opened at TRIM_HORIZON may miss records it should have: the
    stream's retention passed the moment from which its records are wanted (the shard's
    creation for a shard found later, the lease's creation for one found with the stream)
    before anyone read it. A TRIM_HORIZON iterator never says so by itself."""
    since = max(lease.wanted_since or now, lease.start_after or 0.0)
    return since < now - RETENTION_SECONDS


def leases_for_new_shards(
    table: str,
    stream_arn: str,
    shards: Iterable[Shard],
    existing: Mapping[str, Lease],
    start_position: str,
    now: float,
    index: str | None = None,
) -> list[Lease]:
    """Leases for the shards that have none, parents first.

    `start_position` applies only the first time a stream is seen (no leases yet): with LATEST,
    open shards start after `now` (recorded in the lease, so that no later reader, hand-off or
    expired iterator moves the start) and closed ones count as read; with TRIM_HORIZON, what the
    stream holds is read, and records created since `now` must not be lost. Shards that appear
    later (splits, rollovers) always start at TRIM_HORIZON, since their parents were read to
    their end, and every record since their creation must be read. `index`: where the records go.
    """
    first_sight = not existing
    created: list[Lease] = []
    for shard in _parents_first(shards):
        if shard.shard_id in existing:
            continue
        checkpoint, start_after = TRIM_HORIZON, None
        wanted_since = now if first_sight else (shard_created_at(shard.shard_id) or now)
        if first_sight and start_position == LATEST:
            checkpoint = SHARD_END if shard.closed else TRIM_HORIZON
            start_after = now
        parents = (shard.parent_id,) if shard.parent_id else ()
        created.append(
            Lease(
                stream_arn,
                shard.shard_id,
                table,
                parents,
                checkpoint=checkpoint,
                start_after=start_after,
                wanted_since=wanted_since,
                index=index,
            )
        )
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
    """The version clock a shard's reader starts from: its checkpoint's, or its parents' last,
    and never below the floor written after a loss."""
    if lease.checkpoint_version:
        return max(lease.checkpoint_version, lease.version_floor)
    parents = [by_shard[p].checkpoint_version for p in lease.parent_shard_ids if p in by_shard]
    return max(*parents, lease.version_floor, 0)
