"""Supervision of background tasks, /healthz, the coordinator's renewer and its reader registry,
without network (the HTTP probe is served on 127.0.0.1).

The lease table is a fake: a renewal can be made to hang (as on a black-holed connection, where
a request may take 30 s) or to fail with a non-transient AWS error (AccessDenied, ExpiredToken),
per lease, which is what the renewer's isolation is about; DynamoDB itself plays no part. The
same faults against moto's server are in tests/integration/test_robustness.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import replace
from typing import Any, cast

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from streamsync import supervise
from streamsync.awsjson import AwsError
from streamsync.config import parse_config
from streamsync.coordinator import Coordinator, Source
from streamsync.coordinator.readers import Reader
from streamsync.leases.heartbeats import Heartbeats
from streamsync.leases.held import HeldLease
from streamsync.leases.model import Lease
from streamsync.leases.table import LeaseTable
from streamsync.observability.http import HealthServer
from streamsync.observability.metrics import Metrics
from streamsync.sink.bulk import BulkIndexer
from streamsync.source.client import StreamsApi

CONFIG = """\
aws: {region: us-east-1}
elasticsearch: {hosts: ["http://127.0.0.1:9200"]}
leases: {table: leases, failover_seconds: 1.5}
tables: [{table: orders, index: orders}]
"""


def supervisor() -> tuple[supervise.Supervisor, Counter[str]]:
    counted: Counter[str] = Counter()
    chief = supervise.Supervisor(lambda task: counted.update([task]))
    supervise.current.set(chief)  # this test's context only
    return chief, counted


async def test_a_task_that_fails_is_logged_counted_and_fails_health(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chief, counted = supervisor()

    async def refused() -> None:
        await asyncio.sleep(0)
        raise AwsError("ExpiredTokenException", "The security token included has expired", 400)

    task = supervise.spawn(refused(), "renewer", fields={"shard": "shardId-1"})
    await asyncio.wait([task])
    await asyncio.sleep(0)
    assert counted == {"renewer": 1}
    (record,) = [r for r in caplog.records if r.name == "streamsync.supervise"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.__dict__["shard"] == "shardId-1"
    assert "ExpiredTokenException" in record.getMessage()
    assert chief.problems == [
        "renewer failed (AwsError: ExpiredTokenException: The security token included has expired)"
    ]


async def test_a_task_meant_to_run_forever_that_returns_is_a_failure() -> None:
    chief, counted = supervisor()

    async def returns() -> None:
        return None

    await asyncio.wait([supervise.spawn(returns(), "checkpointer")])
    await asyncio.sleep(0)
    assert counted == {"checkpointer": 1}
    assert chief.problems == ["checkpointer failed (it ended unexpectedly)"]


async def test_cancellation_and_an_expected_end_are_not_failures() -> None:
    chief, counted = supervisor()
    forever = supervise.spawn(asyncio.sleep(3600), "renewer")

    async def done() -> None:
        return None

    finite = supervise.spawn(done(), "initial_load", ends=True)
    await asyncio.sleep(0)
    forever.cancel()
    await asyncio.wait([forever, finite])
    await asyncio.sleep(0)
    assert counted == {}
    assert chief.problems == []


async def test_a_failure_the_caller_recovers_from_is_counted_but_health_stays_green() -> None:
    chief, counted = supervisor()
    supervise.failed("shard_reader", RuntimeError("boom"), recovery="its lease is taken again")
    assert counted == {"shard_reader": 1}
    assert chief.problems == []


async def test_healthz_fails_with_the_reasons_of_liveness() -> None:
    reasons: list[str] = []
    server = HealthServer(CollectorRegistry(), lambda: [], lambda: list(reasons))
    await server.start("127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}/healthz"
            async with http.get(url) as answer:
                assert (answer.status, await answer.json()) == (200, {"ok": True})
            reasons.append("renewer failed (AwsError: AccessDeniedException: no)")
            async with http.get(url) as answer:
                assert answer.status == 503
                assert await answer.json() == {
                    "ok": False,
                    "reason": "renewer failed (AwsError: AccessDeniedException: no)",
                }
    finally:
        await server.stop()


class FakeLeases:
    """Renewals per shard; `hang` shards never answer, `refuse` shards fail once with an error."""

    def __init__(self) -> None:
        self.renewed: Counter[str] = Counter()
        self.beats = 0
        self.hang: set[str] = set()
        self.refuse: dict[str, Exception] = {}
        self.taken: list[str] = []

    async def renew(self, held: Lease, iterator_age: float = 0.0) -> Lease:
        if held.shard_id in self.hang:
            await asyncio.Event().wait()
        error = self.refuse.pop(held.shard_id, None)
        if error is not None:
            raise error
        self.renewed[held.shard_id] += 1
        return replace(held, counter=held.counter + 1)

    async def beat(self, worker_id: str, streams: Any) -> None:
        self.beats += 1

    async def remove(self, worker_id: str) -> None:
        self.beats += 1  # what a worker reading no stream (as here) writes instead

    async def take(self, seen: Lease, owner: str) -> Lease:
        self.taken.append(seen.shard_id)
        return replace(seen, owner=owner, counter=seen.counter + 1)


def coordinator(leases: FakeLeases) -> Coordinator:
    async def reject(*_: Any) -> None:
        return None

    return Coordinator(
        config=parse_config(CONFIG),
        worker_id="w1",
        api=cast(StreamsApi, None),
        leases=cast(LeaseTable, leases),
        heartbeats=cast(Heartbeats, leases),
        sources=[],
        sink=cast(BulkIndexer, None),
        metrics=Metrics(),
        stopping=asyncio.Event(),
        on_rejected_record=reject,
    )


def reader(chief: Coordinator, leases: FakeLeases, shard: str, failover: float = 1.5) -> Reader:
    """As the taker starts it: its writes answered tell the worker its lease writes land."""
    lease = Lease(stream_arn="arn:s", shard_id=shard, table="t", owner="w1", counter=1)
    answered = chief._taker._writes.answered
    held = HeldLease(cast(LeaseTable, leases), lease, failover, on_answered=answered)
    return Reader(held, asyncio.create_task(asyncio.sleep(3600)), asyncio.Event())


async def test_a_hanging_renewal_holds_up_neither_the_other_leases_nor_the_heartbeat() -> None:
    """One lease's renewal never answers (a black-holed connection); renewals every 0.5 s
    (failover 1.5 s). The other leases must be renewed every round, and the heartbeat too: a
    round that waited for every renewal let them all expire."""
    supervisor()
    leases = FakeLeases()
    leases.hang.add("stuck")
    chief = coordinator(leases)
    readers = {name: reader(chief, leases, name) for name in ("stuck", "a", "b")}
    chief._readers._by_key.update({r.held.lease.key: r for r in readers.values()})
    renewer = asyncio.create_task(chief._renewer.run(0.5))
    await asyncio.sleep(2.3)  # four rounds
    renewer.cancel()
    assert min(leases.renewed["a"], leases.renewed["b"]) >= 4, leases.renewed
    assert leases.beats >= 4
    assert readers["a"].held.usable
    assert readers["b"].held.usable
    assert not readers["stuck"].held.usable
    assert readers["stuck"].task.cancelled(), "the reader of the unrenewed lease was stopped"
    assert not readers["a"].task.done()
    for r in readers.values():
        r.task.cancel()


async def test_a_renewal_refused_for_good_is_reported_and_the_renewer_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One renewal fails with ExpiredToken (not transient, so not retried): the renewer used to
    die of it without a word, taking the heartbeats and every other renewal with it."""
    chief_supervisor, counted = supervisor()
    leases = FakeLeases()
    leases.refuse["a"] = AwsError("ExpiredTokenException", "expired", 400)
    chief = coordinator(leases)
    readers = {name: reader(chief, leases, name) for name in ("a", "b")}
    chief._readers._by_key.update({r.held.lease.key: r for r in readers.values()})
    renewer = asyncio.create_task(chief._renewer.run(0.3))
    await asyncio.sleep(1.45)
    assert not renewer.done(), "the renewer is alive"
    renewer.cancel()
    assert leases.renewed["b"] >= 4
    assert leases.renewed["a"] >= 3, "renewed again in the next rounds"
    assert leases.beats >= 4
    assert counted == {"renewer": 1}
    assert chief_supervisor.problems == [
        "renewer failed (AwsError: ExpiredTokenException: expired)"
    ]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged
    assert logged[0].__dict__["shard"] == "a"
    for r in readers.values():
        r.task.cancel()


async def test_no_second_reader_starts_for_a_lease_whose_reader_is_still_ending() -> None:
    """The lease was chosen again (it expired while its reader was stuck, say in sink.put):
    the reader registry used to be overwritten, and the old reader's end then unregistered the
    new one. The old reader must be stopped and the lease taken again only once it ended."""
    supervisor()
    leases = FakeLeases()
    chief = coordinator(leases)
    old = reader(chief, leases, "s1", failover=0.05)
    chief._readers.register(old)
    await asyncio.sleep(0.1)  # its lease went unrenewed for a failover time
    source = cast(Source, None)
    await chief._taker._start(source, old.held.lease, 0)
    assert leases.taken == [], "not taken while its reader still runs"
    assert chief._readers[old.held.lease.key] is old
    await asyncio.wait([old.task])
    await asyncio.sleep(0)
    assert old.task.cancelled()
    assert chief._readers == {}
    assert chief._worker.wake.is_set(), "the taker is woken to take it again at once"


async def test_a_worker_whose_every_lease_write_hangs_stops_announcing_itself() -> None:
    """Every renewal hangs (all of this worker's lease writes are stalled): it cannot hold its
    leases, so it must stop its heartbeat, or the others would leave it a share of the shards
    and wait for leases it only lets expire (the renewer used to stop beating by accident, its
    heartbeat waiting behind the stuck renewals)."""
    supervisor()
    leases = FakeLeases()
    leases.hang.update({"a", "b"})
    chief = coordinator(leases)
    readers = {name: reader(chief, leases, name) for name in ("a", "b")}
    chief._readers._by_key.update({r.held.lease.key: r for r in readers.values()})
    renewer = asyncio.create_task(chief._renewer.run(0.5))
    await asyncio.sleep(1.2)
    beats = leases.beats
    await asyncio.sleep(1.5)
    renewer.cancel()
    assert beats >= 1
    assert leases.beats == beats, "no heartbeat once every lease write went unanswered"
    for r in readers.values():
        r.task.cancel()
