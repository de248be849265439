"""What one shard's reader knows, without any I/O: which records were read, the version clock, and
the acknowledged prefix.

The reader (source/poller.py) does the calls, the waiting and the lease writes; it asks this
object which records to send, with which version, and what may be checkpointed. Kept pure so
that duplicate deliveries, LATEST starts, restarts after a loss and out-of-order
acknowledgements can be tested without a stream or a cluster.
"""

from __future__ import annotations

from collections.abc import Callable

from streamsync.leases.model import Position
from streamsync.source.acks import AckTracker, PendingRecord
from streamsync.transform.records import StreamRecord
from streamsync.transform.versions import VersionClock


class ShardState:
    def __init__(self, start_version: int, start_after: float | None = None) -> None:
        self._clock = VersionClock(start_version)
        self._acks = AckTracker()
        # Records carry whole seconds: one created in the second of a LATEST start is kept.
        self._start_after = float(int(start_after)) if start_after is not None else None
        self.last_read: int | None = None
        self._behind_since: float | None = None  # creation time of the last record read
        # (when the last poll that found nothing new was sent, the last record read before it)
        self._empty_poll: tuple[float, int | None] | None = None

    def read(self, record: StreamRecord) -> bool:
        """Notes the record as read; False when it was read before (a duplicate delivery)."""
        if self.last_read is not None and record.sequence_number <= self.last_read:
            return False
        self.last_read = record.sequence_number
        return True

    def version_for(self, record: StreamRecord) -> int | None:
        """The version the record's actions carry; None for a record created before a LATEST
        start, which is not wanted and counts as acknowledged at once (checkpoints pass it)."""
        if self._start_after is not None and record.created_at < self._start_after:
            self._acks.register(record.sequence_number, self._clock.last, 0)
            return None
        return self._clock.next(record.created_at)

    def sent(self, record: StreamRecord, version: int, actions: int) -> PendingRecord:
        """The record's ticket: acknowledged once per action (none: acknowledged already)."""
        return self._acks.register(record.sequence_number, version, actions)

    @property
    def version(self) -> int:
        """The clock's value: the version of the last record numbered (or where it started)."""
        return self._clock.last

    def hold_floor(self, floor: int) -> None:
        """Numbers the records after a loss from `floor` on (written to the lease first)."""
        self._clock.last = max(self._clock.last, floor)

    @property
    def acknowledged(self) -> Position | None:
        """The last position every record up to which is acknowledged: what may be
        checkpointed."""
        return self._acks.acknowledged

    @property
    def outstanding(self) -> int:
        return self._acks.outstanding

    def on_acknowledged(self, callback: Callable[[], None]) -> None:
        self._acks.on_advance = callback

    def page_read(self, last: StreamRecord | None, asked_at: float) -> None:
        """After each page, with its last record and when it was asked for: an empty page means
        the reader caught up with the shard as it was at `asked_at`."""
        self._behind_since = last.created_at if last is not None else None
        if last is None:
            self._empty_poll = (asked_at, self.last_read)

    @property
    def caught_up_at(self) -> float | None:
        """When the last poll that found nothing new was asked for, once every record read
        before it is acknowledged (None before): every record the shard held then is in the
        index. What `streamsync reindex` waits on before it verifies and after it swaps."""
        if self._empty_poll is None:
            return None
        asked_at, last_read = self._empty_poll
        acked = self._acks.acknowledged
        if last_read is not None and (acked is None or acked.sequence_number < last_read):
            return None
        return asked_at

    def iterator_age(self, now: float) -> float:
        """How far behind the reader is: now minus the creation time of the last record read,
        0 once caught up."""
        return 0.0 if self._behind_since is None else max(now - self._behind_since, 0.0)
