"""Metrics, health, readiness, traces, status, secrets and the demo, against the real services.

Old records (for a visible iterator age) are injected raw into the simulated stream and a
GetRecords delay is injected in front of moto (tests/support/streams_sim.py, moto_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import aws, streams_sim
from tests.support.elasticsearch import ROOT, EsNode
from tests.support.moto_server import StreamsServer
from tests.support.pipeline import (
    STREAMSYNC,
    config_document,
    config_from,
    eventually,
    make_config,
    pk,
    running,
    wait_until_equal,
)
from tests.support.search import Probe, Target


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def get(port: int, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.json()


async def test_metrics_move_as_records_flow(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    table = aws.unique_name("metrics")
    await aws.create_stream_table(clients.dynamodb, table)
    config = make_config(
        moto_endpoint, target, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    async with running(config) as sync:
        assert sync.http is not None
        assert sync.http.port is not None
        port = sync.http.port
        for i in range(20):
            await clients.dynamodb.put_item(
                TableName=table, Item={"pk": {"S": f"k{i}"}, "n": {"N": str(i)}}
            )
        # Indexed before the delete is written: read in one page, the bulk indexer would fold
        # k0's insert into its delete (one action sent, so one fewer counted as indexed).
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
        await clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "k0"}})
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
        t = (("table", table),)

        async def all_counted() -> bool:
            # The worker counts a bulk's actions once it has the answer, which may be a moment
            # after Elasticsearch shows their effect; every counted action has one lag sample.
            sample = await scrape(port)
            return sample.get(("streamsync_end_to_end_lag_seconds_count", t)) == 21

        await eventually(all_counted, within=10)
        first = await scrape(port)
        assert first[("streamsync_records_read_total", t)] == 21
        assert first[("streamsync_documents_indexed_total", t)] == 20
        assert first[("streamsync_documents_deleted_total", t)] == 1
        assert first[("streamsync_get_records_calls_total", t)] >= 1
        assert first[("streamsync_leases_held", ())] == 1
        assert first[("streamsync_shards", (("state", "open"), ("table", table)))] == 1
        assert first[("streamsync_end_to_end_lag_seconds_count", t)] == 21
        assert first[("streamsync_bulk_request_seconds_count", ())] >= 1
        assert ("streamsync_queue_actions", ()) in first

        # Records written a minute ago, and GetRecords held up after reading them: the shard's
        # iterator age shows how far behind its reader is.
        shard = streams_sim.stream_of(table).open_shards()[0].shard_id
        old = time.time() - 60
        for i in range(3):
            streams_sim.stream_of(table).inject_raw(
                shard,
                {
                    "eventName": "INSERT",
                    "dynamodb": {
                        "Keys": {"pk": {"S": f"old{i}"}},
                        "NewImage": {"pk": {"S": f"old{i}"}},
                        "ApproximateCreationDateTime": old,
                    },
                },
            )
        streams_server.faults.inject("GetRecords", delay=4, table=table, times=1)
        await asyncio.sleep(1.5)
        streams_server.faults.inject("GetRecords", delay=4, table=table, times=1)

        async def behind() -> bool:
            sample = await scrape(port)
            age = sample.get(("streamsync_iterator_age_seconds", (("shard", shard), *t)), 0)
            worst = sample.get(("streamsync_iterator_age_max_seconds", t), 0)
            return bool(age >= 59 and worst >= 59)

        await eventually(behind, within=20)

        async def caught_up() -> bool:
            sample = await scrape(port)
            return sample.get(("streamsync_iterator_age_seconds", (("shard", shard), *t))) == 0

        await eventually(caught_up, within=30)
        last = await scrape(port)
        assert last[("streamsync_records_read_total", t)] == 24
        assert await get(port, "/healthz") == (200, {"ok": True})
        assert await get(port, "/readyz") == (200, {"ready": True, "reasons": []})


async def test_readyz_reports_not_ready_while_elasticsearch_is_down(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str
) -> None:
    table = aws.unique_name("ready")
    await aws.create_stream_table(clients.dynamodb, table)
    config = make_config(
        moto_endpoint, target, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    node = EsNode(os.environ["STREAMSYNC_TEST_ES_NODE"])
    es_port = urlsplit(target.url).port
    assert es_port is not None
    async with running(config) as sync:
        assert sync.http is not None
        assert sync.http.port is not None
        port = sync.http.port
        await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
        await asyncio.to_thread(node.stop)
        try:
            await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}})

            async def not_ready() -> bool:
                status, body = await get(port, "/readyz")
                return status == 503 and any("Elasticsearch" in r for r in body["reasons"])

            await eventually(not_ready, within=30)
            assert (await get(port, "/healthz"))[0] == 200, "alive, only not ready"
            assert (await scrape(port))[("streamsync_ready", ())] == 0
        finally:
            await asyncio.to_thread(node.start, es_port)

        async def ready() -> bool:
            return (await get(port, "/readyz"))[0] == 200

        await eventually(ready, within=60)
        assert (await scrape(port))[("streamsync_ready", ())] == 1
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)


async def test_a_traced_item_is_logged_through_every_stage(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    index_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streamsync")
    table = aws.unique_name("trace")
    await aws.create_stream_table(clients.dynamodb, table)
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name, "trace_ids": ["watched"]}],
        checkpoint_interval_seconds=0.2,
    )
    async with running(config):
        for key in ("other", "watched"):
            await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": key}})

        async def checkpointed() -> bool:
            return any(getattr(r, "stage", None) == "checkpointed" for r in caplog.records)

        await eventually(checkpointed)
    traced = [r for r in caplog.records if r.name == "streamsync.trace"]
    assert [r.stage for r in traced] == [  # type: ignore[attr-defined]
        "read",
        "transformed",
        "queued",
        "indexed",
        "checkpointed",
    ]
    assert {r.id for r in traced} == {"watched"}  # type: ignore[attr-defined]
    elapsed = [r.elapsed_ms for r in traced]  # type: ignore[attr-defined]
    assert elapsed == sorted(elapsed)
    assert all(r.table == table and r.sequence_number for r in traced)  # type: ignore[attr-defined]


async def test_no_secret_appears_in_logs_errors_or_status(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    """The Elasticsearch API key and password (from the environment) and the AWS secret key go
    through a run with debug logs, a graceful stop, a status, and failing validations; none of
    them appears in any output."""
    table = aws.unique_name("secrets")
    await aws.create_stream_table(clients.dynamodb, table)
    secrets = {
        "STREAMSYNC_ES_API_KEY": "es-api-key-Q7xv-DO-NOT-LOG",
        "ES_PASSWORD": "es-password-H3kd-DO-NOT-LOG",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-Zp4n-DO-NOT-LOG",
    }
    env = {**os.environ, **secrets}
    document = config_document(
        moto_endpoint, target, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    config = tmp_path / "tables.yaml"
    config.write_text(yaml.safe_dump(document))
    with_password = tmp_path / "password.yaml"
    bad = dict(
        document,
        elasticsearch={
            "hosts": ["http://127.0.0.1:9"],
            "username": "elastic",
            "password": "${ES_PASSWORD}",
        },
    )
    with_password.write_text(yaml.safe_dump(bad))
    outputs: list[str] = []

    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(  # noqa: ASYNC220
        [STREAMSYNC, "run", "--config", str(config), "--log-level", "DEBUG"],
        stdout=log,
        stderr=log,
        env=env,
    )
    try:
        for i in range(10):
            await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
        status = await asyncio.to_thread(
            subprocess.run,
            [STREAMSYNC, "status", "--config", str(config), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        assert [(r["table"], r["state"]) for r in rows] == [(table, "reading")]
        outputs += [status.stdout, status.stderr]
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0
        log.close()
    outputs.append((tmp_path / "run.log").read_text())
    password_env = {k: v for k, v in env.items() if k != "STREAMSYNC_ES_API_KEY"}
    unreachable = "Elasticsearch at http://127.0.0.1:9: unreachable"
    result = await asyncio.to_thread(
        subprocess.run,
        [STREAMSYNC, "validate", "--config", str(with_password), "--log-level", "DEBUG"],
        capture_output=True,
        text=True,
        env=password_env,
        timeout=60,
    )
    assert result.returncode == 1
    assert unreachable in result.stderr
    outputs += [result.stdout, result.stderr]
    # run waits for the cluster, logging why, until stopped.
    waiting_log = tmp_path / "waiting.log"
    with waiting_log.open("w") as log:
        process = subprocess.Popen(  # noqa: ASYNC220
            [STREAMSYNC, "run", "--config", str(with_password), "--log-level", "DEBUG"],
            stdout=log,
            stderr=log,
            env=password_env,
        )
        try:

            async def waiting() -> bool:
                return unreachable in waiting_log.read_text()

            await eventually(waiting, within=60)
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 60) == 0
    outputs.append(waiting_log.read_text())
    everything = "\n".join(outputs)
    assert len(everything) > 1000, "the runs did log"
    for name, value in secrets.items():
        assert value not in everything, f"{name} leaked"


async def test_status_shows_leases_per_table(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    table = aws.unique_name("status")
    await aws.create_stream_table(clients.dynamodb, table)
    sim = streams_sim.stream_of(table)
    root = sim.open_shards()[0].shard_id
    await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    sim.split(root, 2)
    document = config_document(
        moto_endpoint, target, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    config = tmp_path / "tables.yaml"
    config.write_text(yaml.safe_dump(document))
    async with running(config_from(document)):
        await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)

        async def children_reading() -> bool:
            result = await asyncio.to_thread(
                subprocess.run,
                [STREAMSYNC, "status", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            lines = result.stdout.splitlines()
            return len(lines) == 4 and sum("reading" in line for line in lines) == 2

        await eventually(children_reading)
    result = await asyncio.to_thread(
        subprocess.run,
        [STREAMSYNC, "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    header, *lines = result.stdout.splitlines()
    assert header.split() == [
        "table",
        "shard",
        "parent",
        "owner",
        "state",
        "checkpoint",
        "alive",
        "lag",
    ]
    root_line = next(line for line in lines if line.split()[1] == root)
    assert "finished" in root_line
    assert all("free" in line for line in lines if line.split()[1] != root), "released on stop"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["elasticsearch", "opensearch"])
def test_make_demo_runs_to_the_end(engine: str) -> None:
    """`make demo` (and `make demo ENGINE=opensearch`) on its own ports (its own search node and
    moto server), end to end."""
    ports = {"ES_PORT": str(_free_port()), "MOTO_PORT": str(_free_port())}
    env = {**os.environ, **ports, "ENGINE": engine}
    result = subprocess.run(
        ["make", "-s", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "demo: writing items to DynamoDB: 200/200" in out
    assert "demo: all 200 items are in the index demo-orders" in out
    assert "'item': 'blue teapot'" in out
    assert "demo: the index followed: 195 documents" in out
    assert "demo: streamsync exited with 0" in out
    with (
        contextlib.suppress(ConnectionError),
        socket.create_connection(("127.0.0.1", int(env["ES_PORT"])), timeout=1),
    ):
        raise AssertionError(f"the demo left {engine} running")
    assert f"starting the local services ({engine} and a DynamoDB endpoint)" in out
