"""The acknowledged prefix of a shard: what may be checkpointed.

Records leave a shard in order but are acknowledged by Elasticsearch out of order (several bulk
requests in flight, per-document lanes). A checkpoint may only name a record when it and every
record before it are acknowledged, or a crash would skip the unacknowledged ones. This tracker
finds that prefix in O(1) amortised per record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from streamsync.leases.model import Position


class PendingRecord:
    """One registered record; `ack()` it once per action it produced."""

    __slots__ = ("_tracker", "remaining", "sequence_number", "version")

    def __init__(
        self, tracker: AckTracker, sequence_number: int, version: int, remaining: int
    ) -> None:
        self._tracker = tracker
        self.sequence_number = sequence_number
        self.version = version
        self.remaining = remaining

    def ack(self) -> None:
        if self.remaining <= 0:
            raise RuntimeError(f"record {self.sequence_number} acknowledged more often than sent")
        self.remaining -= 1
        if self.remaining == 0:
            self._tracker.settled()


class AckTracker:
    def __init__(self) -> None:
        self._pending: deque[PendingRecord] = deque()
        self.acknowledged: Position | None = None
        self.on_advance: Callable[[], None] | None = None

    def register(self, sequence_number: int, version: int, actions: int) -> PendingRecord:
        """Registers the next record of the shard, which produced `actions` actions (0: skipped)."""
        record = PendingRecord(self, sequence_number, version, actions)
        self._pending.append(record)
        if actions == 0:
            self.settled()
        return record

    @property
    def outstanding(self) -> int:
        """Records registered but not yet part of the acknowledged prefix."""
        return len(self._pending)

    def settled(self) -> None:
        """A record's last action was acknowledged: the prefix may move."""
        pending = self._pending
        while pending and pending[0].remaining == 0:
            done = pending.popleft()
            self.acknowledged = Position(done.sequence_number, done.version)
        if self.on_advance is not None:
            self.on_advance()
