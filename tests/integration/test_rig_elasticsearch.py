"""The rig's Elasticsearch node is real: it indexes, refreshes, searches and versions documents."""

from __future__ import annotations

import re

import pytest
from elasticsearch import AsyncElasticsearch, ConflictError

from tests.support.elasticsearch import SCRIPT, es_url, es_version


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
