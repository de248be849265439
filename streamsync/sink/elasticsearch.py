"""Elasticsearch 8.x and 9.x through elasticsearch-py (API keys, basic auth, Elastic Cloud ids)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from elastic_transport import TlsError, TransportError
from elasticsearch import ApiError, AsyncElasticsearch, UnsupportedProductError
from elasticsearch.serializer import OrjsonSerializer

from streamsync.config import ElasticsearchConfig
from streamsync.sink.engine import (
    Identity,
    PointInTime,
    Refused,
    SearchEngine,
    Unreachable,
    WrongProduct,
)

_JSON = {"accept": "application/json", "content-type": "application/json"}
_NDJSON = {"accept": "application/json", "content-type": "application/x-ndjson"}

CLUSTER_PRIVILEGES = ("monitor", "manage_index_templates")
WRITE_PRIVILEGES = ("create_index", "view_index_metadata", "read", "write", "maintenance")
"""What every index streamsync writes needs: its targets, dead letters and tombstones."""
PRUNE_PRIVILEGES = (*WRITE_PRIVILEGES, "delete_index")
"""Tombstone indices are also deleted when they age out."""


class ElasticsearchEngine(SearchEngine):
    product = "Elasticsearch"
    section = "elasticsearch"

    def __init__(self, config: ElasticsearchConfig) -> None:
        self._config = config
        # streamsync retries itself (forever, visibly); the client's own retries would hide
        # outages, and its dead-node back-off (up to 30 s) would delay recovery after one.
        self._client = AsyncElasticsearch(
            **config.client_kwargs(),
            max_retries=0,
            retry_on_timeout=False,
            max_dead_node_backoff=2.0,
            # Bulk and look-up answers are parsed on every flush: the stdlib json would dominate.
            serializer=OrjsonSerializer(),
        )

    def describe(self) -> str:
        if self._config.cloud_id is not None:
            return f"Elastic Cloud deployment {self._config.cloud_id.partition(':')[0]}"
        return ", ".join(self._config.hosts or [])

    @property
    def auth_hint(self) -> str:
        return (
            "check elasticsearch.api_key or elasticsearch.username/password (or "
            "STREAMSYNC_ES_API_KEY / STREAMSYNC_ES_USERNAME / STREAMSYNC_ES_PASSWORD)"
        )

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        *,
        ndjson: bool = False,
    ) -> Any:
        try:
            response = await self._client.perform_request(
                method, path, params=params, headers=_NDJSON if ndjson else _JSON, body=body
            )
        except UnsupportedProductError:
            # Its answers lack Elasticsearch's product header: OpenSearch, in practice.
            raise WrongProduct("OpenSearch", self.product) from None
        except ApiError as error:
            raise Refused.from_answer(error.meta.status, error.body) from None
        except TlsError as error:
            raise Unreachable(str(error.message), tls=True) from None
        except TransportError as error:
            raise Unreachable(f"{type(error).__name__}: {error.message}") from None
        if method == "HEAD":
            if response.meta.status == 404:
                raise Refused(404, "not_found", path)
            return None
        return response.body

    async def identify(self) -> Identity:
        # Not `GET /`: a minimal Elasticsearch (the integ-test-zip) has no root handler. The
        # client checks on this first answer that the cluster is Elasticsearch at all.
        answer = await self.request("GET", "/_nodes/_local", {"filter_path": "nodes.*.version"})
        versions = [str(node.get("version", "")) for node in answer.get("nodes", {}).values()]
        return Identity(self.product, versions[0] if versions else "")

    async def missing_privileges(self, written: list[str], pruned: list[str]) -> list[str]:
        """Asked of the cluster itself (`_has_privileges`, which any authenticated user may call);
        a cluster without security has nothing to lack."""
        body = {
            "cluster": list(CLUSTER_PRIVILEGES),
            "index": [
                {"names": written, "privileges": list(WRITE_PRIVILEGES)},
                {"names": pruned, "privileges": list(PRUNE_PRIVILEGES)},
            ],
        }
        try:
            answer = await self.request(
                "POST", "/_security/user/_has_privileges", body=orjson.dumps(body)
            )
        except Refused as error:
            if error.status in (400, 404, 500) and "security" in f"{error.type} {error.reason}":
                return []  # security is disabled on this cluster
            raise
        if answer.get("has_all_requested"):
            return []
        missing = [f"cluster: {name}" for name, ok in answer.get("cluster", {}).items() if not ok]
        for index, privileges in answer.get("index", {}).items():
            lacking = sorted(name for name, ok in privileges.items() if not ok)
            if lacking:
                missing.append(f"{index}: {', '.join(lacking)}")
        return missing

    async def open_point_in_time(self, index: str, keep_alive: str) -> PointInTime:
        answer = await self.request("POST", f"/{index}/_pit", {"keep_alive": keep_alive})
        return PointInTime(str(answer["id"]), "_shard_doc")

    async def close_point_in_time(self, pit: PointInTime) -> None:
        await self.request("DELETE", "/_pit", body=orjson.dumps({"id": pit.id}))

    async def close(self) -> None:
        await self._client.close()
