"""Shard readers and coordinators wired to streamsync.testing's in-memory stream, lease table and
sink: what the fake-clock unit tests of tests/unit/test_reader.py and test_coordinator.py drive.
Nothing here touches a network; the same components against moto and real nodes are tested in
tests/integration."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamsync.config import Config, parse_config
from streamsync.coordinator import Coordinator, Source
from streamsync.leases.held import HeldLease
from streamsync.leases.model import Lease
from streamsync.observability.metrics import Metrics
from streamsync.source.client import TableStream
from streamsync.source.poller import ShardPoller
from streamsync.testing import InMemoryLeases, InMemorySink, InMemoryStream
from streamsync.transform.actions import RecordTransformer, TransformError

TABLE = "orders"
INDEX = "orders-index"
STREAM = f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/2026-12-01T00:00:00.000"
FAILOVER = 6.0  # renewals every 2 s, taker cycles every 3 s


def config(**sections: Any) -> Config:
    document = {
        "aws": {"region": "us-east-1"},
        "elasticsearch": {"hosts": ["http://127.0.0.1:9"]},  # never reached: the sink is in memory
        "leases": {"failover_seconds": FAILOVER, "discovery_interval_seconds": 5},
        "tables": [{"table": TABLE, "index": INDEX}],
        **sections,
    }
    return parse_config(orjson.dumps(document).decode(), source="test config")


def source(configured: Config) -> Source:
    table = configured.tables[0]
    stream = TableStream(TABLE, STREAM, True, "NEW_AND_OLD_IMAGES", "pk", None, {"pk": "S"})
    return Source(table, stream, RecordTransformer(table, "pk", None, None))


def item(key: str, **attributes: str) -> dict[str, Any]:
    return {"pk": {"S": key}, **{name: {"S": value} for name, value in attributes.items()}}


def write(stream: InMemoryStream, shard: str, key: str, **attributes: str) -> int:
    return stream.write(STREAM, shard, {"pk": {"S": key}}, new_image=item(key, **attributes))


def indexed(sink: InMemorySink, key: str) -> dict[str, Any] | None:
    document = sink.source(INDEX, key)
    return orjson.loads(document) if document is not None else None


@dataclass
class Rejected:
    records: list[tuple[str, TransformError]] = field(default_factory=list)

    async def __call__(
        self, table: str, shard: str, record: dict[str, Any], version: int, error: TransformError
    ) -> None:
        self.records.append((shard, error))


@dataclass
class Reading:
    """One shard reader over the in-memory services, as the taker would start it."""

    stream: InMemoryStream
    leases: InMemoryLeases
    sink: InMemorySink
    held: HeldLease
    stopping: asyncio.Event
    ended: list[Lease]
    task: asyncio.Task[None]


async def start_reading(
    stream: InMemoryStream,
    leases: InMemoryLeases,
    sink: InMemorySink,
    shard: str,
    *,
    owner: str = "w1",
    checkpoint_interval: float = 1.0,
    renewing: bool = True,
    metrics: Metrics | None = None,
    polling: dict[str, Any] | None = None,
) -> Reading:
    """`renewing`: renewed every third of a failover time as the coordinator's renewer does
    (until the reader is done). `polling`: the configuration's polling section."""
    configured = config(checkpoint_interval_seconds=checkpoint_interval, polling=polling or {})
    seen = Lease(STREAM, shard, TABLE)
    await leases.create(seen)
    held = HeldLease(leases, await leases.take(seen, owner, INDEX), FAILOVER)
    stopping = asyncio.Event()
    ended: list[Lease] = []

    async def on_shard_end(lease: Lease) -> None:
        ended.append(lease)

    poller = ShardPoller(
        api=stream,
        held=held,
        transformer=source(configured).transformer,
        sink=sink,
        polling=configured.polling,
        checkpoint_interval=checkpoint_interval,
        start_version=0,
        stopping=stopping,
        metrics=metrics or Metrics(),
        on_shard_end=on_shard_end,
        on_rejected_record=Rejected(),
    )
    task = asyncio.create_task(poller.run())
    if renewing:
        renewals = asyncio.create_task(_renew(held, FAILOVER / 3))
        task.add_done_callback(lambda _: renewals.cancel())
    return Reading(stream, leases, sink, held, stopping, ended, task)


async def _renew(held: HeldLease, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await held.renew()


@dataclass
class Running:
    """A coordinator (one worker) over shared in-memory services, with its own sink."""

    name: str
    coordinator: Coordinator
    sink: InMemorySink
    stopping: asyncio.Event
    task: asyncio.Task[None]
    metrics: Metrics

    def held(self) -> set[str]:
        return {lease.shard_id for lease in self.coordinator.held}

    async def stop(self) -> None:
        self.stopping.set()
        await self.task


def start_worker(
    name: str, stream: InMemoryStream, leases: InMemoryLeases, sink: InMemorySink | None = None
) -> Running:
    configured = config()
    sink = sink or InMemorySink()
    stopping = asyncio.Event()
    metrics = Metrics()
    coordinator = Coordinator(
        config=configured,
        worker_id=name,
        api=stream,
        leases=leases,
        heartbeats=leases.heartbeats,
        sources=[source(configured)],
        sink=sink,
        metrics=metrics,
        stopping=stopping,
        on_rejected_record=Rejected(),
    )
    task = asyncio.create_task(coordinator.run(), name=f"worker {name}")
    return Running(name, coordinator, sink, stopping, task, metrics)
