"""The search cluster as streamsync uses it: one small contract that every engine fulfils.

Bulk indexing, tombstones, dead letters, backfill, verify and replay need only a dozen REST calls,
and Elasticsearch 8/9 and OpenSearch 2/3 (self-managed, Amazon OpenSearch Service) answer them
at the same paths with the same shapes. What differs is the client library (elasticsearch-py
refuses OpenSearch; opensearch-py is OpenSearch's own), how a request is authenticated (API key,
basic, SigV4), the errors each client raises, and how a cluster is identified. So each engine
only sends a request and translates its client's errors into `Unreachable` or `Refused`; every
call above is written once, here, and the rest of streamsync never imports a client library.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

KEEP_ALIVE = "2m"
"""How long a point in time outlives the last page read from it."""


class SearchError(Exception):
    """A request to the search cluster failed as a whole."""


class Unreachable(SearchError):
    """No answer: the network, a timeout, or a TLS handshake that failed."""

    def __init__(self, reason: str, *, tls: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tls = tls


class Refused(SearchError):
    """The cluster answered with an error status."""

    def __init__(self, status: int, error_type: str, reason: str) -> None:
        super().__init__(f"{status} {error_type}: {reason}" if reason else f"{status} {error_type}")
        self.status = status
        self.type = error_type
        self.reason = reason

    @classmethod
    def from_answer(cls, status: int, body: Any) -> Refused:
        """From an error answer's status and body (a cluster's `{"error": {...}}`, or text)."""
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            cause = (error.get("root_cause") or [error])[0]
            return cls(status, str(error.get("type", "")), str(cause.get("reason", "")))
        if isinstance(error, str):  # older and proxy answers: {"error": "text"}
            return cls(status, "error", error)
        if isinstance(body, dict) and "message" in body:  # AWS's own answers
            return cls(status, str(body.get("__type", "aws_error")), str(body["message"]))
        return cls(status, "http_error", str(body)[:300] if body else "")


RETRIABLE_TYPES = frozenset(
    {
        "es_rejected_execution_exception",
        "unavailable_shards_exception",
        "no_shard_available_action_exception",
        "node_not_connected_exception",
        "circuit_breaking_exception",
    }
)
"""A busy or recovering cluster's errors, retriable whatever status comes with them."""


def retriable(status: int, error_type: str | None = None) -> bool:
    """Whether the cluster may take later what it refused now: throttling, a timeout, a server or
    shard failure, or credentials an operator is fixing. Any other refusal (a mapping clash, a
    bad id, too large) is about what was sent and would repeat forever: where a refusal has
    somewhere else to go (a bulk item its dead letter, a letter its file), it goes there rather
    than block its lane. The one rule for the search cluster, so bulk items and dead letters
    never disagree on what an outage is."""
    return status in (401, 403, 408, 429) or status >= 500 or error_type in RETRIABLE_TYPES


def is_transient(error: BaseException) -> bool:
    """Whether a request that has nowhere else to go (a bulk request as a whole, a tombstone
    check, verify's look-ups) is sent again: after any failure, even a refusal `retriable` calls
    permanent, since giving up would lose the batch. A stream consumer never gives up on one: an
    outage, throttling, even revoked credentials are fixed by someone while it waits, and it says
    so on every retry (see streamsync.retry)."""
    return isinstance(error, SearchError)


@dataclass(frozen=True)
class Identity:
    """What the cluster says it is."""

    product: str  # "Elasticsearch" or "OpenSearch"
    version: str


def path_of(*parts: str) -> str:
    # Ids may hold anything ('/', '%', spaces, non-ASCII): each part is one escaped segment.
    return "/" + "/".join(quote(part, safe="") for part in parts)


class SearchEngine(ABC):
    """A search cluster, reached through one engine's client. Every method raises `Unreachable`
    or `Refused`, never a client library's own errors."""

    product: str
    """Elasticsearch or OpenSearch, as users name them in messages."""
    section: str
    """The configuration section that describes this cluster."""

    @abstractmethod
    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        *,
        ndjson: bool = False,
    ) -> Any:
        """One REST call: the parsed answer (None when it has no body); `Refused` for any
        status outside 2xx, `Unreachable` when there is no answer."""

    @abstractmethod
    def describe(self) -> str:
        """Where the cluster is, for messages (no secrets)."""

    @property
    @abstractmethod
    def auth_hint(self) -> str:
        """What to check when the cluster does not accept the credentials."""

    @property
    def permission_hint(self) -> str:
        """What to do when the credentials are accepted but not allowed."""
        return "grant the privileges listed in the README ('Secured clusters')"

    @abstractmethod
    async def identify(self) -> Identity:
        """What the cluster is; raises `WrongProduct` when it is not this engine's product."""

    async def missing_privileges(self, written: list[str], pruned: list[str]) -> list[str]:
        """The privileges the credentials lack to write the `written` indices and to delete the
        `pruned` ones (index name patterns), where the cluster can tell; empty when it cannot."""
        return []

    @property
    def can_refresh(self) -> bool:
        """Whether `_refresh` exists (not on OpenSearch Serverless, which refreshes by itself)."""
        return True

    @abstractmethod
    async def close(self) -> None: ...

    async def bulk(self, body: bytes) -> dict[str, Any]:
        """The answer to a `_bulk` request whose NDJSON body is `body`."""
        answer: dict[str, Any] = await self.request("POST", "/_bulk", body=body, ndjson=True)
        return answer

    async def mget(
        self, docs: list[dict[str, str]], *, source: list[str] | None = None, filter_path: str = ""
    ) -> list[dict[str, Any]]:
        """The documents `docs` (each `{"_index", "_id"}`), in order; missing ones say
        `found: false`, unreadable ones carry an `error`."""
        params = {"filter_path": filter_path} if filter_path else {}
        if source is not None:
            params["_source_includes"] = ",".join(source)
        answer = await self.request("POST", "/_mget", params, orjson.dumps({"docs": docs}))
        found: list[dict[str, Any]] = (answer or {}).get("docs", [])
        return found

    async def index_exists(self, index: str) -> bool:
        try:
            await self.request("HEAD", path_of(index))
        except Refused as error:
            if error.status == 404:
                return False
            raise
        return True

    async def create_index(self, index: str, body: Mapping[str, Any]) -> bool:
        """Creates `index` with `body` (settings, mappings); False when it already exists."""
        try:
            await self.request("PUT", path_of(index), body=orjson.dumps(body))
        except Refused as error:
            if error.type == "resource_already_exists_exception":
                return False
            raise
        return True

    async def put_index_template(self, name: str, body: Mapping[str, Any]) -> None:
        await self.request("PUT", path_of("_index_template", name), body=orjson.dumps(body))

    async def indices(self, pattern: str) -> list[str]:
        """The names of the indices matching `pattern`, hidden ones included."""
        answer = await self.request(
            "GET", path_of("_resolve", "index", pattern), {"expand_wildcards": "all"}
        )
        return [index["name"] for index in (answer or {}).get("indices", [])]

    async def alias_indices(self, name: str) -> list[str] | None:
        """The indices the alias `name` points to; None when `name` is no alias (an index, or
        nothing)."""
        try:
            answer = await self.request(
                "GET", path_of("_resolve", "index", name), {"expand_wildcards": "all"}
            )
        except Refused as error:
            if error.status == 404:
                return None
            raise
        for alias in (answer or {}).get("aliases", []):
            if alias["name"] == name:
                return sorted(alias["indices"])
        return None

    async def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        """Applies alias `actions` (add, remove) in one request: all of them at once, or none."""
        await self.request("POST", "/_aliases", body=orjson.dumps({"actions": actions}))

    async def delete_index(self, index: str) -> None:
        """Deletes `index`; nothing happens when it does not exist."""
        try:
            await self.request("DELETE", path_of(index))
        except Refused as error:
            if error.status != 404:
                raise

    async def put_document(self, index: str, doc_id: str, document: Mapping[str, Any]) -> None:
        await self.request("PUT", path_of(index, "_doc", doc_id), body=orjson.dumps(document))

    async def delete_document(self, index: str, doc_id: str) -> None:
        """Deletes a document; nothing happens when it does not exist."""
        try:
            await self.request("DELETE", path_of(index, "_doc", doc_id))
        except Refused as error:
            if error.status != 404:
                raise

    async def refresh(self, index: str) -> None:
        """Makes what was indexed into `index` searchable now, where the cluster allows it."""
        if self.can_refresh:
            await self.request("POST", path_of(index, "_refresh"))

    @abstractmethod
    async def open_point_in_time(self, index: str, keep_alive: str) -> PointInTime: ...

    @abstractmethod
    async def close_point_in_time(self, pit: PointInTime) -> None: ...

    async def scan(self, index: str, page_size: int) -> AsyncIterator[list[dict[str, Any]]]:
        """Every document of `index`, a page of hits at a time, from one consistent view: a
        point in time paged with search_after (both engines have it, OpenSearch Serverless
        too, which has no scroll); memory stays at one page."""
        pit = await self.open_point_in_time(index, KEEP_ALIVE)
        try:
            after: list[Any] | None = None
            while True:
                search: dict[str, Any] = {
                    "pit": {"id": pit.id, "keep_alive": KEEP_ALIVE},
                    "size": page_size,
                    "sort": [pit.tiebreaker],
                }
                if after is not None:
                    search["search_after"] = after
                answer = await self.request("POST", "/_search", body=orjson.dumps(search))
                hits: list[dict[str, Any]] = answer["hits"]["hits"]
                if not hits:
                    return
                yield hits
                after = hits[-1]["sort"]
        finally:
            await self.close_point_in_time(pit)


@dataclass(frozen=True)
class PointInTime:
    id: str
    tiebreaker: str
    """The sort that pages it in index order, each document once."""


class WrongProduct(SearchError):
    """The cluster is not the product the configuration names."""

    def __init__(self, found: str, expected: str) -> None:
        super().__init__(f"{found}, not {expected}")
        self.found = found
        self.expected = expected
