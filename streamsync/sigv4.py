"""AWS Signature Version 4 for the requests streamsync sends itself, with the credentials of the
moment.

Two kinds of request are signed here: the hot DynamoDB calls (see streamsync.awsjson) and every
request to Amazon OpenSearch Service or OpenSearch Serverless. Both sign with the AWS Common
Runtime's C signer (awscrt, the one botocore uses when installed, ~4x cheaper than botocore's
Python one) and take their credentials from the standard chain through aiobotocore, asking for
them before each request: temporary credentials (IRSA web identity, an instance role, SSO, or
aws.role_arn's, which sign the tables' calls) expire within hours, and botocore refreshes them
only when asked, ahead of their expiry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

from awscrt import auth as crt_auth
from awscrt import http as crt_http
from yarl import URL

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials


class CredentialSource(Protocol):
    """What signing needs of credentials: the keys of the moment. aiobotocore's static and
    refreshable credentials both are one (the refreshable renew themselves when asked)."""

    async def get_frozen_credentials(self) -> ReadOnlyCredentials: ...


def host_header(url: str) -> str:
    """The Host header aiohttp sends for `url`; it is signed, so both must agree."""
    parsed = URL(url)
    host = f"[{parsed.raw_host}]" if ":" in (parsed.raw_host or "") else str(parsed.raw_host)
    return host if parsed.is_default_port() else f"{host}:{parsed.port}"


def strict_query(params: Mapping[str, Any]) -> str:
    """A query string in SigV4's own encoding (every byte but A-Z a-z 0-9 - _ . ~ escaped, a
    space as %20): a server that decodes and re-encodes it gets back the string that was signed,
    whichever way it reads '+', ',' or '*'."""
    return urlencode({k: str(v) for k, v in params.items()}, safe="-_.~", quote_via=quote)


class Signer:
    """Signs requests for one region and service."""

    def __init__(
        self,
        credentials: CredentialSource,
        region: str,
        service: str,
        *,
        content_sha256_header: bool = False,
    ) -> None:
        """`content_sha256_header`: also send the body's hash as X-Amz-Content-SHA256 (OpenSearch
        Serverless refuses requests without it)."""
        self._credentials = credentials
        self._region = region
        self._service = service
        self._body_header = (
            crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256
            if content_sha256_header
            else crt_auth.AwsSignedBodyHeaderType.NONE
        )
        self._provider: Any = None
        self._provider_for: tuple[str | None, str | None, str | None] | None = None

    @property
    def access_key(self) -> str | None:
        """The key id signing now (for tests and logs; not a secret)."""
        return None if self._provider_for is None else self._provider_for[0]

    async def refresh(self) -> None:
        """Takes up the current credentials; botocore renews temporary ones when they near
        their expiry, so this is cheap except when they are due."""
        frozen = await self._credentials.get_frozen_credentials()
        identity = (frozen.access_key, frozen.secret_key, frozen.token)
        if identity != self._provider_for:
            self._provider = crt_auth.AwsCredentialsProvider.new_static(*identity)
            self._provider_for = identity

    def sign(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> list[tuple[str, str]]:
        """`headers` (which must hold Host) plus the signature headers, for a request to `target`
        (path and query, exactly as sent) with `body`, exactly as sent. Call `refresh` first."""
        if self._provider is None:
            raise RuntimeError("Signer.refresh() must run before the first sign()")
        request = crt_http.HttpRequest(method, target, crt_http.HttpHeaders(headers))
        config = crt_auth.AwsSigningConfig(
            credentials_provider=self._provider,
            region=self._region,
            service=self._service,
            signed_body_value=hashlib.sha256(body).hexdigest(),
            signed_body_header_type=self._body_header,
        )
        # Static credentials sign synchronously: the future is already resolved.
        crt_auth.aws_sign_request(request, config).result()
        return list(request.headers)

    async def signed(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> list[tuple[str, str]]:
        """`sign` with the credentials of the moment."""
        await self.refresh()
        return self.sign(method, target, headers, body)
