"""A reverse proxy that checks AWS Signature Version 4 the way Amazon OpenSearch Service's front
door does, then forwards the request to a plain HTTP OpenSearch node.

It answers every request it cannot verify with 403 and AWS's error shape, and forwards the others
byte-for-byte (raw path, raw query, body, Content-Type and Content-Encoding), so tests can run
streamsync's signed OpenSearch client against a real node. The signature is recomputed with
botocore's SigV4Auth, modelled on the server side rather than on any client:

* the canonical query is built by decoding each key and value (a '+' read as a space) and
  re-encoding it in SigV4's own encoding, as AWS does: a client that encodes '+', ',' or '*'
  differently from what it signed is refused;
* the raw path is used as received; botocore encodes it once more (double encoding, as for every
  service but S3);
* only the headers named in SignedHeaders are signed, with their values as received;
* the signing time is the request's X-Amz-Date, passed to botocore's canonical-request,
  string-to-sign and signature steps directly (no patched clock: requests are served
  concurrently).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote_to_bytes

import aiohttp
from aiohttp import web
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from yarl import URL

ALGORITHM = "AWS4-HMAC-SHA256"
# How far X-Amz-Date may be from the proxy's clock, either way (AWS allows 5 minutes).
MAX_SKEW = timedelta(minutes=5)
# Bulk requests can be large; aiohttp's default limit (1 MiB) would refuse them.
MAX_BODY = 512 * 1024 * 1024

INVALID_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)
INVALID_TOKEN = "The security token included in the request is invalid."
EXPIRED_TOKEN = "The security token included in the request is expired"
MISSING_TOKEN = "Missing Authentication Token"

# (method, raw path, raw query, body) -> the same, as the upstream is to receive them.
RequestTransform = Callable[[str, str, str, bytes], tuple[str, str, str, bytes]]


@dataclass(frozen=True)
class Seen:
    """One request the proxy answered."""

    method: str
    path: str  # raw, as received (percent-encoding untouched)
    query: str  # raw, as received ('' when there was none)
    access_key: str | None  # from the Authorization header's scope, when it could be read
    reason: str = ""  # why it was refused ('' when accepted)


class Refused(Exception):
    """A request AWS would answer with an error (403 unless said otherwise)."""

    def __init__(
        self, reason: str, message: str, error_type: str, access_key: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        self.error_type = error_type
        self.access_key = access_key


def canonical_query(raw_query: str) -> str:
    """AWS's server-side canonical query string for `raw_query` as received: each key and value
    percent-decoded ('+' as a space), re-encoded with only A-Z a-z 0-9 - _ . ~ left bare, the
    pairs sorted by key then value."""
    pairs: list[tuple[str, str]] = []
    for pair in raw_query.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        pairs.append((_reencode(key), _reencode(value)))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _reencode(component: str) -> str:
    # Bytes all the way: a component that is not valid UTF-8 once decoded survives unchanged.
    return quote(unquote_to_bytes(component.replace("+", " ")), safe="-_.~")


class _ServerSideSigV4(SigV4Auth):
    """botocore's SigV4 with the server's view of which headers are signed: exactly those the
    request names in SignedHeaders (botocore's client side leaves some out, e.g. User-Agent)."""

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name, value in request.headers.items():
            headers[name.lower()] = value  # repeated names are kept, as get_all() needs
        return headers


@dataclass(frozen=True)
class _Authorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str


def _parse_authorization(value: str) -> _Authorization:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise Refused(
            f"unsupported algorithm {algorithm!r}",
            f"Authorization header requires '{ALGORITHM}' algorithm.",
            "IncompleteSignatureException",
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, content = part.strip().partition("=")
        if sep:
            fields[name] = content
    for name in ("Credential", "SignedHeaders", "Signature"):
        if name not in fields:
            raise Refused(
                f"no {name} in Authorization",
                f"Authorization header requires '{name}' parameter. Authorization={value}",
                "IncompleteSignatureException",
            )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not scope[0]:
        raise Refused(
            f"malformed credential scope {fields['Credential']!r}",
            "Credential should be scoped to a valid region. ",
            "IncompleteSignatureException",
        )
    return _Authorization(
        access_key=scope[0],
        date=scope[1],
        region=scope[2],
        service=scope[3],
        signed_headers=[h for h in fields["SignedHeaders"].split(";") if h],
        signature=fields["Signature"],
    )


def _error(status: int, message: str, error_type: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"message": message}).encode(),
        headers={"Content-Type": "application/json", "x-amzn-ErrorType": error_type},
    )


class SigV4Proxy:
    """See the module docstring. Start it, `allow` credentials, point a client at `start()`'s URL,
    then look at `accepted` / `refused`."""

    def __init__(self, upstream: str, *, region: str = "us-east-1", service: str = "es") -> None:
        if service not in ("es", "aoss"):
            raise ValueError(f"service must be 'es' or 'aoss', not {service!r}")
        self.upstream = upstream.rstrip("/")
        self.region = region
        self.service = service
        self.accepted: list[Seen] = []
        self.refused: list[Seen] = []
        # Applied to verified requests before forwarding (a fault a test wants the server to have).
        self.transform_request: RequestTransform | None = None
        self._credentials: dict[str, tuple[str, str | None]] = {}
        self._revoked: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""
        """The base URL, once started."""

    # -- credentials ----------------------------------------------------------------------------

    def allow(self, access_key: str, secret_key: str, token: str | None = None) -> None:
        """`access_key` signs valid requests from now on (with `token` as its session token)."""
        self._credentials[access_key] = (secret_key, token)
        self._revoked.discard(access_key)

    def revoke(self, access_key: str) -> None:
        """`access_key` no longer signs valid requests (its temporary credentials expired)."""
        self._credentials.pop(access_key, None)
        self._revoked.add(access_key)

    def keys_used(self) -> collections.Counter[str]:
        """Accepted requests per access key."""
        return collections.Counter(s.access_key for s in self.accepted if s.access_key is not None)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        """Serves on 127.0.0.1, a free port; returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("SigV4Proxy already started")
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress=False: a gzip body is signed, and forwarded, compressed.
        runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- serving --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        body = await request.read()
        try:
            access_key = self._verify(request, path, query, body)
        except Refused as refusal:
            self.refused.append(
                Seen(request.method, path, query, refusal.access_key, refusal.reason)
            )
            return _error(403, refusal.message, refusal.error_type)
        self.accepted.append(Seen(request.method, path, query, access_key))
        return await self._forward(request, path, query, body)

    def _verify(self, request: web.Request, path: str, query: str, body: bytes) -> str:
        """The access key that signed `request`; Refused if AWS would not take it."""
        header = request.headers.get("Authorization")
        if header is None:
            raise Refused("unsigned", MISSING_TOKEN, "MissingAuthenticationTokenException")
        auth = _parse_authorization(header)
        key = auth.access_key

        def refuse(reason: str, message: str, error_type: str) -> Refused:
            return Refused(reason, message, error_type, key)

        amz_date = request.headers.get("X-Amz-Date")
        if amz_date is None:
            raise refuse(
                "no X-Amz-Date",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                f"header. Authorization={header}",
                "IncompleteSignatureException",
            )
        try:
            signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
        except ValueError:
            raise refuse(
                f"malformed X-Amz-Date {amz_date!r}",
                f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See "
                "http://en.wikipedia.org/wiki/ISO_8601",
                "IncompleteSignatureException",
            ) from None

        if key not in self._credentials:
            if key in self._revoked:
                raise refuse(f"revoked key {key}", EXPIRED_TOKEN, "ExpiredTokenException")
            raise refuse(f"unknown key {key}", INVALID_TOKEN, "UnrecognizedClientException")
        secret, token = self._credentials[key]
        if request.headers.get("X-Amz-Security-Token") != token:
            raise refuse("session token mismatch", INVALID_TOKEN, "UnrecognizedClientException")

        if auth.region != self.region:
            raise refuse(
                f"scope region {auth.region!r}",
                "Credential should be scoped to a valid region. ",
                "InvalidSignatureException",
            )
        if auth.service != self.service:
            raise refuse(
                f"scope service {auth.service!r}",
                f"Credential should be scoped to correct service: '{self.service}'. ",
                "InvalidSignatureException",
            )
        if auth.date != amz_date[:8]:
            raise refuse(
                f"scope date {auth.date!r}",
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                "from HTTP: "
                f"'{auth.date}' != '{amz_date[:8]}', from '{amz_date}'.",
                "InvalidSignatureException",
            )
        now = datetime.now(UTC)
        if abs(now - signed_at) > MAX_SKEW:
            now_text = now.strftime(SIGV4_TIMESTAMP)
            if signed_at < now:
                limit = (now - MAX_SKEW).strftime(SIGV4_TIMESTAMP)
                message = f"Signature expired: {amz_date} is now earlier than {limit} "
                message += f"({now_text} - 5 min.)"
            else:
                limit = (now + MAX_SKEW).strftime(SIGV4_TIMESTAMP)
                message = f"Signature not yet current: {amz_date} is still later than {limit} "
                message += f"({now_text} + 5 min.)"
            raise refuse(
                f"X-Amz-Date {amz_date} off by more than 5 minutes",
                message,
                "InvalidSignatureException",
            )

        signed = [name.lower() for name in auth.signed_headers]
        if "host" not in signed:
            raise refuse(
                "host not signed",
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
                "IncompleteSignatureException",
            )
        missing = [name for name in signed if name not in request.headers]
        if missing:
            raise refuse(
                f"signed headers absent: {missing}", INVALID_SIGNATURE, "InvalidSignatureException"
            )

        body_hash = hashlib.sha256(body).hexdigest()
        content_sha = request.headers.get("X-Amz-Content-SHA256")
        if self.service == "aoss" and (content_sha is None or "x-amz-content-sha256" not in signed):
            raise refuse(
                "X-Amz-Content-SHA256 absent or unsigned (aoss)",
                INVALID_SIGNATURE,
                "InvalidSignatureException",
            )
        if content_sha is not None and content_sha != body_hash:
            raise refuse(
                "X-Amz-Content-SHA256 does not match the body",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                "InvalidSignatureException",
            )

        expected = self._signature(request, path, query, body, signed, amz_date, key, secret, token)
        if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
            raise refuse("signature mismatch", INVALID_SIGNATURE, "InvalidSignatureException")
        return key

    def _signature(
        self,
        request: web.Request,
        path: str,
        query: str,
        body: bytes,
        signed: list[str],
        amz_date: str,
        access_key: str,
        secret: str,
        token: str | None,
    ) -> str:
        """botocore's signature for the request as received, signed at `amz_date`."""
        canonical = canonical_query(query)
        url = f"http://{request.headers['Host']}{path}" + (f"?{canonical}" if canonical else "")
        # Only the signed headers, each value as received (repeated ones kept, in order).
        aws_request = AWSRequest(method=request.method, url=url, data=body)
        for name in dict.fromkeys(signed):
            for value in request.headers.getall(name):
                aws_request.headers[name] = value  # HTTPHeaders appends: repeats are kept
        aws_request.context["timestamp"] = amz_date
        signer = _ServerSideSigV4(Credentials(access_key, secret, token), self.service, self.region)
        canonical_request = signer.canonical_request(aws_request)
        string_to_sign = signer.string_to_sign(aws_request, canonical_request)
        return signer.signature(string_to_sign, aws_request)

    async def _forward(
        self, request: web.Request, path: str, query: str, body: bytes
    ) -> web.StreamResponse:
        assert self._http is not None
        method = request.method
        if self.transform_request is not None:
            method, path, query, body = self.transform_request(method, path, query, body)
        url = URL(self.upstream + path + (f"?{query}" if query else ""), encoded=True)
        headers = {
            name: request.headers[name]
            for name in ("Content-Type", "Content-Encoding")
            if name in request.headers
        }
        try:
            async with self._http.request(
                method,
                url,
                data=body if body else None,
                headers=headers,
                # Never invent a Content-Type the client did not send.
                skip_auto_headers=() if "Content-Type" in headers else ("Content-Type",),
            ) as upstream:
                answer = await upstream.read()
                status = upstream.status
                content_type = upstream.headers.get("Content-Type")
        except (TimeoutError, aiohttp.ClientError) as error:
            return _error(502, f"upstream unreachable: {error!r}", "BadGateway")
        response_headers = {"Content-Type": content_type} if content_type else {}
        if method == "HEAD":
            return web.Response(status=status, headers=response_headers)
        return web.Response(status=status, body=answer, headers=response_headers)
