"""`streamsync status`: the lease table as an operator wants to see it, per table and shard."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from streamsync.leases.model import LIVENESS_BY_HEARTBEAT, Lease, WorkerBeat
from streamsync.source.shards import ready_to_read
from streamsync.terminal import aligned

COLUMNS = ("table", "shard", "parent", "owner", "state", "checkpoint", "alive", "lag")


def lease_state(lease: Lease, by_shard: dict[str, Lease], listed: set[str]) -> str:
    if lease.finished:
        return "finished"
    if lease.failure is not None:
        return f"failed: {lease.failure}"
    if lease.owner is not None:
        return "reading"
    return "free" if ready_to_read(lease, by_shard, listed) else "waiting for parent"


def alive_at(lease: Lease, beats: dict[str, WorkerBeat]) -> float | None:
    """When the lease was last kept alive (epoch seconds, by its owner's clock): by its owner's
    heartbeat when that is what keeps it (see Liveness), else by its own last renewal."""
    beat = beats.get(lease.owner) if lease.owner is not None else None
    if (
        beat is not None
        and beat.protocol >= LIVENESS_BY_HEARTBEAT
        and lease.stream_arn in beat.streams
    ):
        return beat.renewed_at
    return lease.renewed_at


def rows(
    table: str,
    leases: list[Lease],
    listed: set[str],
    beats: Iterable[WorkerBeat] = (),
    now: float | None = None,
) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    by_shard = {lease.shard_id: lease for lease in leases}
    by_worker = {beat.worker_id: beat for beat in beats}
    return [
        {
            "table": table,
            "shard": lease.shard_id,
            "parent": ",".join(lease.parent_shard_ids) or None,
            "owner": lease.owner,
            "state": lease_state(lease, by_shard, listed),
            "checkpoint": lease.checkpoint,
            "alive_seconds_ago": _ago(now, alive_at(lease, by_worker)),
            "lag_seconds": lease.iterator_age if lease.owner is not None else None,
        }
        for lease in sorted(leases, key=lambda lease: lease.shard_id)
    ]


def _ago(now: float, then: float | None) -> float | None:
    return round(now - then, 1) if then is not None else None


def render(entries: list[dict[str, Any]]) -> str:
    """A plain terminal table."""

    def cell(value: Any, suffix: str = "") -> str:
        return "-" if value is None else f"{value}{suffix}"

    lines = [
        [
            entry["table"],
            entry["shard"],
            cell(entry["parent"]),
            cell(entry["owner"]),
            entry["state"],
            entry["checkpoint"],
            cell(entry["alive_seconds_ago"], " s ago"),
            cell(entry["lag_seconds"], " s"),
        ]
        for entry in entries
    ]
    return aligned([list(COLUMNS), *[[str(value) for value in line] for line in lines]])
