"""The AWS calls a worker makes thousands of times a second, sent as raw signed JSON requests.

An idle worker holding a thousand shards polls each about once a second and renews each lease
every few seconds. Through aiobotocore one such call costs ~0.4 ms of CPU, most of it request
building, botocore's generic SigV4 signer (~0.1 ms alone) and response parsing. Here the body is
dumped and the answer parsed by orjson, and the request is signed by the AWS Common Runtime's C
signer (awscrt, the one botocore itself uses when installed). Rare calls stay on aiobotocore.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from streamsync.sigv4 import CredentialSource, Signer, host_header

# Throttling and server-side failures: waiting and trying again is the fix.
RETRYABLE_CODES = frozenset(
    {
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
    }
)

CONTENT_TYPE = "application/x-amz-json-1.0"


class AwsError(Exception):
    """An error answer from DynamoDB or DynamoDB Streams."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES or self.status >= 500

    @classmethod
    def from_client_error(cls, error: ClientError) -> AwsError:
        info = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
        return cls(str(info.get("Code", "Unknown")), str(info.get("Message", "")), int(status))


def is_transient(error: BaseException) -> bool:
    """Worth retrying: throttling, server errors, and a network that may come back."""
    if isinstance(error, AwsError):
        return error.retryable
    if isinstance(error, ClientError):
        return AwsError.from_client_error(error).retryable
    return isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | BotoCoreError | OSError)


class AwsJsonClient:
    """POSTs AWS JSON-protocol calls to one endpoint; answers come back as plain dicts."""

    def __init__(
        self,
        url: str,
        region: str,
        credentials: CredentialSource | None,
        http: aiohttp.ClientSession,
    ) -> None:
        self._url = url
        self._host = host_header(url)
        self._signer = Signer(credentials, region, "dynamodb") if credentials is not None else None
        self._http = http

    async def call(self, target: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The answer to `target` (e.g. "DynamoDB_20120810.UpdateItem"); AwsError if refused."""
        body = orjson.dumps(payload)
        headers = [("Host", self._host), ("Content-Type", CONTENT_TYPE), ("X-Amz-Target", target)]
        if self._signer is not None:
            headers = await self._signer.signed("POST", "/", headers, body)
        async with self._http.post(self._url, data=body, headers=headers) as response:
            answer = await response.read()
            status = response.status
        try:
            data = orjson.loads(answer) if answer else {}
        except orjson.JSONDecodeError:
            # Not an AWS answer (a proxy's or load balancer's error page): worth retrying.
            raise AwsError(f"HTTP{status}", answer[:200].decode(errors="replace"), 502) from None
        if status != 200:
            code = str(data.get("__type", f"HTTP{status}")).rpartition("#")[2]
            raise AwsError(code, str(data.get("message", data.get("Message", ""))), status)
        return dict(data)
