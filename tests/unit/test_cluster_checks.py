"""The cluster checks' decisions, with a scripted cluster: which answer becomes which one-line
problem (the same checks run against real nodes in tests/integration/test_sink.py,
test_secured.py and test_sigv4.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from streamsync.config import Config, parse_config
from streamsync.sink.cluster import cluster_problems
from streamsync.sink.engine import (
    Identity,
    PointInTime,
    Refused,
    SearchEngine,
    SearchError,
    Unreachable,
)

CONFIG = """
aws: {region: us-east-1}
opensearch:
  hosts: ["https://abc123.us-east-1.aoss.amazonaws.com"]
  aws_sigv4: {service: aoss}
tables: [{table: orders, index: orders}]
"""


class ScriptedCluster(SearchEngine):
    product = "OpenSearch"
    section = "opensearch"
    auth_hint = "check the credentials"

    def __init__(
        self, *, serverless: bool = True, fails: SearchError | None = None, bulk: Any = None
    ) -> None:
        self.serverless = serverless
        self.fails = fails
        self.bulk_items = bulk
        self.calls: list[tuple[str, str]] = []

    def describe(self) -> str:
        return "https://abc123.us-east-1.aoss.amazonaws.com"

    async def identify(self) -> Identity:
        if self.fails is not None:
            raise self.fails
        return Identity("OpenSearch Serverless" if self.serverless else "OpenSearch", "")

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        *,
        ndjson: bool = False,
    ) -> Any:
        self.calls.append((method, path))
        if path == "/_bulk":
            return {"items": self.bulk_items}
        return {}

    async def open_point_in_time(self, index: str, keep_alive: str) -> PointInTime:
        raise NotImplementedError

    async def close_point_in_time(self, pit: PointInTime) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


def config() -> Config:
    return parse_config(CONFIG, "test", environ={})


def item(status: int, error: dict[str, str] | None = None) -> dict[str, Any]:
    return {"index": {"status": status, **({"error": error} if error else {})}}


async def test_a_collection_that_keeps_ids_and_versions_passes_the_probe() -> None:
    cluster = ScriptedCluster(bulk=[item(201), item(409, {"type": "version_conflict"})])
    assert await cluster_problems(cluster, config()) == []
    # The probe document is removed again.
    assert ("DELETE", "/streamsync-dead-letters/_doc/streamsync-probe") in cluster.calls


async def test_a_collection_without_custom_ids_is_refused_naming_the_type_to_use() -> None:
    refusal = {
        "type": "illegal_argument_exception",
        "reason": "Document ID is not supported in create/index operation request",
    }
    cluster = ScriptedCluster(bulk=[item(400, refusal), item(400, refusal)])
    [line] = await cluster_problems(cluster, config())
    assert "refuses custom document ids (a TIMESERIES or VECTORSEARCH collection)" in line
    assert line.endswith("use a collection of type SEARCH")


async def test_a_collection_that_ignores_external_versions_is_refused() -> None:
    cluster = ScriptedCluster(bulk=[item(201), item(200)])
    [line] = await cluster_problems(cluster, config())
    assert "does not enforce external versions" in line


async def test_no_probe_outside_serverless() -> None:
    cluster = ScriptedCluster(serverless=False)
    assert await cluster_problems(cluster, config()) == []
    assert cluster.calls == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Refused(401, "security_exception", "unable to authenticate"), "authentication failed"),
        (
            Refused(403, "aws_error", "The security token included in the request is expired"),
            "authentication failed; check the credentials",
        ),
        (
            Refused(403, "aws_error", "The request signature we calculated does not match"),
            "authentication failed",
        ),
        (
            Refused(403, "aws_error", "User: arn:aws:iam::1:role/x is not authorized"),
            "access denied (User: arn:aws:iam::1:role/x is not authorized); grant",
        ),
        (
            Unreachable("certificate verify failed", tls=True),
            "TLS failed (certificate verify failed); set opensearch.ca_certs",
        ),
        (
            Unreachable("ConnectionError: refused"),
            "unreachable (ConnectionError: refused); check opensearch.hosts",
        ),
    ],
)
async def test_each_failure_becomes_one_line_naming_the_fix(
    error: SearchError, expected: str
) -> None:
    [line] = await cluster_problems(ScriptedCluster(fails=error), config())
    assert line.startswith("OpenSearch at https://abc123.us-east-1.aoss.amazonaws.com: ")
    assert expected in line
