"""The README's embedding example, run as written: a program of its own that streams a table
through the README's hook example (loaded from PYTHONPATH, as the README says) into a real
Elasticsearch node, and stops on SIGTERM as the example's service does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import aws
from tests.support.pipeline import config_document, eventually
from tests.support.readme import hook_spec, python_blocks
from tests.support.search import Probe, Target

ROOT = Path(__file__).resolve().parents[2]


def order(order_id: str, status: str, quantity: int, price: str) -> dict[str, object]:
    return {
        "order_id": {"S": order_id},
        "status": {"S": status},
        "quantity": {"N": str(quantity)},
        "price": {"N": price},
    }


def start_service(folder: Path, hooks: Path, log: Path) -> subprocess.Popen[bytes]:
    """`python service.py` in `folder`, as a user runs the example, its output in `log`."""
    # The hooks' folder, as the README says; the checkout under test too, whichever checkout
    # the environment's editable install points at. AWS_* are the suite's dummy credentials.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT)])}
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "service.py"], cwd=folder, env=env, stdout=output, stderr=output
        )


@pytest.fixture
def service() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The example's processes, killed if a test left one running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_the_embedding_example_streams_through_the_hook_example_until_sigterm(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
    service: list[subprocess.Popen[bytes]],
) -> None:
    table = aws.unique_name("readme")
    await aws.create_stream_table(clients.dynamodb, table, hash_key=("order_id", "S"))
    hooks = tmp_path / "hooks"
    module = hooks.joinpath(*hook_spec().partition(":")[0].split(".")).with_suffix(".py")
    module.parent.mkdir(parents=True)
    module.write_text(python_blocks()["hook"])
    document = config_document(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name, "transform": hook_spec()}],
    )
    (tmp_path / "tables.yaml").write_text(yaml.safe_dump(document))
    (tmp_path / "service.py").write_text(python_blocks()["embedding"])
    log = tmp_path / "service.log"
    process = start_service(tmp_path, hooks, log)
    service.append(process)

    ddb = clients.dynamodb
    await ddb.put_item(TableName=table, Item=order("o-3", "placed", 1, "9.99"))
    await ddb.put_item(TableName=table, Item=order("o-2", "draft", 2, "1.00"))
    await ddb.delete_item(TableName=table, Key={"order_id": {"S": "o-3"}})
    await ddb.put_item(TableName=table, Item=order("o-1", "placed", 3, "2.5"))
    expected = {
        "o-1": {"order_id": "o-1", "status": "placed", "quantity": 3, "price": 2.5, "total": 7.5}
    }

    async def indexed() -> bool:
        assert process.poll() is None, log.read_text()
        return await probe.documents(index_name) == expected

    await eventually(indexed)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()
    assert await probe.documents(index_name) == expected, "the drain kept what was indexed"
