"""`streamsync reindex` against the Elasticsearch node and moto: a new index built beside a worker
that writes through the table's alias under a live workload, the alias moved in one step, and
the new index exactly equal to the table afterwards; a new index that drifted is not swapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsync.app import StreamSync
from streamsync.config import Config
from streamsync.engine import open_engine
from streamsync.observability.metrics import Metrics
from streamsync.reindex import lease_table_name, reindex
from tests.support import aws
from tests.support.pipeline import (
    STREAMSYNC,
    config_document,
    make_config,
    running,
    wait_until_equal,
)
from tests.support.search import Probe
from tests.support.workload import TableShape, Workload, expected_id, in_background, writing

OLD_MAPPINGS: dict[str, Any] = {"dynamic": False}
NEW_SETTINGS: dict[str, Any] = {
    "analysis": {"analyzer": {"no_stable": {"type": "standard", "stopwords": ["stable"]}}}
}
NEW_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {"pk": {"type": "text", "analyzer": "no_stable"}},
}
STABLE = [f"stable-{i}" for i in range(300)]
"""Items the workload never touches: a complete index holds every one of them."""


async def aliased_index(probe: Probe, alias: str, index: str) -> None:
    """The index the workers fill today, behind `alias` (as the README's migration leaves it)."""
    await probe.create_index(
        index, {"mappings": OLD_MAPPINGS, "aliases": {alias: {"is_write_index": True}}}
    )


def table_config(moto_endpoint: str, probe: Probe, table: str, index: str, **extra: Any) -> Config:
    return make_config(
        moto_endpoint,
        probe.target,
        aws.unique_name("leases"),
        [
            {
                "table": table,
                "index": index,
                "index_settings": NEW_SETTINGS,
                "index_mappings": NEW_MAPPINGS,
                **extra,
            }
        ],
    )


async def alias_indices(probe: Probe, alias: str) -> list[str]:
    answer = await probe.request("GET", f"/_alias/{alias}", ok=(404,))
    return sorted(answer) if answer and "error" not in answer else []


async def put_stable(ddb: Any, table: str) -> None:
    for start in range(0, len(STABLE), 25):
        puts = [
            {"PutRequest": {"Item": {"pk": {"S": pk}, "kind": {"S": "stable"}}}}
            for pk in STABLE[start : start + 25]
        ]
        await ddb.batch_write_item(RequestItems={table: puts})


async def inserting(ddb: Any, table: str) -> None:
    """New items, one every 50 ms, each written once."""
    for n in itertools.count():
        await ddb.put_item(TableName=table, Item={"pk": {"S": f"new-{n}"}})
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def watching(probe: Probe, alias: str) -> AsyncIterator[list[tuple[str, int]]]:
    """Searches through the alias while the block runs, as a user's searches would (no refresh
    forced): each observation is (the one index the alias named before and after the search,
    how many of the stable items the search found)."""
    seen: list[tuple[str, int]] = []
    query = {"query": {"ids": {"values": STABLE}}}

    async def watch() -> None:
        while True:
            before = await alias_indices(probe, alias)
            answer = await probe.request("POST", f"/{alias}/_count", query)
            after = await alias_indices(probe, alias)
            assert len(before) == 1, f"the alias named {before}"
            assert len(after) == 1, f"the alias named {after}"
            if before == after:
                seen.append((before[0], int(answer["count"])))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.slow
async def test_reindex_under_a_live_workload_swaps_to_an_index_equal_to_the_table(
    clients: aws.Clients, moto_endpoint: str, probe: Probe, index_name: str
) -> None:
    """A worker streams into an alias while a workload puts, updates and deletes; reindex builds
    an index with a new analyzer beside it and moves the alias. Searches through the alias find
    every stable item at every moment (the old index until the swap, then the new one, never
    a half-built one); once the workload stops, the new index equals the table exactly (every
    item at its current image, no deleted item), the old index is still there, and the
    reindex's own lease table is gone. The reindex polls more slowly than the worker, and new
    items keep coming: those written just before the swap are in the new index only if the
    reindex read on past it."""
    alias, old, new = index_name, f"{index_name}-v1", f"{index_name}-v2"
    shape = TableShape(aws.unique_name("reindex"))
    await aws.create_stream_table(clients.dynamodb, shape.name)
    workload = Workload(clients.dynamodb, shape, keys=200, seed=16)
    await workload.populate()
    await put_stable(clients.dynamodb, shape.name)
    await aliased_index(probe, alias, old)
    config = table_config(moto_endpoint, probe, shape.name, alias, initial_load="scan")
    doc_id = lambda item: expected_id(shape, item)  # noqa: E731
    # The reindex's consumer waits seconds after an empty poll, the worker a twentieth of one:
    # at the swap it is behind records the worker already wrote into the old index (new items
    # above all, which nothing writes again), which it must read on for.
    slow = config.polling.model_copy(update={"idle_wait_min_seconds": 4.0, "pickup_seconds": 5.0})
    lagging = config.model_copy(update={"polling": slow})

    async with running(config):
        await wait_until_equal(clients.dynamodb, probe, shape.name, old, doc_id, within=120)
        async with (
            writing(workload, every=0.1),
            in_background(inserting(clients.dynamodb, shape.name)),
            watching(probe, alias) as seen,
        ):
            operations = workload.operations
            async with StreamSync(lagging, serve_http=False) as sync:
                report = await sync.reindex(shape.name, new)
            written_during = workload.operations - operations
        assert report.swapped, report.summary()
        assert report.old_indices == [old]
        await wait_until_equal(clients.dynamodb, probe, shape.name, new, doc_id, within=120)
        async with StreamSync(config, serve_http=False) as sync:
            (through_alias,) = await sync.verify()
        assert not through_alias.drift, through_alias.summary()
        assert through_alias.table_items == through_alias.index_documents > len(STABLE)

    assert written_during > 50, "the workload wrote while the index was rebuilt"
    assert await alias_indices(probe, alias) == [new]
    assert await probe.exists(old), "the old index is kept"
    targets = [index for index, _ in seen]
    assert old in targets, f"the searches saw the old index: {set(targets)}"
    assert new in targets, f"the searches saw the new index: {set(targets)}"
    assert targets == sorted(targets, key=lambda index: index == new), "old, then new for good"
    incomplete = [(index, count) for index, count in seen if count != len(STABLE)]
    assert not incomplete, f"a search through the alias found an incomplete index: {incomplete}"
    mappings = await probe.request("GET", f"/{new}/_mapping")
    assert mappings[new]["mappings"]["properties"]["pk"]["analyzer"] == "no_stable"
    analyzed = await probe.request(
        "POST", f"/{alias}/_analyze", {"field": "pk", "text": "stable-7"}
    )
    assert [token["token"] for token in analyzed["tokens"]] == ["7"], "the new analyzer"
    with pytest.raises(Exception, match="ResourceNotFoundException"):
        await clients.dynamodb.describe_table(
            TableName=lease_table_name(config.leases.table, shape.name)
        )


async def test_reindex_does_not_swap_to_an_index_that_drifted(
    clients: aws.Clients, moto_endpoint: str, probe: Probe, index_name: str
) -> None:
    """Drift is put into the new index just before it is verified (`before_verify`, the test's
    seam: a stream consumer that works leaves none to find): a document the table does not
    have, and a document with another body at a version the stream cannot outrank. Both still
    differ when looked at again, so the alias stays on the old index, the new index is left
    for inspection, and the report names the documents."""
    alias, old, new = index_name, f"{index_name}-v1", f"{index_name}-v2"
    table = aws.unique_name("drift")
    await aws.create_stream_table(clients.dynamodb, table)
    await put_stable(clients.dynamodb, table)
    await aliased_index(probe, alias, old)
    config = table_config(moto_endpoint, probe, table, alias)

    async def drift(index: str) -> None:
        await probe.put(index, "ghost", {"pk": "ghost"})
        changed = {"pk": STABLE[0], "kind": "changed"}
        await probe.put(index, STABLE[0], changed, version=str(2**62), version_type="external")

    async with open_engine(config, Metrics(), "test-reindex", asyncio.Event()) as engine:
        report = await reindex(engine, table, new, before_verify=drift)

    assert not report.swapped
    assert report.drift is not None
    assert (report.drift.extra, report.drift.different) == (1, 1), report.summary()
    assert report.drift.samples["extra"] == ["ghost"]
    assert report.drift.samples["different"] == [STABLE[0]]
    assert await alias_indices(probe, alias) == [old], "the alias did not move"
    assert await probe.exists(new), "the new index is left for inspection"
    assert "was left on" in report.summary()


async def test_a_first_reindex_creates_the_alias(
    clients: aws.Clients, moto_endpoint: str, probe: Probe, index_name: str
) -> None:
    """A name that does not exist yet becomes an alias of the index reindex builds, and the
    reindex's lease table is gone afterwards."""
    table = aws.unique_name("first")
    await aws.create_stream_table(clients.dynamodb, table)
    await put_stable(clients.dynamodb, table)
    config = table_config(moto_endpoint, probe, table, index_name)

    async with StreamSync(config, serve_http=False) as sync:
        report = await sync.reindex(table)
    assert report.swapped
    assert report.old_indices == []
    assert report.new_index.startswith(f"{index_name}-")
    assert await alias_indices(probe, index_name) == [report.new_index]
    assert await probe.count(index_name) == len(STABLE)
    tables = (await clients.dynamodb.list_tables())["TableNames"]
    assert lease_table_name(config.leases.table, table) not in tables, "its lease table is gone"


async def test_reindex_refuses_a_concrete_index_with_the_migration(
    clients: aws.Clients, moto_endpoint: str, probe: Probe, index_name: str, tmp_path: Path
) -> None:
    """A name that is an index is refused by the command with one line naming the one-time
    migration (exit status 1), before anything is created."""
    table = aws.unique_name("concrete")
    await aws.create_stream_table(clients.dynamodb, table)
    await probe.create_index(index_name)
    document = config_document(
        moto_endpoint,
        probe.target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name}],
    )
    (tmp_path / "tables.yaml").write_text(yaml.safe_dump(document))
    command = [STREAMSYNC, "reindex", "--config", str(tmp_path / "tables.yaml"), "--table", table]
    refused = await asyncio.to_thread(
        subprocess.run, [*command, "--index", f"{index_name}-v2"], capture_output=True, text=True
    )
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()[-1:]
    assert line.startswith(f"streamsync: tables[0].index {index_name}: is an index, not an alias")
    assert not await probe.exists(f"{index_name}-v2"), "refused before anything was created"
