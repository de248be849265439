"""The search clusters the suite runs against, and a plain-HTTP probe that looks into them.

A test must not inspect an index through the code it tests (a bug would agree with itself), nor
through one engine's client (elasticsearch-py refuses OpenSearch): the probe speaks the few REST
calls the tests need over aiohttp, the same on every engine.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from streamsync.config import parse_config
from streamsync.sink.cluster import connect
from streamsync.sink.engine import SearchEngine
from tests.support import nodes
from tests.support.elasticsearch import es_url, es_version


@dataclass(frozen=True)
class Target:
    """One search cluster: its engine and version, where it is, and how to get in."""

    engine: str  # "elasticsearch" | "opensearch"
    version: str
    url: str
    credentials: dict[str, Any] = field(default_factory=dict)
    """Extra keys of its configuration section (auth, TLS)."""
    ca_file: str | None = None
    auth: tuple[str, str] | None = None
    """The probe's own login (a secured node's administrator)."""

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.version}"

    def section(self, **extra: Any) -> dict[str, Any]:
        """The configuration section that names this cluster."""
        return {self.engine: {"hosts": [self.url], **self.credentials, **extra}}


def engine_for(target: Target) -> SearchEngine:
    """streamsync's own engine for `target` (what the sink writes through), unsigned."""
    text = orjson.dumps(
        {
            "aws": {"region": "us-east-1"},
            **target.section(),
            "tables": [{"table": "ttt", "index": "iii"}],
        }
    ).decode()
    return connect(parse_config(text, "test"), None)


class ProbeError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class Probe:
    """Looks into a cluster over plain HTTP (a test's eyes, not streamsync's code)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        context = ssl.create_default_context(cafile=target.ca_file) if target.ca_file else None
        headers = {"Authorization": aiohttp.encode_basic_auth(*target.auth)} if target.auth else {}
        self._http = aiohttp.ClientSession(
            base_url=target.url,
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=context) if context else None,
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def close(self) -> None:
        await self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> Any:
        """The decoded answer; ProbeError for a status >= 300 not in `ok`."""
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self._http.request(
            method, path, data=data, params=params, headers=headers
        ) as response:
            raw = await response.read()
            status = response.status
        answer = orjson.loads(raw) if raw and method != "HEAD" else None
        if status >= 300 and status not in ok:
            raise ProbeError(status, answer)
        return answer

    async def refresh(self, index: str) -> None:
        await self.request("POST", f"/{index}/_refresh", ok=(404,))

    async def bulk_index(self, index: str, documents: list[Any]) -> list[dict[str, Any] | None]:
        """Indexes each document with one `_bulk` request; the error of each (None: taken)."""
        lines = [
            orjson.dumps({"index": {"_index": index}}) + b"\n" + orjson.dumps(document)
            for document in documents
        ]
        async with self._http.post(
            "/_bulk",
            data=b"\n".join(lines) + b"\n",
            headers={"Content-Type": "application/x-ndjson"},
        ) as response:
            answer = orjson.loads(await response.read())
        return [item["index"].get("error") for item in answer["items"]]

    async def exists(self, index: str) -> bool:
        try:
            await self.request("HEAD", f"/{index}")
        except ProbeError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def create_index(self, index: str, body: dict[str, Any] | None = None) -> None:
        await self.request("PUT", f"/{index}", body or {})

    async def delete_index(self, pattern: str) -> None:
        await self.request("DELETE", f"/{pattern}", params={"expand_wildcards": "all"}, ok=(404,))

    async def put(self, index: str, doc_id: str, document: dict[str, Any], **params: str) -> Any:
        return await self.request(
            "PUT", f"/{index}/_doc/{quote(doc_id, safe='')}", document, params=params
        )

    async def delete(self, index: str, doc_id: str, **params: str) -> Any:
        """Deletes a document (a missing one is no error)."""
        return await self.request(
            "DELETE", f"/{index}/_doc/{quote(doc_id, safe='')}", params=params, ok=(404,)
        )

    async def get(self, index: str, doc_id: str) -> dict[str, Any] | None:
        """The document's answer (`_source`, `_version`), or None when it does not exist."""
        answer = await self.request("GET", f"/{index}/_doc/{quote(doc_id, safe='')}", ok=(404,))
        return answer if answer and answer.get("found") else None

    async def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        await self.refresh(index)
        body = {"query": query} if query else None
        answer = await self.request("POST", f"/{index}/_count", body, ok=(404,))
        return int(answer.get("count", 0)) if answer else 0

    async def search(self, index: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        await self.refresh(index)
        answer = await self.request("POST", f"/{index}/_search", body)
        hits: list[dict[str, Any]] = answer["hits"]["hits"]
        return hits

    async def documents(self, index: str) -> dict[str, dict[str, Any]]:
        """Every document of `index` by id (empty when the index does not exist)."""
        if not await self.exists(index):
            return {}
        await self.refresh(index)
        found: dict[str, dict[str, Any]] = {}
        answer = await self.request(
            "POST", f"/{index}/_search", {"size": 1000, "sort": ["_doc"]}, params={"scroll": "1m"}
        )
        scroll_id = answer.get("_scroll_id")
        try:
            while hits := answer["hits"]["hits"]:
                found.update((hit["_id"], hit["_source"]) for hit in hits)
                answer = await self.request(
                    "POST", "/_search/scroll", {"scroll": "1m", "scroll_id": scroll_id}
                )
                scroll_id = answer.get("_scroll_id", scroll_id)
        finally:
            await self.request("DELETE", "/_search/scroll", {"scroll_id": [scroll_id]}, ok=(404,))
        return found


ENGINES = ("elasticsearch", *(f"opensearch-{v}" for v in nodes.opensearch_versions()))
"""The engines the suite proves streamsync on: the Elasticsearch node, each pinned OpenSearch."""

every_engine = pytest.mark.parametrize("target", ENGINES, indirect=True)
"""Runs a test once per engine (it takes the `target` fixture)."""


class Clusters:
    """The suite's search nodes: the Elasticsearch node `make test` started, and OpenSearch nodes
    (one per pinned version), started in the background as soon as the collected tests show
    they are needed (a JVM takes tens of seconds to start; the first tests run meanwhile), and
    stopped when the session ends."""

    def __init__(self) -> None:
        self._targets: dict[str, Target] = {}
        self._starting: dict[str, Future[nodes.NodeInfo]] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="search-node")

    def prestart(self, keys: Iterable[str]) -> None:
        """Starts, in the background, the OpenSearch nodes these targets need."""
        for key in keys:
            if key != "elasticsearch" and key not in self._starting:
                version = self._version(key)
                suite = os.environ.get("STREAMSYNC_TEST_ES_NODE", "test")
                self._starting[key] = self._pool.submit(
                    nodes.start_node, "opensearch", f"{suite}-os{version}", version=version
                )

    def get(self, key: str) -> Target:
        if key not in self._targets:
            self._targets[key] = self._target(key)
        return self._targets[key]

    def _target(self, key: str) -> Target:
        if key == "elasticsearch":
            url = es_url()
            return Target("elasticsearch", es_version(url), url)
        self.prestart([key])
        node = self._starting[key].result()
        return Target("opensearch", node.version, node.url)

    @staticmethod
    def _version(key: str) -> str:
        engine, _, version = key.partition("-")
        if engine != "opensearch" or version not in nodes.opensearch_versions():
            raise ValueError(f"no such search target {key!r}; one of {', '.join(ENGINES)}")
        return version

    def used(self) -> list[str]:
        return [f"{t.engine} {t.version} at {t.url}" for t in self._targets.values()]

    def stop(self) -> None:
        for future in self._starting.values():
            with contextlib.suppress(Exception):  # a node that failed to start is stopped too
                node = future.result()
                nodes.stop_node(node.kind, node.name)
        self._starting.clear()
        self._pool.shutdown()
