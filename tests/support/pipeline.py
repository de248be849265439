"""Running streamsync against the test services, and comparing an index with its table.

The expected documents are computed here independently of streamsync's own decoder (from boto3's
TypeDeserializer and the documented rules), so a decoding bug cannot agree with itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from boto3.dynamodb.types import Binary, TypeDeserializer

from streamsync.app import StreamSync
from streamsync.config import Config, parse_config
from tests.support.search import Probe, Target

_deserializer = TypeDeserializer()

STREAMSYNC = str(Path(sys.executable).parent / "streamsync")
"""The command, as installed in the virtual environment running the tests."""


def config_document(
    moto_endpoint: str,
    cluster: str | Target,
    lease_table: str,
    tables: list[dict[str, Any]],
    **sections: Any,
) -> dict[str, Any]:
    """A tables.yaml for the test services, as a document (to dump for a process); `cluster` is
    a target or the URL of an Elasticsearch node."""
    section = (
        cluster.section()
        if isinstance(cluster, Target)
        else {"elasticsearch": {"hosts": [cluster]}}
    )
    return {
        "aws": {"region": "us-east-1", "endpoint_url": moto_endpoint},
        **section,
        "leases": {"table": lease_table, **sections.pop("leases", {})},
        "tables": tables,
        "observability": {"listen": "127.0.0.1:0"},
        **sections,
    }


def make_config(
    moto_endpoint: str,
    cluster: str | Target,
    lease_table: str,
    tables: list[dict[str, Any]],
    **sections: Any,
) -> Config:
    document = config_document(moto_endpoint, cluster, lease_table, tables, **sections)
    return parse_config(yaml.safe_dump(document), source="test config")


def config_from(document: dict[str, Any]) -> Config:
    """The Config of a `config_document` (for a test that runs it both embedded and as a
    process)."""
    return parse_config(yaml.safe_dump(document), source="test config")


def pk(item: dict[str, Any]) -> str:
    """The document id of an item of a table keyed by `pk` alone."""
    return str(item["pk"]["S"])


async def eventually(condition: Callable[[], Awaitable[bool]], within: float = 60) -> None:
    """Polls an async condition until it holds; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.3)


def expected_json(value: Any) -> Any:
    """The documented JSON form of a deserialized DynamoDB value."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and "E" not in str(value).upper():
            as_int = int(value)
            return as_int if abs(as_int) <= 2**53 else str(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, Binary):
        return base64.b64encode(value.value).decode()
    if isinstance(value, set | frozenset):
        return sorted((expected_json(v) for v in value), key=repr)
    if isinstance(value, list):
        return [expected_json(v) for v in value]
    if isinstance(value, dict):
        return {k: expected_json(v) for k, v in value.items()}
    return value


def _sort_sets(value: Any, shape: dict[str, Any]) -> Any:
    """Sorts, in a document, every list that was a DynamoDB set (sets have no order)."""
    ((tag, inner),) = shape.items()
    if tag in ("SS", "NS", "BS") and isinstance(value, list):
        return sorted(value, key=repr)
    if tag == "L" and isinstance(value, list):
        return [_sort_sets(v, s) for v, s in zip(value, inner, strict=False)]
    if tag == "M" and isinstance(value, dict):
        return {k: _sort_sets(v, inner[k]) if k in inner else v for k, v in value.items()}
    return value


def comparable(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    return {k: _sort_sets(v, item[k]) if k in item else v for k, v in document.items()}


def expected_document(item: dict[str, Any]) -> dict[str, Any]:
    plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
    return {k: expected_json(v) for k, v in plain.items()}


async def scan_table(ddb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = await ddb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def differences(
    ddb: Any,
    probe: Probe,
    table: str,
    index: str,
    doc_id: Callable[[dict[str, Any]], str],
) -> list[str]:
    """What differs between a table and its index, document by document (empty: equal)."""
    indexed = await probe.documents(index)
    problems: list[str] = []
    for item in await scan_table(ddb, table):
        key = doc_id(item)
        expected = expected_document(item)
        actual = indexed.pop(key, None)
        if actual is None:
            problems.append(f"missing {key}")
        elif comparable(actual, item) != comparable(expected, item):
            problems.append(f"differs {key}: {actual} != {expected}")
    problems.extend(f"extra {key}" for key in indexed)
    return problems


async def wait_until_equal(
    ddb: Any,
    probe: Probe,
    table: str,
    index: str,
    doc_id: Callable[[dict[str, Any]], str],
    within: float = 60,
) -> None:
    """Polls until the index equals the table; fails with the differences after `within` s."""
    problems: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while problems := await differences(ddb, probe, table, index, doc_id):  # noqa: ASYNC110
                await asyncio.sleep(0.5)
    assert not problems, f"{len(problems)} differences, e.g. {problems[:5]}"


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[StreamSync]:
    """streamsync embedded in the test's loop; stopped gracefully (and checked) on exit."""
    async with StreamSync(config) as sync:
        task = asyncio.create_task(sync.run())
        assert sync.started is not None
        started = asyncio.create_task(sync.started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # run() failed before it started: raise its error here
        try:
            yield sync
        finally:
            sync.stop()
            await asyncio.wait_for(task, timeout=60)
