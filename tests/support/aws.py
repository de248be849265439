"""aiobotocore clients for the test endpoint and helpers that set up stream-enabled tables."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

REGION = "us-east-1"
# Each error is seen once: the code under test, not botocore, decides about retries.
NO_RETRIES = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"})


@dataclass
class Clients:
    dynamodb: Any
    streams: Any


class Keys(NamedTuple):
    access_key: str
    secret_key: str
    token: str


@asynccontextmanager
async def clients(
    endpoint_url: str, config: AioConfig = NO_RETRIES, keys: Keys | None = None
) -> AsyncIterator[Clients]:
    """`keys`: to sign with, instead of the environment's credentials."""
    session = get_session()
    access_key, secret_key, token = keys or (None, None, None)
    async with AsyncExitStack() as stack:
        ddb, streams = [
            await stack.enter_async_context(
                session.create_client(
                    service,
                    region_name=REGION,
                    endpoint_url=endpoint_url,
                    config=config,
                    aws_access_key_id=access_key,
                    aws_secret_access_key=secret_key,
                    aws_session_token=token,
                )
            )
            for service in ("dynamodb", "dynamodbstreams")
        ]
        yield Clients(ddb, streams)


@asynccontextmanager
async def clients_of_role(endpoint_url: str, role_arn: str) -> AsyncIterator[tuple[Clients, str]]:
    """Clients signing with `role_arn`'s credentials from moto's STS (moto serves them the
    role's account: its tables are not the default account's), and their access key."""
    async with get_session().create_client(
        "sts", region_name=REGION, endpoint_url=endpoint_url
    ) as sts:
        answer = await sts.assume_role(RoleArn=role_arn, RoleSessionName="test-setup")
    issued = answer["Credentials"]
    keys = Keys(issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"])
    async with clients(endpoint_url, keys=keys) as theirs:
        yield theirs, keys.access_key


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_stream_table(
    ddb: Any,
    name: str,
    hash_key: tuple[str, str] = ("pk", "S"),
    range_key: tuple[str, str] | None = None,
    view_type: str = "NEW_AND_OLD_IMAGES",
) -> str:
    """Creates an on-demand table with a stream and returns the stream's ARN."""
    keys = [hash_key] if range_key is None else [hash_key, range_key]
    response = await ddb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": attr, "KeyType": kind}
            for (attr, _), kind in zip(keys, ["HASH", "RANGE"], strict=False)
        ],
        AttributeDefinitions=[{"AttributeName": attr, "AttributeType": t} for attr, t in keys],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view_type},
    )
    return str(response["TableDescription"]["LatestStreamArn"])


async def describe_all_shards(streams: Any, stream_arn: str, page_size: int = 100) -> list[Any]:
    shards: list[Any] = []
    kwargs: dict[str, Any] = {"StreamArn": stream_arn, "Limit": page_size}
    while True:
        description = (await streams.describe_stream(**kwargs))["StreamDescription"]
        shards.extend(description["Shards"])
        if "LastEvaluatedShardId" not in description:
            return shards
        kwargs["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]


async def read_shard(streams: Any, iterator: str | None, limit: int = 1000) -> list[Any]:
    """Reads a shard from `iterator` until it is closed and drained, or until a poll comes back
    empty on an open shard."""
    records: list[Any] = []
    while iterator is not None:
        page = await streams.get_records(ShardIterator=iterator, Limit=limit)
        records.extend(page["Records"])
        iterator = page.get("NextShardIterator")
        if not page["Records"] and iterator is not None:
            break
    return records
