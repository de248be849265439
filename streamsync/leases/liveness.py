"""How long this worker may go on using the leases it holds, by the rule the others judge them by.

Workers of this version judge a lease by its owner's heartbeat: it lives while the heartbeat's
counter moves and lists the lease's stream, so an idle lease costs no write at all. Workers of
the version before judge each lease by its own counter, which only its owner's renewals move.
While one of those reads the table (a rolling upgrade), every worker judges all leases by their
counters (`by_counter`) and renews its own one by one (`renewals`), until a failover time after
the last one left, so that a worker still judging by counters never finds a lease unrenewed.

Either way the owner stops using a lease a failover time after the last write that keeps it
alive was *sent* (it may have landed any time after): the others start counting only once they
saw that write land, so the owner always stops first.
"""

from __future__ import annotations

from streamsync import clock


class Liveness:
    def __init__(self, failover_seconds: float) -> None:
        self._failover = failover_seconds
        self.beat_sent = clock.monotonic()  # when the last heartbeat that landed was sent
        self.streams: frozenset[str] = frozenset()  # the streams that heartbeat listed
        # While a worker of an older version reads beside (and, for renewals, a failover time
        # after): until the first scan says otherwise, as if one did.
        self.by_counter = True
        self.renewals = True

    def beat_landed(self, sent: float, streams: frozenset[str]) -> None:
        if sent >= self.beat_sent:
            self.beat_sent, self.streams = sent, streams

    def alive_since(self, stream_arn: str, renewed_at: float) -> float:
        """When the last write keeping a lease of `stream_arn` alive was sent; `renewed_at`: the
        last write of the lease itself (take, renewal, checkpoint). A worker between the two
        rules might judge by either, so while renewals are on the earlier one counts."""
        if stream_arn not in self.streams:  # the others judge this lease by its counter
            return renewed_at
        if self.renewals:
            return min(renewed_at, self.beat_sent)
        return self.beat_sent

    def counting_from(self, renewed_at: float) -> float:
        """A held lease's `renewed_at` as renewals start again: a worker that judges by counters
        started counting at most half a failover time (a scan interval) before this worker saw
        its heartbeat, so the lease is as good as renewed then, not longer ago."""
        return max(renewed_at, min(self.beat_sent, clock.monotonic() - self._failover / 2))

    def may_take(self) -> bool:
        """A lease taken now would stay usable for a while: the heartbeat is not about to lapse
        (the others would take the lease again at once)."""
        return clock.monotonic() - self.beat_sent < self._failover * 2 / 3
