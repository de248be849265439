"""Fixtures shared by the whole suite.

Integration tests talk to real search nodes and to moto's DynamoDB + Streams server, run
in-process over real HTTP. The Elasticsearch node is started by `make test` (URL in
STREAMSYNC_TEST_ES_URL); OpenSearch nodes are started on first use and stopped at the end.
Tests that prove a behaviour on every engine take `target` and are marked `@every_engine`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch

from tests.support import aws, nodes, secured
from tests.support.elasticsearch import es_url, es_version
from tests.support.moto_server import StreamsServer
from tests.support.search import Clusters, Probe, Target

# Tests must never reach a real AWS account, whatever the developer's environment holds.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=aws.REGION
)


CLUSTERS = Clusters()


def pytest_report_header() -> list[str]:
    url = os.environ.get("STREAMSYNC_TEST_ES_URL")
    if not url:
        return ["elasticsearch: none (STREAMSYNC_TEST_ES_URL unset; integration tests will fail)"]
    return [f"elasticsearch: {es_version(url)} at {url}; opensearch: started when needed"]


SECURED_USED: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    used = CLUSTERS.used() + SECURED_USED
    if used:
        terminalreporter.write_sep("-", "search nodes this run used")
        for line in used:
            terminalreporter.write_line(line)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts the OpenSearch nodes the selected tests need while the first tests run."""
    if session.config.option.collectonly:
        return
    needed = {
        str(item.callspec.params["target"])
        for item in session.items
        if isinstance(item, pytest.Function)
        and hasattr(item, "callspec")
        and "target" in item.callspec.params
    }
    CLUSTERS.prestart(sorted(needed))


def pytest_sessionfinish() -> None:
    CLUSTERS.stop()


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Target:
    """The search cluster a test runs against: Elasticsearch unless the test is parametrized
    over engines (`@every_engine`)."""
    return CLUSTERS.get(getattr(request, "param", "elasticsearch"))


@pytest.fixture
async def probe(target: Target) -> AsyncIterator[Probe]:
    """A plain-HTTP look into `target` (not streamsync's code, not a client library)."""
    eyes = Probe(target)
    yield eyes
    await eyes.close()


@pytest.fixture(scope="session")
def streams_server() -> Iterator[StreamsServer]:
    server = StreamsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def moto_endpoint(streams_server: StreamsServer) -> Iterator[str]:
    """The endpoint URL; faults injected by a test, and the tables it created, end with it."""
    yield streams_server.endpoint_url
    streams_server.faults.clear()
    streams_server.forget_tables()


@pytest.fixture
async def clients(moto_endpoint: str) -> AsyncIterator[aws.Clients]:
    async with aws.clients(moto_endpoint) as c:
        yield c


@pytest.fixture
async def es() -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(es_url(), request_timeout=30)
    yield client
    await client.close()


@pytest.fixture
async def index_name(probe: Probe) -> AsyncIterator[str]:
    """A fresh index name, deleted (with anything it grew) after the test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    await probe.delete_index(f"{name}*")


@pytest.fixture(scope="session")
def secured_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[nodes.NodeInfo, Path]]:
    """The secured Elasticsearch node (tests/support/secured.py) and its certificate folder."""
    certs = tmp_path_factory.mktemp("secured-certs")
    node = secured.start(certs)
    SECURED_USED.append(f"elasticsearch {node.version} with security and TLS at {node.url}")
    yield node, certs
    secured.stop()
