"""`streamsync run` and `streamsync validate` as processes: stopping, crashing, restarting, and
bad input, against real search nodes (Elasticsearch; every engine for a stop and restart) and
moto's endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import aws, streams_sim
from tests.support.pipeline import STREAMSYNC, config_document, wait_until_equal
from tests.support.search import Probe, Target, every_engine
from tests.support.workload import TableShape, Workload, expected_id


def write_config(
    path: Path, moto_endpoint: str, cluster: str | Target, leases: str, tables: Any
) -> Path:
    """A tables.yaml for `cluster` (a target, or the URL of an Elasticsearch node)."""
    path.write_text(yaml.safe_dump(config_document(moto_endpoint, cluster, leases, tables)))
    return path


class Process:
    """A `streamsync run` process whose JSON log lines are kept in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._log_file = log.open("a")
        self.popen = subprocess.Popen(
            [STREAMSYNC, "run", "--config", str(config), "--log-format", "json"],
            stdout=self._log_file,
            stderr=self._log_file,
            env={**os.environ},
        )

    def signal(self, signum: int) -> int:
        self.popen.send_signal(signum)
        code = self.popen.wait(timeout=60)
        self._log_file.close()
        return code

    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")
        ]

    def summary(self, table: str) -> float:
        [stopped] = [e for e in self.events() if e["message"] == "stopped"]
        return float(stopped[f"records_read.{table}"])


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()


async def start_and_wait_reading(processes: list[Process], config: Path, log: Path) -> Process:
    process = Process(config, log)
    processes.append(process)
    async with asyncio.timeout(60):
        while not any(e["message"] == "reading shard" for e in process.events()):
            assert process.popen.poll() is None, log.read_text()
            await asyncio.sleep(0.2)
    return process


def stream_records(table: str) -> int:
    return sum(len(shard.records) for shard in streams_sim.stream_of(table).shards)


async def stop_mid_run_and_restart(
    signum: int,
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
    processes: list[Process],
) -> tuple[str, Process, Process]:
    """Stops a `streamsync run` with `signum` while records flow, restarts it once the writes
    are done, and waits until the index equals the table. Returns (table, first, second)."""
    shape = TableShape(aws.unique_name(f"stop{signum}"))
    await aws.create_stream_table(clients.dynamodb, shape.name)
    workload = Workload(clients.dynamodb, shape, keys=50, seed=signum)
    config = write_config(
        tmp_path / "tables.yaml",
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": shape.name, "index": index_name, "index_mappings": {"dynamic": False}}],
    )
    first = await start_and_wait_reading(processes, config, tmp_path / "first.log")
    writes = asyncio.create_task(workload.run(1500, concurrency=2))
    await asyncio.sleep(3)  # mid-run: records flowing
    assert first.signal(signum) == (0 if signum == signal.SIGTERM else -signum)
    await writes
    # After kill -9 the dead worker's lease must expire before it is taken (failover time).
    second = await start_and_wait_reading(processes, config, tmp_path / "second.log")
    await wait_until_equal(
        clients.dynamodb, probe, shape.name, index_name, lambda item: expected_id(shape, item)
    )
    assert second.signal(signal.SIGTERM) == 0
    return shape.name, first, second


@every_engine
async def test_sigterm_then_restart_loses_nothing_and_rereads_nothing(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    table, first, second = await stop_mid_run_and_restart(
        signal.SIGTERM, clients, moto_endpoint, target, probe, index_name, tmp_path, processes
    )
    read_by_first = first.summary(table)
    assert 0 < read_by_first < stream_records(table), "the first run stopped mid-stream"
    assert read_by_first + second.summary(table) == stream_records(table), (
        "after a graceful stop the next run reads exactly what the first did not"
    )


async def test_kill_9_then_restart_loses_nothing(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    table, _, second = await stop_mid_run_and_restart(
        signal.SIGKILL, clients, moto_endpoint, target, probe, index_name, tmp_path, processes
    )
    assert second.summary(table) <= stream_records(table)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STREAMSYNC, *args], capture_output=True, text=True, timeout=120)


async def lease_table_exists(clients: aws.Clients, name: str) -> bool:
    try:
        await clients.dynamodb.describe_table(TableName=name)
    except clients.dynamodb.exceptions.ResourceNotFoundException:
        return False
    return True


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("streamsync: ")]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["run", "validate"])
async def test_bad_input_gives_one_clear_line_and_writes_nothing(
    command: str, clients: aws.Clients, moto_endpoint: str, target: Target, tmp_path: Path
) -> None:
    good = aws.unique_name("good")
    keys_only = aws.unique_name("keysonly")
    no_stream = aws.unique_name("nostream")
    await aws.create_stream_table(clients.dynamodb, good)
    await aws.create_stream_table(clients.dynamodb, keys_only, view_type="KEYS_ONLY")
    await clients.dynamodb.create_table(
        TableName=no_stream,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    leases = aws.unique_name("leases")

    def config(name: str, tables: Any, url: str | None = None) -> str:
        path = write_config(tmp_path / name, moto_endpoint, url or target, leases, tables)
        return str(path)

    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("aws:\n  region: us-east-1\n tables: [\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        Path(config("base.yaml", [{"table": good, "index": "i"}])).read_text() + "tables_extra: 1\n"
    )
    cases = {
        str(malformed): ("malformed.yaml: line 3", "invalid YAML"),
        str(unknown): ("tables_extra: unknown key", "expected one of"),
        config("missing.yaml", [{"table": "no-such-table", "index": "i"}]): (
            "table no-such-table: not found",
            "tables[0].table",
        ),
        config("nostream.yaml", [{"table": no_stream, "index": "i"}]): (
            f"table {no_stream}: its stream is not enabled",
            "StreamViewType=NEW_AND_OLD_IMAGES",
        ),
        config("keysonly.yaml", [{"table": keys_only, "index": "i"}]): (
            "view type KEYS_ONLY carries no new images",
            "NEW_AND_OLD_IMAGES",
        ),
    }
    if command == "validate":  # run waits for an unreachable cluster instead (test_robustness)
        nocluster = config("nocluster.yaml", [{"table": good, "index": "i"}], "http://127.0.0.1:9")
        cases[nocluster] = (
            "Elasticsearch at http://127.0.0.1:9: unreachable",
            "check elasticsearch.hosts",
        )
    for path, needles in cases.items():
        result = run_cli(command, "--config", path)
        line = one_line(result)
        assert result.returncode != 0, line
        for needle in needles:
            assert needle in line, (path, line)
    assert not await lease_table_exists(clients, leases), "nothing is written on bad input"


async def test_validate_accepts_a_good_configuration(
    clients: aws.Clients, moto_endpoint: str, target: Target, tmp_path: Path
) -> None:
    table = aws.unique_name("valid")
    await aws.create_stream_table(clients.dynamodb, table)
    path = write_config(
        tmp_path / "tables.yaml",
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": "valid"}],
    )
    result = run_cli("validate", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "ok (1 table(s), cluster reachable)" in result.stdout
