"""`streamsync status`: how long ago each lease was last kept alive, by the rule that keeps it."""

from __future__ import annotations

from streamsync.leases.model import LIVENESS_BY_HEARTBEAT, Lease, WorkerBeat
from streamsync.status import rows

STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-12-01T00:00:00.000"


def lease(shard: str, owner: str | None, renewed_at: float | None) -> Lease:
    return Lease(STREAM, shard, "t", owner=owner, counter=3, renewed_at=renewed_at)


def test_a_lease_is_as_alive_as_its_owners_heartbeat_or_else_its_own_renewal() -> None:
    beats = [
        WorkerBeat("new", 7, frozenset({STREAM}), 995.0, LIVENESS_BY_HEARTBEAT),
        WorkerBeat("old", 4, frozenset({STREAM}), 999.0),  # an older version: renews leases
        WorkerBeat("elsewhere", 2, frozenset({"another stream"}), 999.0, LIVENESS_BY_HEARTBEAT),
    ]
    leases = [
        lease("s-new", "new", 900.0),  # idle for 100 s, alive by the heartbeat 5 s ago
        lease("s-old", "old", 990.0),
        lease("s-elsewhere", "elsewhere", 950.0),  # its owner's beat does not list the stream
        lease("s-gone", "gone", 960.0),
        lease("s-free", None, None),
    ]
    alive = {
        row["shard"]: row["alive_seconds_ago"]
        for row in rows("t", leases, {lease.shard_id for lease in leases}, beats, now=1000.0)
    }
    assert alive == {
        "s-new": 5.0,
        "s-old": 10.0,
        "s-elsewhere": 50.0,
        "s-gone": 40.0,
        "s-free": None,
    }
