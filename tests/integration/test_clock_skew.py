"""Backfill and verify version what they scan by this host's clock, which may run ahead of or
behind DynamoDB's: a change made after the scan began must still win (issue 13, item 4).

The host clock is shifted for streamsync's backfill and verify modules only (their `time`
module is replaced by one whose `time()` is off by the shift); DynamoDB (moto) keeps the real
time, so the stream records carry real creation times, as they would on AWS.
"""

from __future__ import annotations

import time
import types
from typing import Any

import pytest

from streamsync import backfill as backfill_module
from streamsync import verify as verify_module
from streamsync.app import StreamSync
from tests.support import aws
from tests.support.pipeline import make_config, pk, running, wait_until_equal
from tests.support.search import Probe, Target

SHIFTS = [120.0, -120.0]  # two minutes ahead, two minutes behind


def shifted_clock(monkeypatch: pytest.MonkeyPatch, module: Any, seconds: float) -> None:
    clock = types.SimpleNamespace(
        time=lambda: time.time() + seconds, monotonic=time.monotonic, sleep=time.sleep
    )
    monkeypatch.setattr(module, "time", clock)


@pytest.mark.parametrize("shift", SHIFTS, ids=["ahead", "behind"])
async def test_a_change_after_a_backfill_wins_whatever_the_host_clock(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    monkeypatch: pytest.MonkeyPatch,
    shift: float,
) -> None:
    """A backfill scans version 1 of every item; then every item changes (version 2, in the
    stream); streaming afterwards must leave version 2 in the index. With the host two minutes
    ahead and no margin, the scanned images would outrank the newer changes: refused as stale."""
    table = aws.unique_name("skew")
    await aws.create_stream_table(clients.dynamodb, table)
    for n in range(20):
        await clients.dynamodb.put_item(
            TableName=table, Item={"pk": {"S": f"k{n}"}, "v": {"N": "1"}}
        )
    config = make_config(
        moto_endpoint, target, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    shifted_clock(monkeypatch, backfill_module, shift)
    async with StreamSync(config) as sync:
        assert await sync.backfill() == {table: 20}
    for n in range(20):
        await clients.dynamodb.put_item(
            TableName=table, Item={"pk": {"S": f"k{n}"}, "v": {"N": "2"}}
        )
    async with running(config):
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)


@pytest.mark.parametrize("shift", SHIFTS, ids=["ahead", "behind"])
async def test_an_item_recreated_after_a_repair_delete_stays(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    monkeypatch: pytest.MonkeyPatch,
    shift: float,
) -> None:
    """`verify --repair` deletes a document the table lacks; the item is then created in the
    table; streaming must index it. With the host ahead and the delete at the current second,
    the delete would outrank the creation and the item would stay missing."""
    table = aws.unique_name("skew")
    await aws.create_stream_table(clients.dynamodb, table)
    await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "kept"}})
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name}],
    )
    await probe.create_index(index_name)
    await probe.put(index_name, "kept", {"pk": "kept"}, version="1", version_type="external")
    await probe.put(index_name, "ghost", {"pk": "ghost"}, version="1", version_type="external")
    shifted_clock(monkeypatch, verify_module, shift)
    async with StreamSync(config) as sync:
        [report] = await sync.verify(repair=True)
    assert (report.extra, report.repaired) == (1, 1)
    await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "ghost"}})
    async with running(config):
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
