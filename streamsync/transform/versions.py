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
- Images read by a table scan (backfill, verify's repairs) get a version below the second the
  scan started, less a margin for this host's clock running ahead of DynamoDB's, which ranks
  them below every stream record written after the scan began.

Seconds are counted from 2020-01-01 (32 bits last until 2156) and the counter has 21 bits (2
million records per second per shard before the clock runs ahead of real time, which is
harmless), so versions stay below 2**53 until 2156: exact even for JSON readers that parse
numbers as doubles, and far below Elasticsearch's 2**63 limit.
"""

from __future__ import annotations

COUNTER_BITS = 21
EPOCH = 1_577_836_800  # 2020-01-01T00:00:00Z, before any record streamsync will read


CLOCK_SKEW_SECONDS = 300
"""How far this host's clock may run ahead of DynamoDB's before a scanned image could outrank a
change made after the scan began. Clocks synced by NTP are within a second; five minutes covers
a VM resumed from a pause or a container without time sync. Scanned images lose to stream
records of the last five minutes before the scan, which the stream still carries, so nothing
stale remains."""


def scan_version(started_at: float) -> int:
    """The version of an image read by a scan that began at `started_at` by this host's clock."""
    return version_floor(started_at - CLOCK_SKEW_SECONDS) - 1


def version_floor(epoch_seconds: float) -> int:
    """The lowest version a record created at this time can carry."""
    return max(int(epoch_seconds) - EPOCH, 0) << COUNTER_BITS


class VersionClock:
    def __init__(self, last: int = 0) -> None:
        self.last = last

    def next(self, epoch_seconds: float) -> int:
        version = max(version_floor(epoch_seconds), self.last + 1)
        self.last = version
        return version
