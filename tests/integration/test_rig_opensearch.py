"""The rig's OpenSearch nodes are real: every pinned version starts, says it is that OpenSearch
version, and enforces external versions. Plain HTTP, no client library: these tests check the rig,
not a client."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support.nodes import NodeInfo, http_json, opensearch_versions, start_node, stop_node

# Another suite beside this one (scripts/run-tests.sh with STREAMSYNC_TEST_NODE) uses other nodes.
SUITE = os.environ.get("STREAMSYNC_TEST_ES_NODE", "test")


@pytest.fixture(scope="module", params=opensearch_versions())
def pinned_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def opensearch(pinned_version: str) -> Iterator[NodeInfo]:
    """One node per pinned version, one at a time (pytest groups the tests by version)."""
    name = f"{SUITE}-rig-{pinned_version}"
    node = start_node("opensearch", name, version=pinned_version)
    try:
        yield node
    finally:
        stop_node("opensearch", name)


@pytest.fixture
def index_url(opensearch: NodeInfo) -> Iterator[str]:
    url = f"{opensearch.url}/test-{uuid.uuid4().hex[:12]}"
    yield url
    http_json("DELETE", url)


def test_node_runs_the_pinned_version(opensearch: NodeInfo, pinned_version: str) -> None:
    status, body = http_json("GET", opensearch.url)

    assert status == 200
    assert body["version"]["distribution"] == "opensearch"
    assert body["version"]["number"] == pinned_version
    assert opensearch.version == pinned_version


def test_external_versions_reject_older_writes(index_url: str) -> None:
    newer = http_json("PUT", f"{index_url}/_doc/a?version=2&version_type=external", {"v": 2})
    older = http_json("PUT", f"{index_url}/_doc/a?version=1&version_type=external", {"v": 1})
    status, stored = http_json("GET", f"{index_url}/_doc/a")

    assert newer[0] == 201
    assert older[0] == 409
    assert older[1]["error"]["type"] == "version_conflict_engine_exception"
    assert status == 200
    assert (stored["_version"], stored["_source"]) == (2, {"v": 2})
