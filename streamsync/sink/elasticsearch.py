"""The Elasticsearch client and target indexes, with errors that say what to fix."""

from __future__ import annotations

from typing import Any

from elasticsearch import (
    ApiError,
    AsyncElasticsearch,
    AuthenticationException,
    AuthorizationException,
    TransportError,
)
from elasticsearch.serializer import OrjsonSerializer

from streamsync.config import ElasticsearchConfig, TableConfig
from streamsync.errors import StreamsyncError


def create_client(config: ElasticsearchConfig) -> AsyncElasticsearch:
    # streamsync retries itself (forever, visibly); the client's own retries would hide outages,
    # and its dead-node back-off (up to 30 s) would delay recovery after one.
    return AsyncElasticsearch(
        **config.client_kwargs(),
        max_retries=0,
        retry_on_timeout=False,
        max_dead_node_backoff=2.0,
        # Bulk and look-up answers are parsed on every flush: the stdlib json would dominate.
        serializer=OrjsonSerializer(),
    )


def describe_hosts(config: ElasticsearchConfig) -> str:
    return ", ".join(config.hosts)


async def check_reachable(es: AsyncElasticsearch, config: ElasticsearchConfig) -> str | None:
    """None when the cluster answers, else one line saying what is wrong and what to check."""
    where = f"Elasticsearch at {describe_hosts(config)}"
    try:
        await es.cluster.health(timeout="5s")
    except AuthenticationException:
        return (
            f"{where}: authentication failed; check elasticsearch.api_key or "
            "elasticsearch.username/password (or STREAMSYNC_ES_API_KEY / STREAMSYNC_ES_PASSWORD)"
        )
    except AuthorizationException:
        return f"{where}: the credentials lack the 'monitor' cluster privilege"
    except TransportError as error:
        return (
            f"{where}: unreachable ({type(error).__name__}: {error.message}); check "
            "elasticsearch.hosts and that the cluster is up"
        )
    except ApiError as error:
        return f"{where}: answered {error.meta.status} ({error.message})"
    return None


async def ensure_index(es: AsyncElasticsearch, table: TableConfig) -> bool:
    """Creates the table's index with its configured settings and mappings when it is missing;
    an existing index is never altered. True when this call created it."""
    if await es.indices.exists(index=table.index):
        return False
    body: dict[str, Any] = {}
    if table.index_settings:
        body["settings"] = table.index_settings
    if table.index_mappings:
        body["mappings"] = table.index_mappings
    try:
        await es.indices.create(index=table.index, **body)
    except ApiError as error:
        if error.error == "resource_already_exists_exception":
            return False
        raise StreamsyncError(
            f"index {table.index}: cannot create it ({error.message}); check "
            "index_settings/index_mappings of that table, or create the index yourself"
        ) from error
    return True
