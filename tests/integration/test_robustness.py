"""Robustness of a running worker: stuck and refused lease writes, a reader that will not end, a
stop during a shard's last write, a long initial load, a stop while the cluster is down.

moto answers every request at once and never refuses one for credentials or permissions, so the
faults are injected in front of it by tests/support/moto_server.py: a delay holds one request in
the server (a black-holed connection: the worker waits as it would for a request that never
answers, while every other request is served), and an AWS error code answers one request instead
of moto (ExpiredTokenException, AccessDeniedException), each matched to one API action and, by
its body, to one lease and one kind of lease write. A search cluster that is down is a TCP proxy
in front of the real node that stops forwarding. A reader stuck in the middle of a page is a
transform hook (this module's `hold_marked_items`) that waits until the test lets it go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiobotocore.credentials import AioCredentials

from streamsync.app import StreamSync
from streamsync.awsjson import AwsJsonClient
from streamsync.config import Config
from streamsync.leases.model import SHARD_END, Lease, worker_key
from streamsync.leases.requests import LeaseLost
from streamsync.leases.table import LeaseTable
from streamsync.transform.actions import ChangeRecord
from tests.support import aws, streams_sim
from tests.support.moto_server import Request, StreamsServer, Write
from tests.support.pipeline import (
    config_document,
    config_from,
    eventually,
    make_config,
    pk,
    running,
    wait_until_equal,
)
from tests.support.search import Probe, Target
from tests.support.workload import TableShape, Workload, expected_id, in_background, writing

FAILOVER = 3.0  # renewals every 1 s (each with a 0.5 s deadline), taker cycles every 1.5 s


# --- recognising lease writes in front of moto ---------------------------------------------


def _expression(request: Request) -> str:
    return str(request.body.get("UpdateExpression", ""))


def _shard_of(request: Request) -> str:
    return str(request.body.get("Key", {}).get("leaseKey", {}).get("S", "")).rpartition("|")[2]


def is_renewal(request: Request) -> bool:
    return request.action == "UpdateItem" and "iteratorAgeSeconds" in _expression(request)


def is_heartbeat(request: Request) -> bool:
    return request.action == "UpdateItem" and "workerId = :id" in _expression(request)


def is_take(request: Request) -> bool:
    return request.action == "UpdateItem" and "leaseOwner = :owner" in _expression(request)


def is_checkpoint(request: Request) -> bool:
    return request.action == "UpdateItem" and "ownerSwitchesSinceCheckpoint = :zero" in (
        _expression(request)
    )


def is_finish(request: Request) -> bool:
    return request.action == "UpdateItem" and "finishedAt" in _expression(request)


def renewal_of(shard: str) -> Callable[[Request], bool]:
    return lambda request: is_renewal(request) and _shard_of(request) == shard


def takes(history: list[Write], shard: str) -> int:
    return sum(
        1
        for w in history
        if w.status == 200 and is_take(w.request) and _shard_of(w.request) == shard
    )


async def lease_rows(clients: aws.Clients, lease_table: str) -> dict[str, dict[str, Any]]:
    """shard id -> the lease item (DynamoDB JSON)."""
    try:
        page = await clients.dynamodb.scan(TableName=lease_table, ConsistentRead=True)
    except clients.dynamodb.exceptions.ResourceNotFoundException:
        return {}
    return {item["shardId"]["S"]: item for item in page["Items"] if "shardId" in item}


async def heartbeat_counter(clients: aws.Clients, lease_table: str, worker: str) -> int:
    item = await clients.dynamodb.get_item(
        TableName=lease_table, Key={"leaseKey": {"S": worker_key(worker)}}, ConsistentRead=True
    )
    return int(item["Item"]["leaseCounter"]["N"]) if "Item" in item else 0


@contextlib.asynccontextmanager
async def an_older_worker_beside(clients: aws.Clients, lease_table: str) -> AsyncIterator[None]:
    """The heartbeat of a live worker of the version before liveness by heartbeat (its items
    have no `protocol`), reading another stream of the same lease table: while it beats, the
    workers under test renew every lease they hold (a rolling upgrade), as they all did
    before."""

    async def beat() -> None:
        await clients.dynamodb.get_waiter("table_exists").wait(
            TableName=lease_table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 150}
        )
        while True:
            await clients.dynamodb.update_item(
                TableName=lease_table,
                Key={"leaseKey": {"S": worker_key("older")}},
                UpdateExpression=(
                    "SET kind = :kind, workerId = :id, streams = :streams, renewedAt = :now, "
                    "leaseCounter = if_not_exists(leaseCounter, :zero) + :one"
                ),
                ExpressionAttributeValues={
                    ":kind": {"S": "worker"},
                    ":id": {"S": "older"},
                    ":streams": {"SS": [OTHER_STREAM]},
                    ":now": {"N": f"{time.time():.3f}"},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                },
            )
            await asyncio.sleep(FAILOVER / 3)

    async with in_background(beat()):
        yield


OTHER_STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/other/stream/2026-01-01T00:00:00.000"


def renewals(history: list[Write], shard: str) -> int:
    return sum(
        1
        for w in history
        if w.status == 200 and is_renewal(w.request) and _shard_of(w.request) == shard
    )


async def owned_by(clients: aws.Clients, lease_table: str, worker: str, count: int) -> bool:
    rows = [r for r in (await lease_rows(clients, lease_table)).values()]
    active = [r for r in rows if r["checkpoint"]["S"] != SHARD_END]
    return len(active) == count and all(r.get("leaseOwner", {}).get("S") == worker for r in active)


async def get(port: int, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.json()


async def sharded(clients: aws.Clients, shards: int, keys: int) -> tuple[TableShape, Workload]:
    shape = TableShape(aws.unique_name("robust"))
    await aws.create_stream_table(clients.dynamodb, shape.name)
    workload = Workload(clients.dynamodb, shape, keys=keys, seed=3)
    await workload.populate()
    if shards > 1:
        sim = streams_sim.stream_of(shape.name)
        sim.split(sim.open_shards()[0].shard_id, shards)
    return shape, workload


# --- 5: renewals -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def four_shards_read_by_solo(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
    *,
    older_worker: bool = False,
) -> AsyncIterator[tuple[str, list[Write], list[str]]]:
    """One worker ("solo", failover FAILOVER) holding the 4 children of a split, records
    flowing; yields the lease table, its write history and the children's shard ids; once the
    block ends, the index must equal the table. `older_worker`: see `an_older_worker_beside`."""
    shape, workload = await sharded(clients, shards=4, keys=40)
    lease_table = aws.unique_name("leases")
    history = streams_server.faults.record_writes(lease_table)
    config = make_config(
        moto_endpoint,
        target,
        lease_table,
        [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
        leases={"worker_id": "solo", "failover_seconds": FAILOVER},
        checkpoint_interval_seconds=0.5,
    )
    beside = (
        an_older_worker_beside(clients, lease_table) if older_worker else contextlib.nullcontext()
    )
    async with beside, running(config):
        async with writing(workload, every=0.05):
            await eventually(lambda: owned_by(clients, lease_table, "solo", 4), within=30)
            children = sorted(
                shard
                for shard, row in (await lease_rows(clients, lease_table)).items()
                if row["checkpoint"]["S"] != SHARD_END
            )
            yield lease_table, history, children
        await wait_until_equal(
            clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
        )


async def test_a_black_holed_renewal_holds_up_no_other_lease_nor_the_heartbeat(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    """One lease's renewal is held for 12 s by the fault injector in front of moto, which itself
    answers every request at once (a black-holed connection; failover 3 s). The renewer used to
    wait for every renewal of a round before the next, and to send the heartbeat in the same
    loop: every lease of the worker went unrenewed for 12 s, expired, and was taken again, and
    the worker's heartbeat stood still. Now only the stuck lease may be taken again; the others
    and the heartbeat are written on time. Leases are renewed one by one only while a worker of
    an older version reads beside (see `an_older_worker_beside`); one does here."""
    async with four_shards_read_by_solo(
        clients, moto_endpoint, streams_server, target, probe, index_name, older_worker=True
    ) as (lease_table, history, children):
        stuck, others = children[0], children[1:]
        before = {shard: takes(history, shard) for shard in others}
        beats = await heartbeat_counter(clients, lease_table, "solo")
        streams_server.faults.inject("UpdateItem", delay=12.0, match=renewal_of(stuck))
        await asyncio.sleep(4 * FAILOVER)
        assert {shard: takes(history, shard) for shard in others} == before, (
            "no other lease expired and was taken again"
        )
        assert all(renewals(history, shard) >= 8 for shard in others), "renewed on time"
        assert await heartbeat_counter(clients, lease_table, "solo") >= beats + 8


async def test_a_black_holed_heartbeat_holds_up_neither_the_next_nor_any_lease(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    """One heartbeat is held for 12 s by the fault injector in front of moto (a black-holed
    connection; failover 3 s). Leases live by the heartbeat: had the next beats waited for that
    one, every lease of the worker would have lapsed and been taken again. The next beats are
    sent and land on time, and no lease is taken again."""
    async with four_shards_read_by_solo(
        clients, moto_endpoint, streams_server, target, probe, index_name
    ) as (lease_table, history, children):
        before = {shard: takes(history, shard) for shard in children}
        beats = await heartbeat_counter(clients, lease_table, "solo")
        streams_server.faults.inject("UpdateItem", delay=12.0, match=is_heartbeat)
        await asyncio.sleep(4 * FAILOVER)
        assert {shard: takes(history, shard) for shard in children} == before, (
            "no lease lapsed and was taken again"
        )
        assert await heartbeat_counter(clients, lease_table, "solo") >= beats + 8


async def test_lease_writes_refused_for_good_are_reported_and_fail_healthz(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A heartbeat answered ExpiredTokenException, then a periodic checkpoint answered
    AccessDeniedException (not transient: not retried). moto never refuses a request for
    credentials or permissions: the fault injector in front of it answers these instead. A
    refused renewal used to end the renewer, and the heartbeats with it, a refused checkpoint the
    checkpointer, both without a word: the worker's leases expired over and over while /healthz
    stayed green. Leases now live by the heartbeat, so a refused heartbeat is what the renewer
    reports: each failure is logged with its cause, counted, and fails /healthz (a restart gets
    fresh credentials); the heartbeats go on, and one missed beat loses no lease."""
    caplog.set_level(logging.INFO, logger="streamsync")
    shape, workload = await sharded(clients, shards=1, keys=20)
    (shard,) = [s.shard_id for s in streams_sim.stream_of(shape.name).open_shards()]
    lease_table = aws.unique_name("leases")
    history = streams_server.faults.record_writes(lease_table)
    config = make_config(
        moto_endpoint,
        target,
        lease_table,
        [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
        leases={"worker_id": "solo", "failover_seconds": FAILOVER},
        checkpoint_interval_seconds=0.5,
    )
    async with running(config) as sync:
        async with writing(workload, every=0.05):
            assert sync.http is not None
            assert sync.http.port is not None
            port = sync.http.port
            await eventually(lambda: owned_by(clients, lease_table, "solo", 1), within=30)
            assert await get(port, "/healthz") == (200, {"ok": True})
            streams_server.faults.inject(
                "UpdateItem",
                "ExpiredTokenException",
                message="The token has expired",
                match=is_heartbeat,
            )

            async def counted(task: str) -> bool:
                return sync.metrics.value("streamsync_task_failures_total", task=task) == 1

            await eventually(lambda: counted("renewer"), within=10)
            status, body = await get(port, "/healthz")
            assert status == 503
            assert (
                "renewer failed (AwsError: ExpiredTokenException: The token has expired)"
                in (body["reason"])
            )
            beats = await heartbeat_counter(clients, lease_table, "solo")
            await asyncio.sleep(2 * FAILOVER)
            assert await heartbeat_counter(clients, lease_table, "solo") >= beats + 4, (
                "the heartbeats go on"
            )
            assert takes(history, shard) == 1, "the lease lived on: never taken again"

            streams_server.faults.inject(
                "UpdateItem", "AccessDeniedException", message="not allowed", match=is_checkpoint
            )
            await eventually(lambda: counted("checkpointer"), within=10)
            status, body = await get(port, "/healthz")
            assert status == 503
            assert (
                "checkpointer failed (AwsError: AccessDeniedException: not allowed)"
                in (body["reason"])
            )
        await wait_until_equal(
            clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
        )
    failures = [
        r for r in caplog.records if r.name == "streamsync.supervise" and r.levelno == logging.ERROR
    ]
    assert [r.__dict__["task"] for r in failures] == ["renewer", "checkpointer"]
    assert all(r.exc_info is not None for r in failures)
    assert failures[0].__dict__["worker"] == "solo"
    assert failures[1].__dict__["shard"] == shard


# --- 6: one reader per lease -------------------------------------------------------------------

_HOLD: dict[str, Any] = {}


async def hold_marked_items(record: ChangeRecord) -> Any:
    """A transform hook: the first record of an item with a `hold` attribute waits until the
    test sets `_HOLD["release"]`, as a reader stuck handing a page to a slow cluster would."""
    image = record.new_image
    if image is not None and "hold" in image and not _HOLD.get("held"):
        _HOLD["held"] = True
        _HOLD["entered"].set()
        await _HOLD["release"].wait()
    return image if image is not None else [{"op": "delete"}]


@pytest.mark.parametrize("lapse", ["renewal", "heartbeat"])
async def test_a_lease_is_taken_again_only_once_its_stuck_reader_ended(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
    lapse: str,
) -> None:
    """A reader is stuck in the middle of a page (a transform hook that waits, standing for a
    slow `sink.put`) while the write that keeps its lease alive is held 6 s by the fault
    injector (moto answers at once): its renewal, with a worker of an older version beside (see
    `an_older_worker_beside`), or else the worker's heartbeat. The lease expires and this same
    worker takes it again. The coordinator used to register the new reader over the old one;
    the old one, cancelled once its renewal was refused, then unregistered the new one, which
    went unrenewed and was taken a third time. Now the old reader is stopped first, the lease
    taken once more, and the new reader registered, kept alive and left alone."""
    _HOLD.clear()
    _HOLD.update(entered=asyncio.Event(), release=asyncio.Event())
    shape, _workload = await sharded(clients, shards=1, keys=10)
    (shard,) = [s.shard_id for s in streams_sim.stream_of(shape.name).open_shards()]
    lease_table = aws.unique_name("leases")
    history = streams_server.faults.record_writes(lease_table)
    config = make_config(
        moto_endpoint,
        target,
        lease_table,
        [
            {
                "table": shape.name,
                "index": index_name,
                "index_mappings": {"dynamic": False},
                "transform": f"{__name__}:hold_marked_items",
            }
        ],
        leases={"worker_id": "solo", "failover_seconds": FAILOVER},
        checkpoint_interval_seconds=0.5,
    )
    beside = (
        an_older_worker_beside(clients, lease_table)
        if lapse == "renewal"
        else contextlib.nullcontext()
    )
    try:
        async with beside, running(config) as sync:
            await eventually(lambda: owned_by(clients, lease_table, "solo", 1), within=30)
            await clients.dynamodb.put_item(
                TableName=shape.name, Item={"pk": {"S": "held"}, "hold": {"BOOL": True}}
            )
            async with asyncio.timeout(30):
                await _HOLD["entered"].wait()
            if lapse == "renewal":
                streams_server.faults.inject("UpdateItem", delay=6.0, match=renewal_of(shard))
            else:  # every beat held 6 s until the lease lapsed; then they land again
                stall = streams_server.faults.inject(
                    "UpdateItem", delay=6.0, times=1000, match=is_heartbeat
                )
                await asyncio.sleep(FAILOVER + 2)
                stall.remaining = 0
            await eventually(lambda: _true(takes(history, shard) >= 2), within=20)
            await asyncio.sleep(8)  # the stalled renewal is refused; its reader's end is handled
            _HOLD["release"].set()
            await asyncio.sleep(3 * FAILOVER)
            assert takes(history, shard) == 2, "taken again once, by one new reader"
            assert sync.coordinator is not None
            (key,) = sync.coordinator._readers
            reader = sync.coordinator._readers[key]
            assert not reader.task.done()
            assert reader.held.usable
            counter = int((await lease_rows(clients, lease_table))[shard]["leaseCounter"]["N"])
            await asyncio.sleep(FAILOVER)
            renewed = int((await lease_rows(clients, lease_table))[shard]["leaseCounter"]["N"])
            if lapse == "renewal":
                assert renewed >= counter + 2, "the new reader's lease is renewed"
            else:  # its heartbeat keeps it alive, without a write of its own
                assert renewed == counter
                assert reader.held.usable
                assert not reader.task.done()
                assert takes(history, shard) == 2
            await wait_until_equal(
                clients.dynamodb,
                probe,
                shape.name,
                index_name,
                lambda item: expected_id(shape, item),
            )
    finally:
        _HOLD["release"].set()


async def _true(value: bool) -> bool:
    return value


# --- 7: a shard's end stays written ----------------------------------------------------------


async def test_a_stop_during_a_shards_final_write_leaves_shard_end_in_place(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    """A shard read to its end is being finished (its SHARD_END write held 5 s by the fault
    injector: moto answers at once) when the worker is stopped with a 1 s grace: the grace ends
    and the reader is cancelled during the finish. Its clean-up used to checkpoint (and release)
    after the finish landed, and the checkpoint replaced SHARD_END, so the shard was read and
    finished again. Now no write follows the final one."""
    shape, _workload = await sharded(clients, shards=1, keys=20)
    sim = streams_sim.stream_of(shape.name)
    (root,) = [s.shard_id for s in sim.open_shards()]
    lease_table = aws.unique_name("leases")
    history = streams_server.faults.record_writes(lease_table)
    config = make_config(
        moto_endpoint,
        target,
        lease_table,
        [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
        leases={"worker_id": "solo"},
        # No periodic checkpoint: the acknowledged end is left for the clean-up to write.
        checkpoint_interval_seconds=300,
        shutdown_grace_seconds=1,
    )
    finishing = threading.Event()
    streams_server.faults.observers.append(
        lambda request: finishing.set() if is_finish(request) else None
    )
    streams_server.faults.inject("UpdateItem", delay=5.0, match=is_finish)
    async with running(config) as sync:
        await wait_until_equal(
            clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
        )
        sim.split(root, 2)
        await eventually(lambda: _true(finishing.is_set()), within=30)
        sync.stop()  # the grace (1 s) ends while the finish is in flight

    async def finished() -> bool:
        row = (await lease_rows(clients, lease_table))[root]
        return bool(row["checkpoint"]["S"] == SHARD_END)

    await eventually(finished, within=20)  # the held-up finish lands
    await asyncio.sleep(2)  # and whatever would follow it
    root_writes = [w for w in history if w.status == 200 and _shard_of(w.request) == root]
    ended = [
        i for i, w in enumerate(root_writes) if (w.after or {})["checkpoint"]["S"] == SHARD_END
    ]
    assert ended, "the root was finished"
    assert root_writes[ended[0] + 1 :] == [], "no write followed the shard's end"
    assert (await lease_rows(clients, lease_table))[root]["checkpoint"]["S"] == SHARD_END


async def test_checkpoints_and_finishes_never_overwrite_shard_end_nor_skip_the_owner(
    clients: aws.Clients, moto_endpoint: str
) -> None:
    """The lease table's conditions, on moto (no fault: moto evaluates condition expressions as
    DynamoDB does): a checkpoint from a lease as seen after its finish (no owner) used to pass
    on the counter alone; a checkpoint or finish on a finished lease someone took (a wrong take)
    passed on counter and owner. Both must be refused."""
    name = aws.unique_name("leases")
    async with aiohttp.ClientSession() as http:
        table = LeaseTable(
            AwsJsonClient(moto_endpoint, aws.REGION, AioCredentials("testing", "testing"), http),
            name,
        )
        await table.ensure_exists()
        lease = Lease(stream_arn="arn:stream", shard_id="shardId-1", table="t")
        assert await table.create(lease)
        finished = await table.finish(await table.take(lease, "w1"), 42)
        assert finished.owner is None
        with pytest.raises(LeaseLost):
            await table.checkpoint(finished, "12345", 43)
        taken = await table.take(finished, "w2")
        with pytest.raises(LeaseLost):
            await table.checkpoint(taken, "12345", 43)
        with pytest.raises(LeaseLost):
            await table.finish(taken, 44)
        (row,) = (await table.scan()).leases
        assert row.checkpoint == SHARD_END
        assert row.checkpoint_version == 42
        fresh = Lease(stream_arn="arn:stream", shard_id="shardId-2", table="t")
        assert await table.create(fresh)
        held = await table.take(fresh, "w1")
        held = await table.checkpoint(held, "100", 1)  # an owned, unfinished lease: as before
        with pytest.raises(LeaseLost):
            await table.checkpoint(replace(held, owner="w2"), "200", 2)


# --- 9: initial load in the background ---------------------------------------------------------


async def test_probes_answer_and_tables_stream_during_an_initial_load(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    """The scan of a table with `initial_load: scan` is held 15 s by the fault injector (each
    segment's first Scan request): moto scans a test table at once, while a large table's load
    takes minutes to hours. The HTTP server used to start only after the load (the shipped
    liveness probe restarts a pod whose /healthz does not answer for 40 s: a long load restarted
    in a loop) and no table streamed meanwhile. Now /healthz answers, /readyz says what is
    loading, and another table and the loading table's own stream are indexed during the load."""
    loading = TableShape(aws.unique_name("loading"))
    await clients.dynamodb.create_table(
        TableName=loading.name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    workload = Workload(clients.dynamodb, loading, keys=60, seed=4)
    await workload.populate()  # before the stream: only the scan sees these
    await clients.dynamodb.update_table(
        TableName=loading.name,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    other = aws.unique_name("other")
    await aws.create_stream_table(clients.dynamodb, other)
    other_index = f"{index_name}-other"
    streams_server.faults.inject("Scan", table=loading.name, delay=15.0, times=4)
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": loading.name,
                "index": index_name,
                "initial_load": "scan",
                "index_mappings": {"dynamic": False},
            },
            {"table": other, "index": other_index},
        ],
    )
    async with StreamSync(config) as sync:
        run = asyncio.create_task(sync.run())
        try:
            async with asyncio.timeout(12):  # all of it while the scan is still held up

                async def serving() -> bool:
                    assert not run.done(), run
                    return sync.http is not None and sync.http.port is not None

                await eventually(serving, within=12)
                assert sync.http is not None
                assert sync.http.port is not None
                port = sync.http.port
                assert await get(port, "/healthz") == (200, {"ok": True})

                async def loading_named() -> bool:
                    status, body = await get(port, "/readyz")
                    assert status == 503, body
                    reason = f"initial load of table {loading.name}: about 60 items"
                    return reason in body["reasons"]

                # The probes now answer from before the indexes are prepared: the outer 12 s
                # bound this, not a window from the first answer.
                await eventually(loading_named, within=12)
                await clients.dynamodb.put_item(TableName=other, Item={"pk": {"S": "o1"}})
                await clients.dynamodb.put_item(
                    TableName=loading.name, Item={"pk": {"S": "streamed"}, "n": {"N": "1"}}
                )

                async def streamed() -> bool:
                    return bool(
                        await probe.documents(other_index)
                        and "streamed" in await probe.documents(index_name)
                    )

                await eventually(streamed, within=12)
                assert (await get(port, "/readyz"))[0] == 503, "still loading"

            async def ready() -> bool:
                return (await get(port, "/readyz"))[0] == 200

            await eventually(ready, within=60)
            await wait_until_equal(
                clients.dynamodb,
                probe,
                loading.name,
                index_name,
                lambda item: expected_id(loading, item),
            )
            await wait_until_equal(clients.dynamodb, probe, other, other_index, pk)
        finally:
            sync.stop()
            async with asyncio.timeout(60):
                await asyncio.wait([run])
    run.result()
    await probe.delete_index(other_index)


# --- 10: a bounded stop --------------------------------------------------------------------------


class ClusterSwitch:
    """A TCP proxy in front of a search node that can go down: once down, open connections are
    cut and new ones are accepted and never answered (a cluster that does not respond)."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None
        assert parts.port is not None
        self._upstream = (parts.hostname, parts.port)
        self.down = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.take_down()
        if self._server is not None:
            self._server.close()

    def bring_up(self) -> None:
        self.down = False

    def take_down(self) -> None:
        self.down = True
        for writer in list(self._writers):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.down:
                while await reader.read(65536):  # swallow the request, never answer
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            self._writers.add(up_writer)

            async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await source.read(65536):
                        if self.down:
                            return
                        sink.write(data)
                        await sink.drain()
                sink.close()

            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        except OSError:
            pass
        finally:
            writer.close()


async def test_a_stop_ends_within_the_grace_while_the_cluster_is_down(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    """The cluster stops answering (moto plays no part: a TCP proxy in front of the real node
    goes down, `ClusterSwitch`) while records flow, so the bulk lanes fill and the reader waits
    to hand over more. A stop then used to hang in `sink.close()` (it waits for room in a full
    lane) until Kubernetes killed the pod. Now it ends within shutdown_grace_seconds (plus a
    moment): what was not acknowledged is not checkpointed, and the next owner reads it again,
    so nothing is lost."""
    table = aws.unique_name("stop")
    await aws.create_stream_table(clients.dynamodb, table)
    lease_table = aws.unique_name("leases")
    switch = ClusterSwitch(target.url)
    cluster = await switch.start()
    document = config_document(
        moto_endpoint,
        cluster,
        lease_table,
        [{"table": table, "index": index_name}],
        leases={"worker_id": "first"},
        bulk={"queue_size": 4, "max_in_flight": 1, "max_actions": 2},
        shutdown_grace_seconds=2,
    )
    document["elasticsearch"]["request_timeout_seconds"] = 2
    config: Config = config_from(document)
    grace = config.shutdown_grace_seconds
    try:
        async with StreamSync(config) as sync:
            run = asyncio.create_task(sync.run())
            try:
                assert sync.started is not None
                async with asyncio.timeout(60):
                    await sync.started.wait()
                for i in range(5):
                    await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"a{i}"}})
                await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
                switch.take_down()
                for i in range(30):
                    await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"b{i}"}})

                async def backed_up() -> bool:
                    read = sync.metrics.value("streamsync_records_read_total", table=table)
                    return read >= 10 and any("Elasticsearch" in r for r in sync.readiness())

                await eventually(backed_up, within=30)
                await asyncio.sleep(1)
                asked = time.monotonic()
                sync.stop()
                done, _ = await asyncio.wait([run], timeout=grace + 15)
                took = time.monotonic() - asked
                assert done, f"the stop did not end within {grace + 15} s"
                run.result()
                assert took <= grace + 6, f"the stop took {took:.1f} s"
            finally:
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run
    finally:
        await switch.stop()
    (row,) = (await lease_rows(clients, lease_table)).values()
    assert "leaseOwner" not in row, "released"
    # The next owner reads whatever was not acknowledged: nothing is lost.
    second = make_config(
        moto_endpoint,
        target,
        lease_table,
        [{"table": table, "index": index_name}],
        leases={"worker_id": "second"},
    )
    async with running(second):
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)


async def test_run_waits_for_a_cluster_down_at_start_reporting_not_ready_then_streams(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cluster does not answer when `run` starts (moto plays no part: a TCP proxy in front
    of the real node is down, `ClusterSwitch`), as during a cluster's maintenance. `run` used to
    exit at once (a crash loop under Kubernetes); now it serves the probes (alive, not ready,
    naming the cluster), waits, and once the cluster answers streams what was written
    meanwhile, logging that it recovered."""
    caplog.set_level(logging.INFO, logger="streamsync")
    table = aws.unique_name("waits")
    await aws.create_stream_table(clients.dynamodb, table)
    switch = ClusterSwitch(target.url)
    cluster = await switch.start()
    switch.take_down()
    document = config_document(
        moto_endpoint, cluster, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    document["elasticsearch"]["request_timeout_seconds"] = 1
    try:
        async with StreamSync(config_from(document)) as sync:
            run = asyncio.create_task(sync.run())
            try:

                async def waiting() -> bool:
                    return any("unreachable" in reason for reason in sync.readiness())

                await eventually(waiting, within=30)
                assert sync.http is not None
                assert sync.http.port is not None
                status, body = await get(sync.http.port, "/readyz")
                assert status == 503
                assert any(f"Elasticsearch at {cluster}: unreachable" in r for r in body["reasons"])
                assert await get(sync.http.port, "/healthz") == (200, {"ok": True})
                for i in range(10):
                    await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
                await asyncio.sleep(3)  # a few checks of the cluster, all failing
                assert not run.done(), "run waits rather than exiting"
                assert not sync.started.is_set()
                switch.bring_up()
                await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
                assert sync.readiness() == []
                messages = [r.getMessage() for r in caplog.records]
                assert "recovered" in messages
                assert any(m.startswith("waiting: Elasticsearch at") for m in messages)
                sync.stop()
                await asyncio.wait_for(run, 60)
            finally:
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run
    finally:
        await switch.stop()


async def test_a_stop_while_waiting_for_the_cluster_ends_run_at_once(
    moto_endpoint: str, clients: aws.Clients, index_name: str
) -> None:
    """Waiting for a cluster that never comes (nothing listens on port 9) must not hold up a
    stop (a SIGTERM during maintenance): run returns without error and writes nothing."""
    table = aws.unique_name("waitstop")
    await aws.create_stream_table(clients.dynamodb, table)
    lease_table = aws.unique_name("leases")
    config = make_config(
        moto_endpoint, "http://127.0.0.1:9", lease_table, [{"table": table, "index": index_name}]
    )
    async with StreamSync(config) as sync:
        run = asyncio.create_task(sync.run())

        async def waiting() -> bool:
            return any("unreachable" in reason for reason in sync.readiness())

        await eventually(waiting, within=30)
        sync.stop()
        await asyncio.wait_for(run, 10)
    with pytest.raises(clients.dynamodb.exceptions.ResourceNotFoundException):
        await clients.dynamodb.describe_table(TableName=lease_table)
