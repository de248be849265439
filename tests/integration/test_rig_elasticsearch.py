"""The rig's Elasticsearch node is real: it indexes, refreshes, searches and versions documents."""

from __future__ import annotations

import base64
import os
import re
import ssl
import urllib.error
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch, ConflictError

from tests.support.elasticsearch import SCRIPT, es_url, es_version
from tests.support.nodes import (
    ADMIN_USER,
    NodeInfo,
    admin_password,
    basic_auth,
    ca_context,
    elasticsearch_version,
    http_json,
)

# Another suite beside this one (scripts/run-tests.sh with STREAMSYNC_TEST_NODE) uses other nodes.
SUITE = os.environ.get("STREAMSYNC_TEST_ES_NODE", "test")


def test_node_runs_the_pinned_version() -> None:
    pinned = re.search(r'ES_VERSION="\$\{ES_VERSION:-([^}]+)\}"', SCRIPT.read_text())
    assert pinned is not None
    assert es_version(es_url()) == pinned.group(1)


async def test_index_refresh_and_search(es: AsyncElasticsearch, index_name: str) -> None:
    await es.index(index=index_name, id="order-1", document={"item": "blue teapot", "qty": 2})
    await es.indices.refresh(index=index_name)

    result = await es.search(index=index_name, query={"match": {"item": "teapot"}})

    hits = result["hits"]["hits"]
    assert [(h["_id"], h["_source"]) for h in hits] == [
        ("order-1", {"item": "blue teapot", "qty": 2})
    ]


async def test_external_versions_reject_older_writes(
    es: AsyncElasticsearch, index_name: str
) -> None:
    await es.index(index=index_name, id="a", document={"v": 2}, version=2, version_type="external")

    with pytest.raises(ConflictError):
        await es.index(
            index=index_name, id="a", document={"v": 1}, version=1, version_type="external"
        )

    assert (await es.get(index=index_name, id="a"))["_source"] == {"v": 2}


# A second node with security on: HTTPS only, a file-realm superuser (scripts/elasticsearch.sh
# start NAME --secure CERTDIR).


@pytest.fixture
def cert_dir(secured_node: tuple[NodeInfo, Path]) -> Path:
    return secured_node[1]


@pytest.fixture
def secure_es(secured_node: tuple[NodeInfo, Path]) -> NodeInfo:
    return secured_node[0]


def test_secure_node_runs_the_pinned_version_over_https(secure_es: NodeInfo) -> None:
    assert secure_es.url.startswith("https://127.0.0.1:")
    assert secure_es.version == elasticsearch_version()


def test_secure_node_refuses_plain_http(secure_es: NodeInfo) -> None:
    plain = secure_es.url.replace("https://", "http://", 1)

    # The node closes a plaintext connection on its HTTPS port without an HTTP answer.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        http_json("GET", f"{plain}/_cluster/health")


def test_secure_node_refuses_requests_without_valid_credentials(
    secure_es: NodeInfo, cert_dir: Path
) -> None:
    anonymous = http_json("GET", f"{secure_es.url}/_cluster/health", context=ca_context(cert_dir))
    wrong = http_json(
        "GET",
        f"{secure_es.url}/_cluster/health",
        headers=basic_auth(ADMIN_USER, "not-the-password"),
        context=ca_context(cert_dir),
    )

    assert anonymous[0] == 401
    assert anonymous[1]["error"]["type"] == "security_exception"
    assert wrong[0] == 401


def test_secure_node_accepts_the_admin_over_https_with_the_ca(
    secure_es: NodeInfo, cert_dir: Path
) -> None:
    admin = basic_auth(ADMIN_USER, admin_password(cert_dir))

    status, me = http_json(
        "GET",
        f"{secure_es.url}/_security/_authenticate",
        headers=admin,
        context=ca_context(cert_dir),
    )
    created = http_json(
        "PUT",
        f"{secure_es.url}/test-secure/_doc/a?version=2&version_type=external&refresh=true",
        {"v": 2},
        headers=admin,
        context=ca_context(cert_dir),
    )

    assert status == 200
    assert me["username"] == ADMIN_USER
    assert "superuser" in me["roles"]
    assert created[0] == 201


def test_tls_without_the_ca_fails_certificate_verification(secure_es: NodeInfo) -> None:
    with pytest.raises(urllib.error.URLError) as failed:
        http_json("GET", f"{secure_es.url}/", context=ssl.create_default_context())

    assert isinstance(failed.value.reason, ssl.SSLCertVerificationError)


def test_secure_node_authenticates_api_keys(secure_es: NodeInfo, cert_dir: Path) -> None:
    # API keys live in the .security index, whose analysis settings need the test plugin
    # scripts/es-test-analysis on the integ-test-zip (it lacks the analysis-common module).
    admin = basic_auth(ADMIN_USER, admin_password(cert_dir))
    context = ca_context(cert_dir)

    created = http_json(
        "POST",
        f"{secure_es.url}/_security/api_key",
        {
            "name": "streamsync-rig-test",
            "expiration": "1h",
            "role_descriptors": {
                "writer": {"indices": [{"names": ["test-apikey-*"], "privileges": ["write"]}]}
            },
        },
        headers=admin,
        context=context,
    )
    assert created[0] == 200, created[1]
    key_id, key = created[1]["id"], created[1]["api_key"]

    def api_key(secret: str) -> dict[str, str]:
        token = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        return {"Authorization": f"ApiKey {token}"}

    status, me = http_json(
        "GET",
        f"{secure_es.url}/_security/_authenticate",
        headers=api_key(key),
        context=context,
    )
    wrong = http_json(
        "GET",
        f"{secure_es.url}/_security/_authenticate",
        headers=api_key(key[:-1] + ("A" if key[-1] != "A" else "B")),
        context=context,
    )

    assert status == 200, me
    assert me["authentication_type"] == "api_key"
    assert me["api_key"] == {"id": key_id, "name": "streamsync-rig-test"}
    assert wrong[0] == 401
    assert wrong[1]["error"]["type"] == "security_exception"
