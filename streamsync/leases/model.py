"""Lease records: one per stream shard, as the KCL keeps them, so operators find familiar fields.

A lease's `counter` is a fencing token: every write to a lease is conditional on the counter (and
owner) the writer last saw and bumps it, so a worker that lost a lease can never write to it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
SHARD_END = "SHARD_END"


def lease_key(stream_arn: str, shard_id: str) -> str:
    # Shard ids are only unique within a stream, and several tables share one lease table.
    return f"{stream_arn}|{shard_id}"


@dataclass(frozen=True)
class Lease:
    stream_arn: str
    shard_id: str
    table: str
    parent_shard_ids: tuple[str, ...] = ()
    owner: str | None = None
    counter: int = 0
    checkpoint: str = TRIM_HORIZON  # a sequence number, TRIM_HORIZON, LATEST or SHARD_END
    checkpoint_version: int = 0  # the document-version clock after the checkpointed record
    owner_switches: int = 0
    renewed_at: float | None = field(default=None, compare=False)  # informational only
    iterator_age: float | None = field(default=None, compare=False)  # at the last write
    finished_at: float | None = None  # epoch seconds the shard was read to its end
    failure: str | None = None  # why reading stopped for good (records lost), until retaken
    start_after: float | None = None
    """A LATEST start, made durable: records created before this (epoch seconds) are skipped,
    whoever reads the shard and however often its iterator is opened."""
    wanted_since: float | None = None
    """Records created since then (epoch seconds) must not be lost: when the stream's retention
    has passed it before the shard was ever read, records may have been trimmed unread."""
    index: str | None = None
    """The index this lease's records went to: another target reading on from its checkpoint
    would silently miss what came before, so streamsync refuses that (None: written by a
    version that did not record it)."""
    version_floor: int = 0
    """The version clock never restarts below this: written before records read after a loss
    are numbered, so a later owner numbers them no lower."""

    @property
    def key(self) -> str:
        return lease_key(self.stream_arn, self.shard_id)

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END


def other_target(leases: Iterable[Lease], index: str) -> str | None:
    """An index other than `index` that these leases' records went to, if any."""
    return next((lease.index for lease in leases if lease.index not in (None, index)), None)


def target_changed(table: str, position: int, lease_table: str, index: str, other: str) -> str:
    """The one line that refuses to read a stream on from checkpoints made for another index."""
    return (
        f"table {table}: its leases in {lease_table} feed the index {other!r}, not {index!r}; "
        f"reading on from their checkpoints, {index!r} would miss everything {other!r} holds. "
        f"To fill {index!r} completely, give this configuration its own lease table "
        f"(leases.table) and set tables[{position}].initial_load: scan (it backfills, then "
        f"streams); to go on feeding {other!r}, set tables[{position}].index back to it"
    )


@dataclass(frozen=True)
class WorkerBeat:
    """A worker's heartbeat item in the lease table: it tells the others a worker is alive even
    while it holds no lease, so they can make room for it at once instead of waiting for it to
    steal one lease per cycle."""

    worker_id: str
    counter: int
    streams: frozenset[str] = frozenset()  # the streams it reads: deployments can share a table
    renewed_at: float | None = field(default=None, compare=False)
    protocol: int = 1
    """1: its leases live by their own renewals; 2 (LIVENESS_BY_HEARTBEAT): they live while
    this heartbeat moves and lists their stream, and are written only when they change."""

    @property
    def key(self) -> str:
        return worker_key(self.worker_id)

    @property
    def owner(self) -> str:
        return self.worker_id


LIVENESS_BY_HEARTBEAT = 2


def worker_key(worker_id: str) -> str:
    return f"worker|{worker_id}"


@dataclass(frozen=True)
class Position:
    """A checkpointable position: a record's sequence number and the version clock after it."""

    sequence_number: int
    version: int
