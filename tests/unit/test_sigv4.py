"""streamsync's own SigV4 signing must sign exactly as botocore does: moto does not check
signatures, so these tests are what stands between a signing mistake and every GetRecords failing
on AWS; for OpenSearch, tests/integration/test_sigv4.py also checks requests on the wire."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
from unittest import mock

import pytest
from aiobotocore.credentials import AioCredentials
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsync.awsjson import CONTENT_TYPE
from streamsync.sigv4 import Signer, host_header, strict_query
from streamsync.sink.engine import path_of

URLS = [
    "http://127.0.0.1:5000",
    "http://localhost:8000/",
    "https://streams.dynamodb.us-east-1.amazonaws.com",
    "https://dynamodb.eu-west-1.amazonaws.com:443/",
    "http://[::1]:5000/",
]


def _botocore_headers(
    url: str, target: str, body: bytes, credentials: Credentials, region: str, moment: str
) -> dict[str, str]:
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": target},
    )
    clock = datetime.datetime.strptime(moment, "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=clock):
        SigV4Auth(credentials, "dynamodb", region).add_auth(request)
    return dict(request.headers.items())


@settings(max_examples=60, deadline=None)
@given(
    url=st.sampled_from(URLS),
    target=st.sampled_from(["DynamoDBStreams_20120810.GetRecords", "DynamoDB_20120810.UpdateItem"]),
    body=st.binary(max_size=2000),
    region=st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2"]),
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789+/", min_size=1),
    token=st.none() | st.text(alphabet="abcdefXYZ0123456789+/=", min_size=1, max_size=400),
)
def test_signs_as_botocore_does(
    url: str, target: str, body: bytes, region: str, secret: str, token: str | None
) -> None:
    signer = Signer(AioCredentials("AKIDEXAMPLE", secret, token), region, "dynamodb")
    headers = [("Host", host_header(url)), ("Content-Type", CONTENT_TYPE), ("X-Amz-Target", target)]
    signed = dict(asyncio.run(signer.signed("POST", "/", headers, body)))
    expected = _botocore_headers(
        url, target, body, Credentials("AKIDEXAMPLE", secret, token), region, signed["X-Amz-Date"]
    )
    assert signed["Authorization"] == expected["Authorization"]
    assert signed.get("X-Amz-Security-Token") == expected.get("X-Amz-Security-Token")
    assert signed["Host"] == host_header(url)


async def test_new_credentials_are_used_once_refreshed() -> None:
    """Rotated credentials (an IAM role's, every hour) must sign the very next request."""
    credentials = AioCredentials("AKIDOLD", "old-secret")
    signer = Signer(credentials, "us-east-1", "dynamodb")
    headers = [("Host", "127.0.0.1:5000"), ("Content-Type", CONTENT_TYPE)]
    before = dict(await signer.signed("POST", "/", headers, b"{}"))["Authorization"]
    credentials.access_key, credentials.secret_key = "AKIDNEW", "new-secret"
    after = dict(await signer.signed("POST", "/", headers, b"{}"))["Authorization"]
    assert "Credential=AKIDOLD/" in before
    assert "Credential=AKIDNEW/" in after


IDS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
).filter(lambda text: text not in (".", ".."))
QUERY_VALUES = st.text(alphabet=" ,*+=&/:%~-_.aZ09é", max_size=20)


@settings(max_examples=80, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE"]),
    index=st.sampled_from(["orders", "streamsync-tombstones-*", "a.b_c-d"]),
    doc_id=IDS,
    params=st.dictionaries(st.sampled_from(["filter_path", "q", "keep_alive"]), QUERY_VALUES),
    body=st.binary(max_size=500),
    service=st.sampled_from(["es", "aoss"]),
)
def test_signs_opensearch_requests_as_botocore_does(
    method: str, index: str, doc_id: str, params: dict[str, str], body: bytes, service: str
) -> None:
    """Any document id in the path, any query value, both services (aoss with the body's hash
    in a signed X-Amz-Content-SHA256 header)."""
    target = path_of(index, "_doc", doc_id) + (f"?{strict_query(params)}" if params else "")
    host = "search-demo.us-east-1.es.amazonaws.com"
    signer = Signer(
        AioCredentials("AKIDEXAMPLE", "secret"), "us-east-1", service, content_sha256_header=True
    )
    signed = dict(asyncio.run(signer.signed(method, target, [("Host", host)], body)))
    request = AWSRequest(
        method=method,
        url=f"https://{host}{target}",
        data=body,
        headers={"X-Amz-Content-SHA256": signed["x-amz-content-sha256"]},
    )
    clock = datetime.datetime.strptime(signed["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=clock):
        SigV4Auth(Credentials("AKIDEXAMPLE", "secret"), service, "us-east-1").add_auth(request)
    assert signed["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    assert signed["Authorization"] == request.headers["Authorization"]


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ({"q": 'tag:"a b"'}, "q=tag%3A%22a%20b%22"),
        ({"filter_path": "docs._id,docs._source.v"}, "filter_path=docs._id%2Cdocs._source.v"),
        ({"x": "1+1=2", "y": "é*"}, "x=1%2B1%3D2&y=%C3%A9%2A"),
    ],
)
def test_a_query_is_written_in_sigv4s_own_encoding(params: dict[str, str], query: str) -> None:
    assert strict_query(params) == query


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://dynamodb.us-east-1.amazonaws.com", "dynamodb.us-east-1.amazonaws.com"),
        ("https://dynamodb.us-east-1.amazonaws.com:443/", "dynamodb.us-east-1.amazonaws.com"),
        ("http://localhost:80/", "localhost"),
        ("https://localhost:8443/", "localhost:8443"),
        ("http://[::1]:5000/", "[::1]:5000"),
    ],
)
def test_host_header(url: str, host: str) -> None:
    assert host_header(url) == host
