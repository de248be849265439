"""aws.role_arn, against moto's STS over the wire: the tables live in another account and are read
with the role's credentials, renewed before they expire; the lease table stays in the worker's
account, under the worker's own key; a refusal is one line naming the role and the fix.

moto's STS answers AssumeRole with keys ("ASIA...") that moto's DynamoDB then serves from the
role's account, so a table made with the role's keys exists there and not in the worker's
account (123456789012, where the environment's "testing" key leads).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from streamsync.app import StreamSync
from streamsync.assumerole import RoleRefused, role_credentials, session_name, session_with
from streamsync.awsjson import AwsJsonClient, is_transient
from streamsync.config import AwsConfig
from streamsync.engine import AWS_CLIENT_CONFIG
from streamsync.errors import StreamsyncError
from tests.support import aws
from tests.support.moto_server import Request, StreamsServer
from tests.support.pipeline import make_config, pk, running, wait_until_equal
from tests.support.search import Probe, Target

TABLE_ACCOUNT = "111111111111"
ROLE = f"arn:aws:iam::{TABLE_ACCOUNT}:role/streamsync-reader"
WORKER_KEY = "testing"  # the worker's own credentials (tests/conftest.py)
DESCRIBE_TABLE = "DynamoDB_20120810.DescribeTable"


def role_section(moto_endpoint: str, **settings: Any) -> dict[str, Any]:
    return {
        "region": aws.REGION,
        "endpoint_url": moto_endpoint,
        "sts_endpoint_url": moto_endpoint,
        "role_arn": ROLE,
        **settings,
    }


def by_streamsync(request: Request) -> bool:
    """Not the test's own AssumeRole (clients_of_role's session)."""
    return request.body.get("RoleSessionName") != "test-setup"


async def test_tables_of_another_account_are_read_with_the_role_and_leases_kept_at_home(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    target: Target,
    probe: Probe,
    index_name: str,
) -> None:
    seen: list[Request] = []
    streams_server.faults.observers.append(seen.append)
    leases = aws.unique_name("leases")
    table = aws.unique_name("theirs")
    async with aws.clients_of_role(moto_endpoint, ROLE) as (theirs, setup_key):
        await aws.create_stream_table(theirs.dynamodb, table)
        for i in range(10):
            await theirs.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
        config = make_config(
            moto_endpoint,
            target,
            leases,
            [{"table": table, "index": index_name}],
            aws=role_section(moto_endpoint, external_id="orders-ext-7"),
        )
        async with running(config) as sync:
            await wait_until_equal(theirs.dynamodb, probe, table, index_name, pk)
            for i in range(10, 15):
                await theirs.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
            await theirs.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "k0"}})
            await wait_until_equal(theirs.dynamodb, probe, table, index_name, pk)

    # One AssumeRole for the whole run, signed with the worker's key, with what was configured.
    [assumed] = [r for r in seen if r.action == "AssumeRole" and by_streamsync(r)]
    assert assumed.access_key == WORKER_KEY
    assert assumed.body["RoleArn"] == ROLE
    assert assumed.body["ExternalId"] == "orders-ext-7"
    assert assumed.body["RoleSessionName"] == session_name(config.aws, sync.worker_id)
    assert assumed.body["RoleSessionName"].startswith("streamsync-")
    assert assumed.body["DurationSeconds"] == "3600"

    # Every call streamsync made about the table and its stream was signed with one role key.
    about_table = [r for r in seen if r.table == table and r.access_key != setup_key]
    actions = {r.action for r in about_table}
    assert {"DescribeTable", "DescribeStream", "GetShardIterator", "GetRecords"} <= actions
    role_keys = {r.access_key for r in about_table}
    assert len(role_keys) == 1
    [role_key] = role_keys
    assert role_key is not None
    assert role_key.startswith("ASIA")
    # ... and the lease table's calls with the worker's own key.
    assert {r.access_key for r in seen if r.table == leases} == {WORKER_KEY}

    # The table is in the role's account only; the lease table in the worker's.
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        await clients.dynamodb.describe_table(TableName=table)
    await clients.dynamodb.describe_table(TableName=leases)


class JumpingClock:
    """The clock the role's credentials read (the `time_fetcher` botocore's refreshable
    credentials take): real time, until `jump` moves it ahead; the next AssumeRole streamsync
    sends brings it back (seen at moto's front, before STS answers). moto's STS stamps expiries
    by the real clock, so a clock left ahead would find each new set of credentials due too."""

    def __init__(self, streams_server: StreamsServer) -> None:
        self._ahead = timedelta(0)
        streams_server.faults.observers.append(self._back_on_assume_role)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self._ahead

    def jump(self, ahead: timedelta) -> None:
        self._ahead = ahead

    def _back_on_assume_role(self, request: Request) -> None:
        if request.action == "AssumeRole" and by_streamsync(request):
            self._ahead = timedelta(0)


async def role_table(moto_endpoint: str) -> str:
    """A table in the role's account."""
    async with aws.clients_of_role(moto_endpoint, ROLE) as (theirs, _):
        table = aws.unique_name("theirs")
        await aws.create_stream_table(theirs.dynamodb, table)
    return table


async def test_the_role_is_assumed_again_before_its_credentials_expire(
    moto_endpoint: str, streams_server: StreamsServer
) -> None:
    """What is injected: the clock the role's credentials read jumps 52 minutes ahead, as if
    that long had passed since the hour-long credentials were issued (8 minutes left: inside
    botocore's mandatory renewal window), until the role is assumed again (JumpingClock). STS,
    DynamoDB and both ways of signing (botocore's, and awscrt's in AwsJsonClient) are real."""
    seen: list[Request] = []
    streams_server.faults.observers.append(seen.append)
    table = await role_table(moto_endpoint)
    clock = JumpingClock(streams_server)
    credentials = clocked_role_credentials(moto_endpoint, clock)
    session = session_with(credentials)

    def assumed() -> list[Request]:
        return [r for r in seen if r.action == "AssumeRole" and by_streamsync(r)]

    def signers() -> list[str | None]:
        return [r.access_key for r in seen if r.action == "DescribeTable" and r.table == table]

    async with (
        session.create_client(
            "dynamodb", region_name=aws.REGION, endpoint_url=moto_endpoint
        ) as dynamodb,
        aiohttp.ClientSession() as http,
    ):
        raw = AwsJsonClient(moto_endpoint, aws.REGION, credentials, http)

        async def describe_both_ways() -> None:
            assert (await dynamodb.describe_table(TableName=table))["Table"]["TableName"] == table
            assert (await raw.call(DESCRIBE_TABLE, {"TableName": table}))["Table"]["TableName"]

        for _ in range(3):
            await describe_both_ways()
        assert len(assumed()) == 1
        [old_key] = set(signers())
        clock.jump(timedelta(minutes=52))
        for _ in range(3):
            await describe_both_ways()

    assert len(assumed()) == 2
    assert all(r.access_key == WORKER_KEY for r in assumed())
    assert old_key is not None
    assert old_key.startswith("ASIA")
    new_key = signers()[-1]
    assert new_key is not None
    assert new_key.startswith("ASIA")
    assert new_key != old_key
    assert signers()[-6:] == [new_key] * 6


@pytest.mark.parametrize(
    ("code", "status"), [("AccessDenied", 403), ("ValidationError", 400), ("Throttling", 400)]
)
async def test_a_renewal_refused_names_the_role_and_a_throttled_one_is_retried(
    moto_endpoint: str, streams_server: StreamsServer, code: str, status: int
) -> None:
    """Injected: the clock as in the test above, and STS's refusal of the renewal (in STS's own
    XML error form, parsed by botocore). A refusal is for good (not retried, one line naming
    the role and the fix); throttling is retried by streamsync's callers like any other."""
    table = await role_table(moto_endpoint)
    clock = JumpingClock(streams_server)
    credentials = clocked_role_credentials(moto_endpoint, clock)
    async with aiohttp.ClientSession() as http:
        raw = AwsJsonClient(moto_endpoint, aws.REGION, credentials, http)
        await raw.call(DESCRIBE_TABLE, {"TableName": table})
        streams_server.faults.inject(
            "AssumeRole", code, status=status, message="not for you", match=by_streamsync
        )
        clock.jump(timedelta(minutes=52))
        with pytest.raises((RoleRefused, ClientError)) as caught:
            await raw.call(DESCRIBE_TABLE, {"TableName": table})

    if code == "Throttling":
        assert isinstance(caught.value, ClientError)
        assert is_transient(caught.value)
        return
    assert isinstance(caught.value, RoleRefused)
    assert not is_transient(caught.value)
    fix = (
        "the role's trust policy must allow this worker's identity (with sts:ExternalId if it "
        "requires aws.external_id) and the worker's own policy sts:AssumeRole on the role"
        if code == "AccessDenied"
        else "check aws.role_arn, aws.external_id, aws.session_name and aws.duration_seconds"
    )
    assert (
        str(caught.value) == f"aws.role_arn {ROLE}: AssumeRole refused ({code}: not for you); {fix}"
    )


async def test_a_role_refused_at_start_is_one_problem_line_and_run_does_not_start(
    moto_endpoint: str, streams_server: StreamsServer, target: Target, index_name: str
) -> None:
    table = await role_table(moto_endpoint)
    streams_server.faults.inject(
        "AssumeRole", "AccessDenied", status=403, message="not authorized", times=2
    )
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name}],
        aws=role_section(moto_endpoint),
    )
    line = (
        f"aws.role_arn {ROLE}: AssumeRole refused (AccessDenied: not authorized); the role's "
        "trust policy must allow this worker's identity (with sts:ExternalId if it requires "
        "aws.external_id) and the worker's own policy sts:AssumeRole on the role"
    )
    async with StreamSync(config, serve_http=False) as sync:
        assert await sync.check() == [line]
        with pytest.raises(StreamsyncError) as caught:
            await sync.run()
    assert str(caught.value) == line


async def test_an_sts_endpoint_that_does_not_answer_is_named(
    moto_endpoint: str, target: Target, index_name: str
) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{unused.getsockname()[1]}"
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": aws.unique_name("theirs"), "index": index_name}],
        aws=role_section(moto_endpoint, sts_endpoint_url=nowhere),
    )
    async with StreamSync(config, serve_http=False) as sync:
        found = await sync.check()
    assert found == [
        f"AWS: cannot reach {nowhere}/; check aws.sts_endpoint_url, aws.endpoint_url and aws.region"
    ]


def clocked_role_credentials(moto_endpoint: str, clock: JumpingClock) -> Any:
    """The role's refreshable credentials, as the engine builds them, reading `clock`."""
    return role_credentials(
        get_session(),
        AwsConfig.model_validate(role_section(moto_endpoint)),
        "worker-1",
        AWS_CLIENT_CONFIG,
        clock=clock,
    )
