"""The rig's OpenSearch nodes are real: every pinned version starts, says it is that OpenSearch
version, and enforces external versions. Plain HTTP, no client library: these tests check the rig,
not a client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.nodes import http_json, opensearch_versions
from tests.support.search import Target

# The suite's node of each pinned version (tests/conftest.py starts them).
pytestmark = pytest.mark.parametrize(
    "target", [f"opensearch-{version}" for version in opensearch_versions()], indirect=True
)


@pytest.fixture
def opensearch(target: Target) -> Target:
    return target


@pytest.fixture
def index_url(opensearch: Target) -> Iterator[str]:
    url = f"{opensearch.url}/test-{uuid.uuid4().hex[:12]}"
    yield url
    http_json("DELETE", url)


def test_node_runs_the_pinned_version(opensearch: Target) -> None:
    status, body = http_json("GET", opensearch.url)

    assert status == 200
    assert body["version"]["distribution"] == "opensearch"
    assert body["version"]["number"] in opensearch_versions()
    assert f"opensearch-{body['version']['number']}" == opensearch.name


def test_external_versions_reject_older_writes(index_url: str) -> None:
    newer = http_json("PUT", f"{index_url}/_doc/a?version=2&version_type=external", {"v": 2})
    older = http_json("PUT", f"{index_url}/_doc/a?version=1&version_type=external", {"v": 1})
    status, stored = http_json("GET", f"{index_url}/_doc/a")

    assert newer[0] == 201
    assert older[0] == 409
    assert older[1]["error"]["type"] == "version_conflict_engine_exception"
    assert status == 200
    assert (stored["_version"], stored["_source"]) == (2, {"v": 2})
