"""The docker-compose try-out's table: its one-shot service's script, run as the container runs
it (the same botocore) against the moto server, makes a table that `streamsync validate` accepts
with the try-out's own tables.yaml. There is no Docker here; the compose wiring around it is
checked in tests/unit/test_deploy.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.deploy import DEPLOY, compose
from tests.support.elasticsearch import es_url
from tests.support.pipeline import STREAMSYNC


def create_table(endpoint: str) -> subprocess.CompletedProcess[str]:
    """The create-table service's entrypoint, with its environment, against `endpoint`."""
    service = compose()["services"]["create-table"]
    command = [sys.executable if arg == "python" else arg for arg in service["entrypoint"]]
    env = {**os.environ, **service["environment"], "AWS_ENDPOINT_URL_DYNAMODB": endpoint}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAMSYNC, "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_try_out_creates_a_table_streamsync_accepts(
    moto_endpoint: str, tmp_path: Path
) -> None:
    created = await asyncio.to_thread(create_table, moto_endpoint)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "created the table orders, with a stream"
    again = await asyncio.to_thread(create_table, moto_endpoint)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "the table orders exists", "a restarted try-out goes on"

    tables = yaml.safe_load((DEPLOY / "local-tables.yaml").read_text())
    tables["aws"]["endpoint_url"] = moto_endpoint  # http://dynamodb:5000 in the compose network
    tables["elasticsearch"]["hosts"] = [es_url()]
    config = tmp_path / "tables.yaml"
    config.write_text(yaml.safe_dump(tables))
    checked = await asyncio.to_thread(validate, config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
