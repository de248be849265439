"""Where actions and dead letters go: what the shard readers and the rejects need of the sink.

`BulkIndexer` and `DeadLetters` write to the search cluster (and a file); the in-memory
`streamsync.testing.InMemorySink`/`InMemoryDeadLetters` keep what they are given, for tests and
for users who check their own transforms without a cluster.
"""

from __future__ import annotations

from typing import Protocol

from streamsync.sink.deadletter import DeadLetter
from streamsync.transform.actions import Action


class Ticket(Protocol):
    """What the sink acknowledges once an action is settled: the record (or scanned page) the
    action came from, in its reader's acknowledged prefix (source/acks.py). It travels beside
    the action, so what an action is (transform/) knows nothing of checkpoints."""

    def ack(self) -> None: ...


class ActionSink(Protocol):
    async def put(self, action: Action, ticket: Ticket | None = None) -> None:
        """Takes an action; may wait (back-pressure). `ticket` is acknowledged once the action
        is settled: indexed, found stale, or kept as a dead letter."""
        ...


class DeadLetterSink(Protocol):
    async def put(self, letter: DeadLetter) -> None:
        """Returns once the letter is kept: what acknowledges a record waits for it."""
        ...
