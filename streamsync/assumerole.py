"""The credentials of `aws.role_arn`: DynamoDB tables in another account, read through a role
that account lets this worker assume.

botocore's own machinery does the work, the one behind a profile's `role_arn`: an AssumeRole
fetcher signs its STS calls with the worker's credentials from the standard chain, and deferred
refreshable credentials call it before their first use and again once fewer than 15 minutes are
left (botocore's advisory window; from 10 minutes on, a request waits for the new ones), so the
role's credentials never lapse under a long run.

Only the calls about the tables and their streams go through the role. The lease table is
streamsync's own state and stays with the worker's identity in the worker's account, as do the
requests signed for Amazon OpenSearch (a domain of the worker's account): the tables' account
grants reading and nothing more.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioCredentialResolver,
    AioDeferredRefreshableCredentials,
)
from aiobotocore.session import AioSession, get_session
from botocore.credentials import CredentialProvider
from botocore.exceptions import ClientError, NoCredentialsError

from streamsync.awsjson import AwsError, is_transient
from streamsync.config import AwsConfig
from streamsync.errors import StreamsyncError

if TYPE_CHECKING:
    from aiobotocore.config import AioConfig

METHOD = "assume-role"  # botocore's name for credentials that came from AssumeRole

_NOT_IN_SESSION_NAMES = re.compile(r"[^\w+=,.@-]", re.ASCII)


class RoleRefused(StreamsyncError):
    """STS would not give this worker the role's credentials, for a reason waiting won't fix."""


def session_name(aws: AwsConfig, worker_id: str) -> str:
    """`aws.session_name`, or streamsync-<worker id> cut to STS's rules (64 characters, no
    others than [A-Za-z0-9_+=,.@-]): the tables' account's CloudTrail then names the worker."""
    if aws.session_name is not None:
        return aws.session_name
    return _NOT_IN_SESSION_NAMES.sub("-", f"streamsync-{worker_id}")[:64]


def refusal(role_arn: str, error: ClientError) -> str:
    """One line naming the role, what STS said and what to change."""
    refused = AwsError.from_client_error(error)
    if refused.code == "AccessDenied":
        fix = (
            "the role's trust policy must allow this worker's identity (with sts:ExternalId if "
            "it requires aws.external_id) and the worker's own policy sts:AssumeRole on the role"
        )
    else:
        fix = "check aws.role_arn, aws.external_id, aws.session_name and aws.duration_seconds"
    return f"aws.role_arn {role_arn}: AssumeRole refused ({refused.code}: {refused.message}); {fix}"


def _now() -> datetime:
    return datetime.now(UTC)


def role_credentials(
    worker: AioSession,
    aws: AwsConfig,
    worker_id: str,
    client_config: AioConfig,
    clock: Callable[[], datetime] = _now,
) -> AioDeferredRefreshableCredentials:
    """The role's credentials, assumed with `worker`'s at their first use and renewed before
    they expire (`clock`: what "now" is to them). A refusal raises RoleRefused; throttling or an
    unreachable STS raise as they are, for the caller's retries."""
    if aws.role_arn is None:
        raise ValueError("aws.role_arn is not set")
    role_arn = aws.role_arn
    extra_args: dict[str, Any] = {
        "RoleSessionName": session_name(aws, worker_id),
        "DurationSeconds": aws.duration_seconds,
    }
    if aws.external_id is not None:
        extra_args["ExternalId"] = aws.external_id

    async def assume() -> dict[str, Any]:
        # A fetcher per renewal: it signs with the worker's credentials of the moment, and its
        # cache starts empty, so a renewal the credentials ask for always reaches STS.
        source = await worker.get_credentials()
        if source is None:
            raise NoCredentialsError()  # reported as such by the start-up checks
        fetcher = AioAssumeRoleCredentialFetcher(
            # aiobotocore's fetcher enters the client context this returns; the stubs keep
            # botocore's signature (a client).
            client_creator=functools.partial(  # type: ignore[arg-type]
                worker.create_client,
                region_name=aws.region,
                endpoint_url=aws.sts_endpoint_url,
                config=client_config,
            ),
            source_credentials=source,
            role_arn=role_arn,
            extra_args=extra_args,
        )
        try:
            return dict(await fetcher.fetch_credentials())
        except ClientError as error:
            if is_transient(error):
                raise
            raise RoleRefused(refusal(role_arn, error)) from error

    return AioDeferredRefreshableCredentials(
        refresh_using=assume, method=METHOD, time_fetcher=clock
    )


class _Given(CredentialProvider):
    METHOD = METHOD

    def __init__(self, credentials: AioDeferredRefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    async def load(self) -> AioDeferredRefreshableCredentials:
        return self._credentials


def session_with(credentials: AioDeferredRefreshableCredentials) -> AioSession:
    """A session whose clients sign with `credentials` (refreshed as they come due), in place
    of the standard chain's."""
    session = get_session()
    session.register_component("credential_provider", AioCredentialResolver([_Given(credentials)]))
    return session
