"""OpenSearch 2.x and 3.x, self-managed or Amazon OpenSearch Service (a domain, or a Serverless
collection), through opensearch-py: basic auth, or AWS SigV4 with the pod's own credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from opensearchpy import AsyncHttpConnection, AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import SSLError, TransportError
from opensearchpy.serializer import JSONSerializer
from yarl import URL

from streamsync.config import OpenSearchConfig
from streamsync.errors import StreamsyncError
from streamsync.sigv4 import Signer, host_header, strict_query
from streamsync.sink.engine import (
    KEEP_ALIVE,
    Identity,
    PointInTime,
    Refused,
    SearchEngine,
    Unreachable,
    WrongProduct,
    path_of,
)

if TYPE_CHECKING:
    from aiobotocore.credentials import AioCredentials

_JSON = {"content-type": "application/json"}
_NDJSON = {"content-type": "application/x-ndjson"}


class _OrjsonSerializer(JSONSerializer):
    """Bodies arrive already encoded; answers are parsed by orjson (bulk answers on every flush
    would make the stdlib json the worker's largest cost)."""

    def loads(self, s: str) -> Any:
        return orjson.loads(s)

    def dumps(self, data: Any) -> Any:
        return data if isinstance(data, str | bytes) else orjson.dumps(data)


class _SigV4Connection(AsyncHttpConnection):
    """opensearch-py's aiohttp connection, signing each request with fresh credentials.

    opensearch-py's own `AWSV4SignerAsyncAuth` signs synchronously from credentials it cannot
    refresh without blocking the loop, and its query encoding has let signatures and sent URLs
    disagree (opensearch-py #833, #1047). Here the credentials are refreshed (awaited) before
    each request, and the query is written in SigV4's own encoding before signing, so the URL
    signed is byte for byte the URL sent (the connection sends it as an encoded yarl URL)."""

    def __init__(self, *, signer: Signer, **kwargs: Any) -> None:
        self._signer = signer
        super().__init__(**{**kwargs, "http_auth": self._sign})

    def _sign(self, method: str, url: str, body: bytes | None, headers: Any) -> dict[str, str]:
        target = URL(url, encoded=True).raw_path_qs
        signed = self._signer.sign(method, target, [("Host", host_header(url))], body or b"")
        return {name: value for name, value in signed if name != "Host"}

    async def perform_request(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (opensearch-py's signature)
        ignore: Any = (),
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        await self._signer.refresh()
        if params:
            url = f"{url}?{strict_query(params)}"
        return await super().perform_request(method, url, None, body, timeout, ignore, headers)


class OpenSearchEngine(SearchEngine):
    product = "OpenSearch"
    section = "opensearch"

    def __init__(self, config: OpenSearchConfig, credentials: AioCredentials | None) -> None:
        self._config = config
        self._serverless = config.aws_sigv4 is not None and config.aws_sigv4.service == "aoss"
        kwargs: dict[str, Any] = {
            "hosts": list(config.hosts),
            "verify_certs": config.verify_certs,
            "ssl_show_warn": False,
            "timeout": config.request_timeout_seconds,
            # streamsync retries itself, visibly; the client's retries would hide outages.
            "max_retries": 0,
            "retry_on_timeout": False,
            "serializer": _OrjsonSerializer(),
            "connection_class": AsyncHttpConnection,
        }
        if config.ca_certs is not None:
            kwargs["ca_certs"] = str(config.ca_certs)
        if config.username is not None and config.password is not None:
            kwargs["http_auth"] = (config.username, config.password.get_secret_value())
        if config.aws_sigv4 is not None:
            if credentials is None:
                raise StreamsyncError(
                    "opensearch.aws_sigv4: no AWS credentials found to sign with; set "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an IAM "
                    "role (IRSA, instance profile)"
                )
            signer = Signer(
                credentials,
                config.aws_sigv4.region or "",
                config.aws_sigv4.service,
                content_sha256_header=True,
            )
            kwargs["connection_class"] = _SigV4Connection
            kwargs["signer"] = signer
            self.signer: Signer | None = signer
        else:
            self.signer = None
        self._client = AsyncOpenSearch(**kwargs)
        self._identity: Identity | None = None

    def describe(self) -> str:
        return ", ".join(self._config.hosts)

    @property
    def serverless(self) -> bool:
        return self._serverless

    @property
    def can_refresh(self) -> bool:
        return not self._serverless

    @property
    def auth_hint(self) -> str:
        if self._config.aws_sigv4 is None:
            return "check opensearch.username/password (or STREAMSYNC_ES_USERNAME / _PASSWORD)"
        return (
            "the request was signed (SigV4) with AWS credentials the cluster does not accept; "
            "check the credentials streamsync runs with (the pod's IAM role) and "
            "opensearch.aws_sigv4.region and service (es for a domain, aoss for Serverless)"
        )

    @property
    def permission_hint(self) -> str:
        sigv4 = self._config.aws_sigv4
        if sigv4 is None:
            return super().permission_hint
        if sigv4.service == "aoss":
            return (
                "the collection's data access policy must grant this IAM role aoss:CreateIndex, "
                "DescribeIndex, ReadDocument, WriteDocument on its indexes (README: 'Amazon "
                "OpenSearch Service')"
            )
        return (
            "the domain's access policy must allow es:ESHttp* for this IAM role, and with "
            "fine-grained access control the role must be mapped as a backend role (README: "
            "'Amazon OpenSearch Service')"
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
            answer = await self._client.transport.perform_request(
                method, path, params=params, body=body, headers=_NDJSON if ndjson else _JSON
            )
        except SSLError as error:
            raise Unreachable(str(error.info), tls=True) from None
        except OpenSearchConnectionError as error:
            raise Unreachable(f"{type(error).__name__}: {error.info}") from None
        except TransportError as error:
            status = error.status_code if isinstance(error.status_code, int) else 502
            raise Refused.from_answer(status, _error_body(error)) from None
        if method == "HEAD" and answer is False:
            raise Refused(404, "not_found", path)
        return None if method == "HEAD" else answer

    async def identify(self) -> Identity:
        if self._serverless:
            # Serverless has no `GET /`; listing the indices proves the endpoint, the signature
            # and the data access policy (aoss:DescribeIndex) at once.
            await self.indices("*")
            self._identity = Identity("OpenSearch Serverless", "")
            return self._identity
        try:
            answer = await self.request("GET", "/")
        except Refused as error:
            if error.status == 405:  # a minimal Elasticsearch, which has no root handler
                raise WrongProduct("Elasticsearch", self.product) from None
            if error.status == 404 and self._config.aws_sigv4 is not None:
                raise Refused(
                    404,
                    "not_found",
                    "no `GET /` here: for an OpenSearch Serverless collection, set "
                    "opensearch.aws_sigv4.service: aoss",
                ) from None
            raise
        version = answer.get("version", {})
        if version.get("distribution") != "opensearch":
            # Elasticsearch has no distribution field; OpenSearch (and its 1.x/2.x/3.x) does.
            raise WrongProduct("Elasticsearch", self.product)
        self._identity = Identity(self.product, str(version.get("number", "")))
        return self._identity

    async def scan(self, index: str, page_size: int) -> AsyncIterator[list[dict[str, Any]]]:
        """OpenSearch 2.x cannot page a point in time by (shard, doc): it has no `_shard_doc`,
        `_doc` alone repeats across shards, and sorting by `_id` loads every id into the heap.
        It scrolls instead (3.x and Serverless, which has no scroll, use a point in time)."""
        identity = self._identity or await self.identify()
        major = identity.version.partition(".")[0]
        pages = (
            self._scroll(index, page_size)
            if major.isdigit() and int(major) < 3
            else super().scan(index, page_size)
        )
        async for page in pages:
            yield page

    async def _scroll(self, index: str, page_size: int) -> AsyncIterator[list[dict[str, Any]]]:
        body = orjson.dumps({"size": page_size, "sort": ["_doc"]})
        answer = await self.request("POST", path_of(index, "_search"), {"scroll": KEEP_ALIVE}, body)
        scroll_id = answer.get("_scroll_id")
        try:
            while hits := answer["hits"]["hits"]:
                yield hits
                body = orjson.dumps({"scroll": KEEP_ALIVE, "scroll_id": scroll_id})
                answer = await self.request("POST", "/_search/scroll", body=body)
                scroll_id = answer.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                body = orjson.dumps({"scroll_id": [scroll_id]})
                await self.request("DELETE", "/_search/scroll", body=body)

    async def open_point_in_time(self, index: str, keep_alive: str) -> PointInTime:
        path = path_of(index, "_search", "point_in_time")
        answer = await self.request("POST", path, {"keep_alive": keep_alive})
        return PointInTime(str(answer["pit_id"]), "_shard_doc")

    async def close_point_in_time(self, pit: PointInTime) -> None:
        body = orjson.dumps({"pit_id": [pit.id]})
        await self.request("DELETE", "/_search/point_in_time", body=body)

    async def close(self) -> None:
        await self._client.close()


def _error_body(error: TransportError) -> Any:
    """The error answer's body. opensearch-py's aiohttp connection does not pass the answer's
    content type on, so its parsed `info` is missing and the raw text is in `error`."""
    if isinstance(error.info, dict):
        return error.info
    try:
        return orjson.loads(error.error)
    except (orjson.JSONDecodeError, TypeError):
        return error.error
