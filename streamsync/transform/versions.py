"""Document versions that order every image of an item, in 63 bits.

Elasticsearch's external versions are signed 64-bit numbers and DynamoDB sequence numbers have up
to 40 digits, so sequence numbers cannot be used directly. Instead each shard carries a version
clock: a record's version is its ApproximateCreationDateTime in whole seconds shifted left by
COUNTER_BITS, or one more than the previous record's version, whichever is larger.

Why this orders an item's images correctly:
- Within a shard, records come in order, and the clock never goes backwards.
- An item's records move from a parent shard to its children only after the parent ends; a
  child's clock starts at its parents' final value, so it continues above them.
- The clock value after each record is checkpointed with it, so a worker that replays from a
  checkpoint (after a crash, or a lease hand-off) assigns exactly the same versions again, and
  Elasticsearch rejects replayed images that are older than what it holds.
- Images read by a table scan (backfill) get the version of the second the scan started, which
  ranks them below every stream record written after that moment.

Seconds since 1970 need 31 bits, so 22 counter bits (4 million records per second per shard
before the clock runs ahead of real time, which is harmless) keep versions below 2**53: exact even
for JSON readers that parse numbers as doubles.
"""

from __future__ import annotations

COUNTER_BITS = 22


def version_floor(epoch_seconds: float) -> int:
    """The lowest version a record created at this time can carry."""
    return int(epoch_seconds) << COUNTER_BITS


class VersionClock:
    def __init__(self, last: int = 0) -> None:
        self.last = last

    def next(self, epoch_seconds: float) -> int:
        version = max(version_floor(epoch_seconds), self.last + 1)
        self.last = version
        return version
