"""AWS SigV4 proven on the wire: every request streamsync sends to Amazon OpenSearch Service
(service `es`) or OpenSearch Serverless (service `aoss`) passes a verifying proxy.

The proxy (tests/support/sigv4_proxy.py) recomputes each request's signature with botocore's
signer and AWS's server-side canonicalisation, refuses any mismatch with AWS's 403, and forwards
valid requests to a real OpenSearch node. Serverless's own differences (no `GET /`, no `_refresh`)
are not emulated: the node behind the proxy is self-managed OpenSearch; what streamsync does
differently for `aoss` (the content hash header, no refresh, the probe) is what runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiobotocore.session import get_session

from streamsync.config import Config, parse_config
from streamsync.sink.cluster import cluster_problems, connect, ensure_index
from streamsync.sink.engine import SearchEngine
from streamsync.source.acks import AckTracker
from tests.integration.test_sink import ODD_IDS, index_all, make
from tests.support import aws
from tests.support.pipeline import make_config, pk, running, wait_until_equal
from tests.support.search import Probe, Target
from tests.support.sigv4_proxy import SigV4Proxy

OPENSEARCH = "opensearch-3.6.0"
on_opensearch = pytest.mark.parametrize("target", [OPENSEARCH], indirect=True)


def signed_config(proxy_url: str, service: str, **extra: Any) -> Config:
    document = {
        "aws": {"region": "us-east-1"},
        "opensearch": {"hosts": [proxy_url], "aws_sigv4": {"service": service}},
        "tables": [{"table": "orders", "index": "orders"}],
        **extra,
    }
    return parse_config(json.dumps(document), "test")


@pytest.fixture(params=["es", "aoss"])
async def proxy(request: pytest.FixtureRequest, target: Target) -> AsyncIterator[SigV4Proxy]:
    proxy = SigV4Proxy(target.url, service=request.param)
    proxy.allow("testing", "testing")  # the suite's AWS credentials (tests/conftest.py)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def signed_engine(proxy: SigV4Proxy) -> SearchEngine:
    credentials = await get_session().get_credentials()
    return connect(signed_config(proxy.url, proxy.service), credentials)


@on_opensearch
async def test_every_sink_call_passes_the_verifying_proxy(
    proxy: SigV4Proxy, probe: Probe, index_name: str
) -> None:
    """Index creation, a template, bulk bodies with ids that need escaping, mget, documents by
    id in the path, a point-in-time scan, deletes: all signed as AWS expects."""
    url = proxy.url
    engine = await signed_engine(proxy)
    try:
        config = signed_config(url, proxy.service, dead_letters={"index": f"{index_name}-dlq"})
        assert await cluster_problems(engine, config) == []
        table = config.tables[0].model_copy(update={"index": index_name})
        assert await ensure_index(engine, table)
        tracker = AckTracker()
        await index_all(engine, [make(index_name, i, 4, {"id": i}, tracker) for i in ODD_IDS], [])
        found = await engine.mget([{"_index": index_name, "_id": i} for i in ODD_IDS])
        for doc_id in ODD_IDS:
            await engine.put_document(index_name, doc_id, {"id": doc_id, "by": "path"})
        await probe.refresh(index_name)
        scanned = [hit["_id"] async for page in engine.scan(index_name, 3) for hit in page]
        for doc_id in ODD_IDS:
            await engine.delete_document(index_name, doc_id)
    finally:
        await engine.close()

    assert proxy.refused == []
    assert [doc["_source"]["id"] for doc in found] == ODD_IDS
    assert sorted(scanned) == sorted(ODD_IDS)
    assert await probe.documents(index_name) == {}
    paths = {seen.path.split("/")[-1] for seen in proxy.accepted}
    assert {"_bulk", "_mget", "point_in_time", "streamsync-tombstones"} <= paths
    # Ids went through the path too, escaped: '/', '|', '%', ' ', non-ASCII.
    escaped = [s.path for s in proxy.accepted if s.method == "PUT" and "/_doc/" in s.path]
    assert any("%2F" in p for p in escaped)
    assert any("%C3%BC" in p for p in escaped)


@on_opensearch
async def test_a_tampered_or_unknown_signature_is_refused_and_named(
    proxy: SigV4Proxy, target: Target
) -> None:
    """Control: the proxy does refuse what AWS would, and `validate` turns that into one line
    naming the credentials to check (the key in the chain is not one the proxy knows)."""
    proxy.revoke("testing")
    engine = await signed_engine(proxy)
    try:
        problems = await cluster_problems(engine, signed_config(proxy.url, proxy.service))
    finally:
        await engine.close()
    assert proxy.accepted == []
    assert len(proxy.refused) >= 1
    [line] = problems
    assert "authentication failed" in line
    assert "aws_sigv4" in line
    assert "IAM role" in line
    assert "testing" not in line.replace(proxy.url, "")  # no key material in the message


@on_opensearch
async def test_serverless_that_ignores_external_versions_is_refused(target: Target) -> None:
    """A collection that drops `version`/`version_type` (as a Serverless collection might; AWS
    does not document it) would let an older image overwrite a newer one: the start-up probe
    finds out and refuses with one line. The proxy strips the fields from bulk action lines."""
    proxy = SigV4Proxy(target.url, service="aoss")
    proxy.allow("testing", "testing")

    def drop_versions(
        method: str, path: str, query: str, body: bytes
    ) -> tuple[str, str, str, bytes]:
        if path.endswith("/_bulk"):
            lines = []
            for line in body.splitlines():
                document = orjson.loads(line)
                for meta in document.values():
                    if isinstance(meta, dict):
                        meta.pop("version", None)
                        meta.pop("version_type", None)
                lines.append(orjson.dumps(document))
            body = b"\n".join(lines) + b"\n"
        return method, path, query, body

    proxy.transform_request = drop_versions
    await proxy.start()
    try:
        engine = await signed_engine(proxy)
        try:
            problems = await cluster_problems(
                engine, signed_config(proxy.url, "aoss", dead_letters={"index": "probe-dlq"})
            )
        finally:
            await engine.close()
    finally:
        await proxy.stop()
    [line] = problems
    assert "does not enforce external versions" in line


@pytest.mark.slow
@on_opensearch
async def test_a_run_keeps_signing_as_credentials_rotate(
    target: Target,
    probe: Probe,
    clients: aws.Clients,
    moto_endpoint: str,
    index_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """streamsync runs with temporary credentials from the standard chain (a profile's
    credential_process, as IRSA and SSO hand out expiring ones). Mid-run the credentials rotate:
    the proxy accepts the new key only from then on, and revokes the old one once botocore must
    have renewed it. Writes go on throughout; nothing is ever refused and the index ends equal to
    the table."""
    creds = tmp_path / "credentials.json"

    def issue(key: str, lifetime: timedelta) -> None:
        expiry = (datetime.now(UTC) + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ")
        creds.write_text(
            json.dumps(
                {
                    "Version": 1,
                    "AccessKeyId": key,
                    "SecretAccessKey": f"{key}-secret",
                    "SessionToken": f"{key}-token",
                    "Expiration": expiry,
                }
            )
        )

    # botocore renews credentials 15 minutes before they expire: the first set is due in 8 s.
    issue("AKIDFIRST", timedelta(minutes=15, seconds=8))
    (tmp_path / "config").write_text(
        f"[profile rotating]\ncredential_process = cat {creds}\nregion = us-east-1\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "rotating")

    proxy = SigV4Proxy(target.url, service="es")
    proxy.allow("AKIDFIRST", "AKIDFIRST-secret", "AKIDFIRST-token")
    await proxy.start()
    table = aws.unique_name("rotate")
    await aws.create_stream_table(clients.dynamodb, table)
    signed = Target("opensearch", target.version, proxy.url, {"aws_sigv4": {"service": "es"}})
    config = make_config(
        moto_endpoint, signed, aws.unique_name("leases"), [{"table": table, "index": index_name}]
    )
    started = time.monotonic()

    async def write_for(seconds: float) -> int:
        written = 0
        while time.monotonic() - started < seconds:
            await clients.dynamodb.put_item(
                TableName=table, Item={"pk": {"S": f"k{written % 40}"}, "n": {"N": str(written)}}
            )
            written += 1
            await asyncio.sleep(0.05)
        return written

    try:
        async with running(config):
            await write_for(4)
            issue("AKIDSECOND", timedelta(hours=1))  # rotation: the new key exists from now on
            proxy.allow("AKIDSECOND", "AKIDSECOND-secret", "AKIDSECOND-token")
            await write_for(14)
            proxy.revoke("AKIDFIRST")  # the old key expires well after botocore had to renew
            revoked = len(proxy.accepted)
            await write_for(22)
            await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
    finally:
        await proxy.stop()

    assert proxy.refused == []
    used = proxy.keys_used()
    assert used["AKIDFIRST"] > 0
    assert used["AKIDSECOND"] > 0
    assert {seen.access_key for seen in proxy.accepted[revoked:]} == {"AKIDSECOND"}
