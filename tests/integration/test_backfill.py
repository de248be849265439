"""`streamsync backfill` and `streamsync verify` against real search nodes (Elasticsearch; every
engine for verify/repair and a backfill beside a live run) and moto.

moto's Scan supports Segment/TotalSegments; the front in tests/support/moto_server.py counts the
Scan requests per segment, which shows a resumed backfill skipping finished segments.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import aws
from tests.support.moto_server import Request, StreamsServer
from tests.support.pipeline import (
    STREAMSYNC,
    config_document,
    make_config,
    running,
    wait_until_equal,
)
from tests.support.search import Probe, Target, every_engine
from tests.support.workload import TableShape, Workload, expected_id, random_item


async def fill(ddb: Any, table: str, count: int) -> None:
    """Writes `count` items with BatchWriteItem, several batches at once."""
    import random

    rng = random.Random(count)
    shape = TableShape(table)

    async def batch(start: int) -> None:
        requests = [
            {"PutRequest": {"Item": random_item(rng, shape, {"pk": {"S": f"item-{n:06d}"}})}}
            for n in range(start, min(start + 25, count))
        ]
        await ddb.batch_write_item(RequestItems={table: requests})

    starts = list(range(0, count, 25))
    for group in range(0, len(starts), 8):
        await asyncio.gather(*(batch(s) for s in starts[group : group + 8]))


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


async def segment_progress(clients: aws.Clients, lease_table: str) -> dict[int, dict[str, Any]]:
    try:
        items = (await clients.dynamodb.scan(TableName=lease_table))["Items"]
    except clients.dynamodb.exceptions.ResourceNotFoundException:
        return {}
    return {
        int(i["segment"]["N"]): {"done": i["done"]["BOOL"], "items": int(i["items"]["N"])}
        for i in items
        if i.get("kind", {}).get("S") == "backfill"
    }


async def test_backfill_is_interrupted_by_kill_9_and_resumes_without_rescanning(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    """20,000 items written before anything read the stream; a backfill (8 segments, rate
    limited so it takes a while) is killed with -9 at about half way, then resumed: it finishes
    the index without scanning the finished segments again, and its progress shows in the logs
    as it goes."""
    table = aws.unique_name("backfill")
    await aws.create_stream_table(clients.dynamodb, table)
    await fill(clients.dynamodb, table, 20_000)
    lease_table = aws.unique_name("leases")
    document = config_document(
        moto_endpoint,
        target,
        lease_table,
        [{"table": table, "index": index_name, "index_mappings": {"dynamic": False}}],
    )
    config = write_config(tmp_path / "tables.yaml", document)
    scans: list[int] = []

    def count_scans(request: Request) -> None:
        if request.action == "Scan" and request.table == table:
            scans.append(int(request.body.get("Segment", -1)))

    streams_server.faults.observers.append(count_scans)
    command = [STREAMSYNC, "backfill", "--config", str(config), "--segments", "8"]
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(  # noqa: ASYNC220
        [*command, "--rate-limit", "2000", "--log-format", "json"], stdout=log, stderr=log
    )

    async def halfway() -> bool:
        progress = await segment_progress(clients, lease_table)
        return sum(p["done"] for p in progress.values()) >= 3

    async with asyncio.timeout(120):
        while not await halfway():
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            await asyncio.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    log.close()
    done_before = {
        s for s, p in (await segment_progress(clients, lease_table)).items() if p["done"]
    }
    assert 3 <= len(done_before) < 8, "interrupted part way"
    progress_lines = [
        json.loads(line)
        for line in (tmp_path / "first.log").read_text().splitlines()
        if '"backfill progress"' in line
    ]
    assert len(progress_lines) >= 2, "progress is logged as it goes"
    assert progress_lines[-1]["items"] > progress_lines[0]["items"]
    assert progress_lines[0]["expected_items"] == 20_000

    scans.clear()
    resumed = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not set(scans) & done_before, "finished segments are not scanned again"
    assert set(scans) == set(range(8)) - done_before
    await wait_until_equal(
        clients.dynamodb, probe, table, index_name, lambda item: str(item["pk"]["S"]), within=120
    )


@every_engine
async def test_backfill_beside_a_live_run_under_updates_and_deletes(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    """Items written before the stream was read; then `run` (from the stream's tip) and a
    backfill go at once while a workload updates and deletes: no scanned image replaces a newer
    stream write, no delete is undone, and the index ends equal to the table."""
    shape = TableShape(aws.unique_name("both"))
    await aws.create_stream_table(clients.dynamodb, shape.name)
    workload = Workload(clients.dynamodb, shape, keys=400, seed=9)
    await workload.populate()
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": shape.name,
                "index": index_name,
                "start_position": "LATEST",
                "index_mappings": {"dynamic": False},
            }
        ],
    )
    from streamsync import StreamSync

    async with running(config), StreamSync(config, serve_http=False) as backfiller:
        writes = asyncio.create_task(workload.run(1500, concurrency=3))
        counts = await backfiller.backfill(segments=4, rate_limit=300)
        await writes
        assert counts[shape.name] >= 300
        await wait_until_equal(
            clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
        )


async def test_the_progress_line_updates_on_a_terminal(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    index_name: str,
    tmp_path: Path,
) -> None:
    table = aws.unique_name("terminal")
    await aws.create_stream_table(clients.dynamodb, table)
    await fill(clients.dynamodb, table, 3000)
    config = write_config(
        tmp_path / "tables.yaml",
        config_document(
            moto_endpoint,
            target,
            aws.unique_name("leases"),
            [{"table": table, "index": index_name}],
        ),
    )

    def run_on_a_terminal() -> bytes:
        pid, fd = pty.fork()
        if pid == 0:  # the child: stdout and stderr are the terminal
            os.execv(
                STREAMSYNC,
                [STREAMSYNC, "backfill", "--config", str(config), "--rate-limit", "1000"],
            )
        output = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        os.waitpid(pid, 0)
        return output

    output = (await asyncio.to_thread(run_on_a_terminal)).decode(errors="replace")
    updates = [part for part in output.split("\r") if part.startswith(f"backfill {table}:")]
    assert len(updates) >= 3, output[-2000:]
    assert "/3,000 items" in updates[-1]
    assert "items/s, ETA" in updates[-1]
    assert f"backfill {table}: 3000 items indexed" in output


@every_engine
async def test_verify_finds_injected_drift_and_repair_fixes_it(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    """Drift injected straight into the index (a document deleted, one altered, one extra) is
    found and sampled by `verify` (exit 1, --json too); `verify --repair` fixes it; a second
    `verify` is clean (exit 0)."""
    shape = TableShape(aws.unique_name("verify"), range_key="sk")
    await aws.create_stream_table(clients.dynamodb, shape.name, range_key=("sk", "N"))
    workload = Workload(clients.dynamodb, shape, keys=300, seed=4)
    await workload.populate()
    document = config_document(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
    )
    config = write_config(tmp_path / "tables.yaml", document)
    command = [STREAMSYNC, "verify", "--config", str(config)]

    async def cli(*extra: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [*command, *extra], capture_output=True, text=True, timeout=300
        )

    backfill = await asyncio.to_thread(
        subprocess.run,
        [STREAMSYNC, "backfill", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert backfill.returncode == 0, backfill.stderr
    clean = await cli()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "missing 0, different 0, extra 0" in clean.stdout

    # Per-document writes, not scripts or _delete_by_query (OpenSearch 2.x's node has neither).
    hits = await probe.search(index_name, {"size": 3, "sort": ["_doc"]})
    ids = sorted(hit["_id"] for hit in hits)
    deleted, altered = ids[0], ids[1]
    await probe.delete(index_name, deleted)
    await probe.put(index_name, altered, {"pk": "tampered"})  # internal versioning: replaced
    await probe.put(index_name, "ghost|1", {"pk": "ghost", "sk": 1})
    await probe.refresh(index_name)

    found = await cli("--json")
    assert found.returncode == 1
    [report] = json.loads(found.stdout)
    assert (report["missing"], report["different"], report["extra"]) == (1, 1, 1)
    assert report["samples"] == {"missing": [deleted], "different": [altered], "extra": ["ghost|1"]}
    assert report["table_items"] == 300

    repaired = await cli("--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired 3" in repaired.stdout
    again = await cli()
    assert again.returncode == 0, again.stdout
    assert "missing 0, different 0, extra 0" in again.stdout


async def test_run_with_initial_load_scan_indexes_what_the_stream_never_carried(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    """Items written before the table had a stream are not in the stream at all; `run` with
    `initial_load: scan` leases the new stream's shards at TRIM_HORIZON, backfills, then
    streams, so those items and every later change end in the index."""
    shape = TableShape(aws.unique_name("initial"))
    await clients.dynamodb.create_table(
        TableName=shape.name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    workload = Workload(clients.dynamodb, shape, keys=200, seed=12)
    await workload.populate()
    await clients.dynamodb.update_table(
        TableName=shape.name,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": shape.name,
                "index": index_name,
                "initial_load": "scan",
                "index_mappings": {"dynamic": False},
            }
        ],
    )
    async with running(config):
        await workload.run(300, concurrency=2)
        await wait_until_equal(
            clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
        )
    assert await probe.count(index_name) > 150


async def test_backfill_dead_letters_are_one_per_item_and_replayed_each_on_its_own(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every scanned item has sequence number 0 in shard `backfill`: the dead letters of three
    items the hook cannot handle must be three letters (they were one, each overwriting the
    last while the segment checkpointed past it). Once the hook is fixed, the replay resolves
    each by its item as it is now: one deleted since (its document stays absent), one fine
    (indexed), one whose new value the mapping refuses (kept, the only letter left)."""
    table = aws.unique_name("poisoned")
    await aws.create_stream_table(clients.dynamodb, table)
    for key, qty in [("fine-1", 1), ("bad-1", 2), ("bad-2", 3), ("bad-3", 4), ("fine-2", 5)]:
        item = {"pk": {"S": key}, "qty": {"N": str(qty)}}
        if key.startswith("bad"):
            item["explode"] = {"BOOL": True}
        await clients.dynamodb.put_item(TableName=table, Item=item)
    dead = f"{index_name}-dead"
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": table,
                "index": index_name,
                "transform": "tests.support.hooks:explode_unless_fixed",
                "index_mappings": {"properties": {"qty": {"type": "long"}}},
            }
        ],
        dead_letters={"index": dead},
    )
    from streamsync import StreamSync

    async with StreamSync(config, serve_http=False) as sync:
        assert await sync.backfill(segments=2) == {table: 5}
    letters = await probe.documents(dead)
    keys = sorted(letter["record"]["dynamodb"]["Keys"]["pk"]["S"] for letter in letters.values())
    assert keys == ["bad-1", "bad-2", "bad-3"]
    assert {letter["shard"] for letter in letters.values()} == {"backfill"}

    await clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "bad-1"}})
    await clients.dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": "bad-2"}},
        UpdateExpression="SET qty = :q",
        ExpressionAttributeValues={":q": {"S": "many"}},
    )
    monkeypatch.setenv("HOOK_FIXED", "1")
    async with StreamSync(config, serve_http=False) as sync:
        report = await sync.replay_dead_letters(dry_run=False)

    assert (report.total, report.replayed, report.still_failing) == (3, 2, 1)
    [left] = (await probe.documents(dead)).values()
    assert left["record"]["dynamodb"]["Keys"] == {"pk": {"S": "bad-2"}}
    indexed = await probe.documents(index_name)
    assert sorted(indexed) == ["bad-3", "fine-1", "fine-2"]
    assert indexed["bad-3"] == {"pk": "bad-3", "qty": 4, "explode": True}
