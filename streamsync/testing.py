"""In-memory stand-ins for what streamsync talks to: a stream, the lease table, the sink.

They implement the ports (`source.ports.StreamReader`, `leases.ports.LeaseStore` and
`HeartbeatStore`, `sink.ports.ActionSink` and `DeadLetterSink`) with the behaviour a caller can
rely on, and nothing more: a stream's shards, lineage and iterators, the lease table's fenced
conditions, a sink that settles actions by their external versions. streamsync's own unit tests
drive the coordinator and the shard readers with them on a fake clock; a library user can test a
transform hook, or a whole pipeline, without AWS or a cluster.

What they do not imitate: retention and trimming, throttling, eventual consistency, paging
limits of DescribeStream; those are tested against moto with injected faults.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from streamsync.awsjson import AwsError
from streamsync.leases import requests
from streamsync.leases.heartbeats import Glance
from streamsync.leases.model import LIVENESS_BY_HEARTBEAT, SHARD_END, Lease, WorkerBeat
from streamsync.leases.requests import LeaseLost, LeaseWrite
from streamsync.leases.table import LeaseScan
from streamsync.sink.deadletter import DeadLetter
from streamsync.sink.ports import Ticket
from streamsync.source.client import RecordsPage, Shard
from streamsync.transform.actions import Action

if TYPE_CHECKING:
    from streamsync.leases.ports import HeartbeatStore, LeaseStore
    from streamsync.sink.ports import ActionSink, DeadLetterSink
    from streamsync.source.ports import StreamReader

__all__ = [
    "InMemoryDeadLetters",
    "InMemoryHeartbeats",
    "InMemoryLeases",
    "InMemorySink",
    "InMemoryStream",
]


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    records: list[dict[str, Any]] = field(default_factory=list)
    first_sequence_number: int = 0
    ending: int | None = None

    def as_shard(self) -> Shard:
        return Shard(self.shard_id, self.parent_id, self.first_sequence_number, self.ending)


class InMemoryStream:
    """DynamoDB Streams for one or more streams: shards with parents, records with increasing
    sequence numbers, iterators at TRIM_HORIZON, LATEST or after a sequence number, and closed
    shards whose last page has no next iterator. `get_records_calls` counts polls."""

    def __init__(self) -> None:
        self._streams: dict[str, dict[str, _Shard]] = {}
        self._sequence = itertools.count(100, 100)
        self.get_records_calls = 0

    def add_shard(self, stream_arn: str, shard_id: str, parent_id: str | None = None) -> None:
        shard = _Shard(shard_id, parent_id, first_sequence_number=next(self._sequence))
        self._streams.setdefault(stream_arn, {})[shard_id] = shard

    def write(
        self,
        stream_arn: str,
        shard_id: str,
        keys: dict[str, Any],
        *,
        new_image: dict[str, Any] | None = None,
        old_image: dict[str, Any] | None = None,
        event_name: str | None = None,
        created_at: float | None = None,
    ) -> int:
        """Appends a record in DynamoDB JSON (`{"pk": {"S": "a"}}`); its sequence number.
        The event is INSERT with a new image only, MODIFY with both, REMOVE without one."""
        shard = self._shard(stream_arn, shard_id)
        if shard.ending is not None:
            raise ValueError(f"shard {shard_id} is closed")
        sequence_number = next(self._sequence)
        if event_name is None:
            event_name = "REMOVE" if new_image is None else "MODIFY" if old_image else "INSERT"
        change: dict[str, Any] = {
            "Keys": keys,
            "SequenceNumber": str(sequence_number),
            "ApproximateCreationDateTime": created_at if created_at is not None else time.time(),
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if new_image is not None:
            change["NewImage"] = new_image
        if old_image is not None:
            change["OldImage"] = old_image
        shard.records.append({"eventName": event_name, "dynamodb": change})
        return sequence_number

    def close(self, stream_arn: str, shard_id: str) -> None:
        """Closes the shard (a split or the four-hourly rollover): its last page says so."""
        shard = self._shard(stream_arn, shard_id)
        last = shard.records[-1]["dynamodb"]["SequenceNumber"] if shard.records else None
        shard.ending = int(last) if last is not None else shard.first_sequence_number

    def split(self, stream_arn: str, shard_id: str, *children: str) -> None:
        self.close(stream_arn, shard_id)
        for child in children:
            self.add_shard(stream_arn, child, parent_id=shard_id)

    async def describe_shards(self, stream_arn: str) -> list[Shard]:
        return [s.as_shard() for s in self._shards(stream_arn).values()]

    async def child_shards(self, stream_arn: str, shard_id: str) -> list[Shard]:
        return [s.as_shard() for s in self._shards(stream_arn).values() if s.parent_id == shard_id]

    async def get_shard_iterator(
        self, stream_arn: str, shard_id: str, kind: str, sequence_number: int | None = None
    ) -> str:
        shard = self._shard(stream_arn, shard_id)
        if kind == "TRIM_HORIZON":
            position = 0
        elif kind == "LATEST":
            position = len(shard.records)
        elif kind == "AFTER_SEQUENCE_NUMBER" and sequence_number is not None:
            position = sum(_sequence_number(r) <= sequence_number for r in shard.records)
        else:
            raise AwsError(
                "ValidationException", f"iterator type {kind} without what it needs", 400
            )
        return f"{stream_arn}|{shard_id}|{position}"

    async def get_records(self, iterator: str, limit: int) -> RecordsPage:
        self.get_records_calls += 1
        stream_arn, shard_id, at = iterator.rsplit("|", 2)
        shard = self._shard(stream_arn, shard_id)
        position = int(at)
        page = shard.records[position : position + limit]
        position += len(page)
        ended = shard.ending is not None and position >= len(shard.records)
        following = None if ended else f"{stream_arn}|{shard_id}|{position}"
        return RecordsPage(list(page), following)

    def _shards(self, stream_arn: str) -> dict[str, _Shard]:
        if stream_arn not in self._streams:
            raise AwsError("ResourceNotFoundException", f"stream {stream_arn} not found", 400)
        return self._streams[stream_arn]

    def _shard(self, stream_arn: str, shard_id: str) -> _Shard:
        shards = self._shards(stream_arn)
        if shard_id not in shards:
            raise AwsError("ResourceNotFoundException", f"shard {shard_id} not found", 400)
        return shards[shard_id]


# The lease writes the roster counts (see streamsync.leases.heartbeats).
CHANGES = frozenset({"create", "take", "finish", "fail", "release", "delete"})


def _sequence_number(record: dict[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


class Landed(NamedTuple):
    """A lease write that landed: what, on which lease, by which worker, when (loop time)."""

    operation: str
    key: str
    by: str | None
    at: float


class InMemoryLeases:
    """The lease table with DynamoDB's conditions as `LeaseTable` states them: a create is
    refused when the lease exists, every other write when the lease moved on since the writer
    saw it (its counter, and its owner unless it is a take), a checkpoint or shard end also over
    SHARD_END. Each write's result is what `streamsync.leases.requests` says it writes.

    `hang(operation, owner=...)` makes calls of that operation (`renew`, `checkpoint`, `take`,
    ...), by that lease owner or by anyone, wait until `resume()`, as black-holed requests do;
    `steal(key, owner)` is another worker taking a lease. `name` is the table's name;
    `heartbeats` the heartbeat items beside the leases."""

    def __init__(self, name: str = "leases") -> None:
        self.name = name
        self.leases: dict[str, Lease] = {}
        self.heartbeats = InMemoryHeartbeats(self._pass)
        self.writes: list[Landed] = []  # in the order they landed
        self.scans: list[tuple[float, bool]] = []  # (loop time, strongly consistent) of each
        self._hung: set[tuple[str, str | None]] = set()  # (operation, owner or None: anyone)
        self._resumed = asyncio.Event()
        self.held_up: list[tuple[str, str | None]] = []  # hung writes waiting: (operation, by)

    def hang(self, *operations: str, owner: str | None = None) -> None:
        self._hung.update((operation, owner) for operation in operations)
        self._resumed.clear()

    def resume(self) -> None:
        self._hung.clear()
        self._resumed.set()

    def steal(self, key: str, owner: str) -> Lease:
        stolen = requests.take(self.name, self.leases[key], owner, None, time.time()).lease
        self.leases[key] = stolen
        self.heartbeats.changes += 1  # the taker tells the roster
        return stolen

    async def scan(self, consistent: bool = True) -> LeaseScan:
        await self._pass("scan")
        self.scans.append((asyncio.get_running_loop().time(), consistent))
        return LeaseScan(list(self.leases.values()), list(self.heartbeats.beats.values()))

    async def create(self, lease: Lease) -> bool:
        await self._pass("create")
        if lease.key in self.leases:
            return False
        self.leases[lease.key] = lease
        self._landed("create", lease.key, lease.owner)
        return True

    async def take(self, seen: Lease, owner: str, index: str | None = None) -> Lease:
        write = requests.take(self.name, seen, owner, index, time.time())
        return await self._write("take", seen, write, require_owner=False, by=owner)

    async def renew(self, held: Lease, iterator_age: float = 0.0) -> Lease:
        write = requests.renew(self.name, held, iterator_age, time.time())
        return await self._write("renew", held, write)

    async def checkpoint(
        self, held: Lease, checkpoint: str, version: int, iterator_age: float = 0.0
    ) -> Lease:
        write = requests.checkpoint(self.name, held, checkpoint, version, iterator_age)
        return await self._write("checkpoint", held, write, unfinished=True)

    async def hold_version_floor(self, held: Lease, version: int) -> Lease:
        write = requests.hold_version_floor(self.name, held, version)
        return await self._write("hold_version_floor", held, write)

    async def finish(self, held: Lease, version: int) -> Lease:
        write = requests.finish(self.name, held, version, time.time())
        return await self._write("finish", held, write, unfinished=True)

    async def fail(self, held: Lease, reason: str) -> Lease:
        return await self._write("fail", held, requests.fail(self.name, held, reason))

    async def release(self, held: Lease) -> Lease:
        return await self._write("release", held, requests.release(self.name, held, time.time()))

    async def delete(self, seen: Lease) -> None:
        await self._pass("delete")
        stored = self.leases.get(seen.key)
        if stored is None or stored.counter != seen.counter:
            raise LeaseLost(seen)
        del self.leases[seen.key]
        self._landed("delete", seen.key, seen.owner)

    async def _write(
        self,
        operation: str,
        seen: Lease,
        write: LeaseWrite,
        *,
        require_owner: bool = True,
        unfinished: bool = False,
        by: str | None = None,
    ) -> Lease:
        await self._pass(operation, by or seen.owner)
        stored = self.leases.get(seen.key)
        if (
            stored is None
            or stored.counter != seen.counter
            or (require_owner and seen.owner is not None and stored.owner != seen.owner)
            or (unfinished and stored.checkpoint == SHARD_END)
        ):
            raise LeaseLost(seen)
        self.leases[seen.key] = write.lease
        self._landed(operation, seen.key, by or seen.owner)
        return write.lease

    def _landed(self, operation: str, key: str, by: str | None) -> None:
        self.writes.append(Landed(operation, key, by, asyncio.get_running_loop().time()))
        if operation in CHANGES:
            self.heartbeats.changes += 1  # as LeaseTable tells the roster

    async def _pass(self, operation: str, owner: str | None = None) -> None:
        while (operation, None) in self._hung or (operation, owner) in self._hung:
            self.held_up.append((operation, owner))
            try:
                await self._resumed.wait()
            finally:
                self.held_up.remove((operation, owner))


class InMemoryHeartbeats:
    """Worker heartbeats and the roster as `Heartbeats` keeps them: a counter bumped by each
    beat; `members`, joined by a new heartbeat and left by a removed one; `changes`, bumped by
    joins, leaves, a worker's new streams and (from `InMemoryLeases`) the lease changes the
    roster counts. Beside `InMemoryLeases`, `hang("beat", owner=...)` holds a worker's beats."""

    def __init__(self, gate: Callable[[str, str | None], Awaitable[None]] | None = None) -> None:
        self.beats: dict[str, WorkerBeat] = {}
        self.members: set[str] = set()
        self.changes = 0
        self.glances = 0
        self._gate = gate

    async def beat(self, worker_id: str, streams: Iterable[str]) -> None:
        if self._gate is not None:
            await self._gate("beat", worker_id)
        before = self.beats.get(worker_id)
        counter = before.counter + 1 if before is not None else 1
        self.beats[worker_id] = WorkerBeat(
            worker_id, counter, frozenset(streams), time.time(), LIVENESS_BY_HEARTBEAT
        )
        if before is None:
            self.members.add(worker_id)
        if before is None or before.streams != frozenset(streams):
            self.changes += 1

    async def remove(self, worker_id: str) -> None:
        self.beats.pop(worker_id, None)
        self.members.discard(worker_id)
        self.changes += 1

    async def delete(self, seen: WorkerBeat) -> None:
        stored = self.beats.get(seen.worker_id)
        if stored is not None and stored.counter == seen.counter:
            await self.remove(seen.worker_id)

    async def glance(self, worker_ids: Iterable[str]) -> Glance:
        self.glances += 1
        beats = [self.beats[worker] for worker in set(worker_ids) if worker in self.beats]
        return Glance(frozenset(self.members), self.changes, beats)


class InMemorySink:
    """The search cluster as streamsync uses it: each document keeps the action with the
    highest version (external versioning), an older one is settled as stale. With
    `settle_at_once=False` actions wait in `pending` until `settle()`, as in a slow cluster."""

    def __init__(self, *, settle_at_once: bool = True) -> None:
        self.settle_at_once = settle_at_once
        self.actions: list[Action] = []  # every action put, in order
        self.pending: list[tuple[Action, Ticket | None]] = []
        self.documents: dict[tuple[str, str], Action] = {}  # (index, id) -> the latest action

    async def put(self, action: Action, ticket: Ticket | None = None) -> None:
        self.actions.append(action)
        self.pending.append((action, ticket))
        if self.settle_at_once:
            self.settle()

    def settle(self, count: int | None = None) -> None:
        """Settles the first `count` pending actions (all when None), in order."""
        settled = self.pending if count is None else self.pending[:count]
        self.pending = self.pending[len(settled) :]
        for action, ticket in settled:
            key = (action.index, action.doc_id)
            current = self.documents.get(key)
            if current is None or current.version < action.version:
                self.documents[key] = action
            if ticket is not None:
                ticket.ack()

    def source(self, index: str, doc_id: str) -> bytes | None:
        """The document as indexed; None when it was never indexed or is deleted."""
        latest = self.documents.get((index, doc_id))
        return latest.source if latest is not None and latest.op == "index" else None


class InMemoryDeadLetters:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def put(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


if TYPE_CHECKING:  # mypy --strict (make lint) proves that each stand-in implements its port
    _stream: StreamReader = InMemoryStream()
    _leases: LeaseStore = InMemoryLeases()
    _heartbeats: HeartbeatStore = InMemoryHeartbeats()
    _sink: ActionSink = InMemorySink()
    _letters: DeadLetterSink = InMemoryDeadLetters()
