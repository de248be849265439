"""A secured Elasticsearch node (x-pack security, HTTPS with a CA made here): the authentication
and TLS options work end to end, each mistake is one line from `validate` naming the fix, and no
secret ever appears in a log line, an error or `status`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsync.config import parse_config
from streamsync.sink.cluster import cluster_problems, connect
from tests.support import aws, nodes
from tests.support.pipeline import STREAMSYNC, config_document, pk, wait_until_equal
from tests.support.search import Probe
from tests.support.secured import (
    READER_PASSWORD,
    ROLES,
    WRITER_PASSWORD,
    problems_with,
    target_for,
)


@pytest.fixture
def secured(secured_node: tuple[nodes.NodeInfo, Path]) -> tuple[nodes.NodeInfo, Path]:
    return secured_node


@pytest.fixture
def api_key(secured: tuple[nodes.NodeInfo, Path]) -> str:
    """An API key with streamsync's documented role, as the create-API-key answer encodes it."""
    node, certs = secured
    status, answer = nodes.http_json(
        "POST",
        f"{node.url}/_security/api_key",
        {"name": "streamsync", "role_descriptors": {"streamsync": ROLES["streamsync_writer"]}},
        headers=nodes.basic_auth(nodes.ADMIN_USER, nodes.admin_password(certs)),
        context=nodes.ca_context(certs),
    )
    assert status == 200, answer
    return str(answer["encoded"])


async def test_a_user_or_an_api_key_with_the_documented_role_passes_the_check(
    secured: tuple[nodes.NodeInfo, Path], api_key: str
) -> None:
    _, certs = secured
    ca = str(certs / "ca.pem")
    user = target_for(secured, username="streamsync", password=WRITER_PASSWORD, ca_certs=ca)
    assert await problems_with(user) == []
    assert await problems_with(target_for(secured, api_key=api_key, ca_certs=ca)) == []


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"username": "streamsync", "password": "wrong-password"},
            "authentication failed; check elasticsearch.api_key or elasticsearch.username/password",
        ),
        (
            {"api_key": "bm90LWEta2V5Om5vdC1hLXNlY3JldA=="},
            "authentication failed; check elasticsearch.api_key or elasticsearch.username/password",
        ),
        (
            {"username": "reader", "password": READER_PASSWORD},
            "the credentials lack privileges streamsync needs: cluster: manage_index_templates; ",
        ),
    ],
    ids=["wrong-password", "wrong-api-key", "no-index-privileges"],
)
async def test_each_credential_mistake_is_one_line_naming_the_fix(
    secured: tuple[nodes.NodeInfo, Path], section: dict[str, Any], expected: str
) -> None:
    _, certs = secured
    target = target_for(secured, ca_certs=str(certs / "ca.pem"), **section)
    [line] = await problems_with(target)
    assert expected in line
    for secret in (WRITER_PASSWORD, READER_PASSWORD, "wrong-password", section.get("api_key")):
        assert secret is None or secret not in line
    if section.get("username") == "reader":
        assert "orders: create_index, maintenance, read, view_index_metadata, write" in line


async def test_a_wrong_ca_and_an_untrusted_certificate_are_named(
    secured: tuple[nodes.NodeInfo, Path], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    nodes.make_test_certs(other, [])
    credentials = {"username": "streamsync", "password": WRITER_PASSWORD}
    for section in (
        {"ca_certs": str(other / "ca.pem"), **credentials},  # another CA
        credentials,  # the system's CAs, which never signed this node
    ):
        [line] = await problems_with(target_for(secured, **section))
        assert "TLS failed" in line
        assert "set elasticsearch.ca_certs to the CA that signed the cluster's certificate" in line
    # verify_certs: false accepts any certificate (for trying things out).
    insecure = target_for(secured, verify_certs=False, **credentials)
    assert await problems_with(insecure) == []


async def test_a_run_over_https_with_a_user_indexes_and_leaks_nothing(
    secured: tuple[nodes.NodeInfo, Path],
    clients: aws.Clients,
    moto_endpoint: str,
    tmp_path: Path,
) -> None:
    """streamsync as a process (`validate`, `run`, `status`) with the password from the
    environment: the index follows the table, and neither the password nor the CA path's
    contents appear in any output."""
    _, certs = secured
    target = target_for(secured, ca_certs=str(certs / "ca.pem"), username="streamsync")
    probe = Probe(target)
    table, index = aws.unique_name("secured"), f"secured-{secrets.token_hex(4)}"
    await aws.create_stream_table(clients.dynamodb, table)
    for n in range(20):
        await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{n}"}})
    document = config_document(
        moto_endpoint, target, aws.unique_name("leases"), [{"table": table, "index": index}]
    )
    config_file = tmp_path / "tables.yaml"
    config_file.write_text(yaml.safe_dump(document))
    env = {**os.environ, "STREAMSYNC_ES_PASSWORD": WRITER_PASSWORD}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [STREAMSYNC, *args, "--config", str(config_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    validated = await asyncio.to_thread(cli, "validate")
    assert validated.returncode == 0, validated.stderr
    try:
        with (tmp_path / "run.log").open("w") as log:
            process = subprocess.Popen(  # noqa: ASYNC220
                [STREAMSYNC, "run", "--config", str(config_file), "--log-level", "DEBUG"],
                stdout=log,
                stderr=log,
                env=env,
            )
            try:
                await wait_until_equal(clients.dynamodb, probe, table, index, pk)
                status = await asyncio.to_thread(cli, "status", "--json")
            finally:
                process.terminate()
                process.wait(timeout=60)
    finally:
        await probe.delete_index(f"{index}*")
        await probe.close()
    outputs = [validated.stdout, validated.stderr, status.stdout, status.stderr]
    outputs.append((tmp_path / "run.log").read_text())
    assert status.returncode == 0, status.stderr
    assert process.returncode == 0
    for text in outputs:
        assert WRITER_PASSWORD not in text
        assert nodes.admin_password(certs) not in text


def local_cloud_id(url: str) -> str:
    """An Elastic Cloud ID that leads to this node: the client joins the deployment's id and its
    parent domain with a dot (`127` + `.` + `0.0.1`) and speaks HTTPS to the port given."""
    port = url.rsplit(":", 1)[1]
    return "local-deployment:" + base64.b64encode(f"0.0.1:{port}$127$".encode()).decode()


async def test_a_cloud_id_and_an_api_key_reach_the_deployment(
    secured: tuple[nodes.NodeInfo, Path], api_key: str
) -> None:
    node, certs = secured
    cloud = {
        "cloud_id": local_cloud_id(node.url),
        "api_key": api_key,
        "ca_certs": str(certs / "ca.pem"),
    }
    config = parse_config(
        json.dumps(
            {
                "aws": {"region": "us-east-1"},
                "elasticsearch": cloud,
                "tables": [{"table": "orders", "index": "orders"}],
            }
        ),
        "test",
        environ={},
    )
    engine = connect(config, None)
    try:
        assert await cluster_problems(engine, config) == []
        assert engine.describe() == "Elastic Cloud deployment local-deployment"
        assert (await engine.identify()).version == node.version
    finally:
        await engine.close()
