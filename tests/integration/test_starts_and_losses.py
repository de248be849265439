"""Where a shard's reading starts, and what happens around lost records (issue 13, items 2, 8
and 11), against moto's stream endpoint and the real search node.

moto never trims, splits or ages a shard; tests/support/streams_sim.py does, in-process: it
trims records (`trim`), splits shards (`split`, with `age` back-dating the children's ids as if
the split happened a day ago, since a test cannot wait 24 hours) and injects stream records with
chosen creation times (`inject_raw`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import aws, streams_sim
from tests.support.pipeline import (
    STREAMSYNC,
    config_document,
    eventually,
    make_config,
    running,
)
from tests.support.search import Probe, Target

DAY = 24 * 3600


async def put(ddb: Any, table: str, key: str, value: str = "v") -> None:
    await ddb.put_item(TableName=table, Item={"pk": {"S": key}, "value": {"S": value}})


async def lease_items(clients: aws.Clients, lease_table: str) -> list[dict[str, Any]]:
    items = (await clients.dynamodb.scan(TableName=lease_table))["Items"]
    return [item for item in items if "shardId" in item]


async def test_a_latest_start_holds_across_a_release_before_any_record(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    """start_position LATEST: a first worker leases the shard, reads nothing and stops (a
    rolling restart). A change made while nobody runs must still be indexed by the next worker,
    and a change from before the first start must not: the start is a moment kept in the
    lease, not a position each reader resolves anew."""
    table = aws.unique_name("latest")
    await aws.create_stream_table(clients.dynamodb, table)
    await put(clients.dynamodb, table, "before-start")
    await asyncio.sleep(1.1)  # records carry whole seconds: the start is in a later one
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name, "start_position": "LATEST"}],
    )
    async with running(config) as sync:
        await eventually(lambda: _holds(sync))
    await put(clients.dynamodb, table, "while-nobody-runs")
    async with running(config):
        await put(clients.dynamodb, table, "after-restart")

        async def both_indexed() -> bool:
            found = await probe.documents(index_name)
            return {"while-nobody-runs", "after-restart"} <= set(found)

        await eventually(both_indexed)
    assert set(await probe.documents(index_name)) == {"while-nobody-runs", "after-restart"}


async def _holds(sync: Any) -> bool:
    return bool(sync.coordinator is not None and sync.coordinator.held)


@pytest.mark.parametrize("on_trimmed", ["fail", "restart_from_trim_horizon"])
async def test_a_child_trimmed_before_its_parent_finished_is_a_loss(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
    on_trimmed: str,
) -> None:
    """A shard splits while its reader is away; the children outlive the stream's retention
    before they are read (the split is back-dated a day) and their oldest records are trimmed.
    Opened at TRIM_HORIZON, a child never raises TrimmedDataAccessException: the loss must still
    go through the on_trimmed policy, its log line and its metric."""
    caplog.set_level(logging.INFO, logger="streamsync")
    table = aws.unique_name("agedchild")
    await aws.create_stream_table(clients.dynamodb, table)
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name, "on_trimmed": on_trimmed}],
    )
    await put(clients.dynamodb, table, "parent-record")
    async with running(config) as sync:
        await eventually(lambda: _indexed(probe, index_name, 1))
    sim = streams_sim.stream_of(table)
    [parent] = sim.open_shards()
    children = sim.split(parent.shard_id, 2, age=DAY + 3600)
    for n in range(20):
        await put(clients.dynamodb, table, f"child-{n}")
    for child in children:
        sim.trim(child, len(sim.shard(child).records) // 2)
    kept = {
        record["dynamodb"]["Keys"]["pk"]["S"]
        for child in children
        for _, record in sim.shard(child).records
    }
    async with running(config) as sync:
        await eventually(
            lambda: _value(sync, "streamsync_trimmed_shards_total", table=table, expect=2)
        )
        if on_trimmed == "restart_from_trim_horizon":
            await eventually(lambda: _indexed(probe, index_name, 1 + len(kept)))
        else:
            await asyncio.sleep(2)  # several taker cycles: nobody reads a failed lease
    lost = [r for r in caplog.records if r.getMessage().startswith("records lost")]
    assert len(lost) == 2
    assert all(r.levelname == "ERROR" for r in lost)
    assert all("24 h retention" in r.getMessage() for r in lost)
    documents = set(await probe.documents(index_name))
    if on_trimmed == "fail":
        assert documents == {"parent-record"}, "nothing after the loss is indexed silently"
        failed = [i for i in await lease_items(clients, config.leases.table) if "failure" in i]
        assert len(failed) == 2
    else:
        assert documents == {"parent-record", *kept}


async def _indexed(probe: Probe, index: str, count: int) -> bool:
    return await probe.count(index) == count


async def _value(sync: Any, name: str, expect: float, **labels: str) -> bool:
    return bool(sync.metrics.value(name, **labels) == expect)


@pytest.mark.slow
async def test_records_read_again_after_a_loss_are_numbered_no_lower(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    """on_trimmed: restart_from_trim_horizon. A worker finds its checkpoint trimmed away,
    restarts at the horizon and indexes two records created in one second (x=a, then z), and
    is killed before it checkpoints. Both are trimmed too before the next worker reads, which
    finds x=b, written in the same second after them. Numbered from the checkpoint, x=b would
    get the version the first worker gave x=a and be refused as stale; numbered from a floor the
    first worker wrote before numbering anything, and the next one's own higher floor, it wins.
    Records are injected into the simulated stream with chosen creation times."""
    table = aws.unique_name("renumber")
    await aws.create_stream_table(clients.dynamodb, table)
    document = config_document(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name, "on_trimmed": "restart_from_trim_horizon"}],
        checkpoint_interval_seconds=3600,  # nothing is checkpointed before the kill
        leases={"failover_seconds": 3},
    )
    config_file = tmp_path / "tables.yaml"
    config_file.write_text(yaml.safe_dump(document))
    await put(clients.dynamodb, table, "first")
    graceful = make_config(moto_endpoint, target, document["leases"]["table"], document["tables"])
    async with running(graceful):  # a graceful stop checkpoints "first"
        await eventually(lambda: _indexed(probe, index_name, 1))
    sim = streams_sim.stream_of(table)
    [shard] = sim.open_shards()
    await put(clients.dynamodb, table, "gone")  # right after the checkpoint...
    sim.trim(shard.shard_id, 2)  # ...and trimmed with it: the checkpoint points into the gap
    one_second = 1_790_000_000.25
    for key, value in (("x", "a"), ("z", "z")):
        _inject(sim, shard.shard_id, key, value, one_second)
    await _run_until(
        config_file, probe, index_name, lambda docs: {"x", "z"} <= set(docs), kill=True
    )
    _inject(sim, shard.shard_id, "x", "b", one_second + 0.5)
    sim.trim(shard.shard_id, 2)  # x=a and z: only x=b is left

    def x_is_b(docs: dict[str, Any]) -> bool:
        return docs.get("x") == {"pk": "x", "value": "b"}

    await _run_until(config_file, probe, index_name, x_is_b, kill=False)


def _inject(sim: Any, shard_id: str, key: str, value: str, created: float) -> None:
    sim.inject_raw(
        shard_id,
        {
            "eventName": "INSERT",
            "dynamodb": {
                "Keys": {"pk": {"S": key}},
                "NewImage": {"pk": {"S": key}, "value": {"S": value}},
                "ApproximateCreationDateTime": created,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
    )


async def _run_until(config_file: Path, probe: Probe, index: str, done: Any, *, kill: bool) -> None:
    log = (config_file.parent / "run.log").open("a")
    process = subprocess.Popen(  # noqa: ASYNC220
        [STREAMSYNC, "run", "--config", str(config_file)], stdout=log, stderr=log
    )
    try:

        async def reached() -> bool:
            return bool(done(await probe.documents(index)))

        await eventually(reached, within=60)
        await asyncio.sleep(1)
    finally:
        if kill:
            os.kill(process.pid, signal.SIGKILL)
        else:
            process.terminate()
        await asyncio.to_thread(process.wait, 60)
        log.close()
