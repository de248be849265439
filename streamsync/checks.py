"""What must hold before anything is written: every table, its stream, the leases and the
cluster, each problem as one line a user can act on.

All of them are found in one pass, so that a first deployment is fixed in one round rather than
one error at a time, and before the first write, so that nothing half-done is left behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from botocore.exceptions import EndpointConnectionError, NoCredentialsError

from streamsync.assumerole import RoleRefused
from streamsync.awsjson import AwsError
from streamsync.config import Config, TableConfig
from streamsync.engine import Engine
from streamsync.errors import Passing, StreamsyncError
from streamsync.index_fit import Sampled, misfits
from streamsync.leases.model import Lease, other_target, target_changed
from streamsync.sink.cluster import cluster_problems
from streamsync.source.client import TableStream
from streamsync.transform.actions import load_hook

IMAGE_VIEW_TYPES = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
MAX_WAIT_SECONDS = 30.0

log = logging.getLogger("streamsync")


async def problems(engine: Engine, *, sample_items: bool = False) -> list[str]:
    """Every problem that would stop `run()`, one line each; nothing is written. With
    `sample_items` (validate), also each field of a sample of a table's items that its existing
    index would refuse (streamsync.index_fit): `run()` would not stop for those, it would turn
    them into dead letters."""
    found: list[str] = []
    leases: list[Lease] | None = None  # read once, when a table's stream is known
    usable: list[Sampled] = []
    for position, table in enumerate(engine.config.tables):
        try:
            stream = await engine.api.describe_table(table.table)
        except (NoCredentialsError, EndpointConnectionError) as error:
            found.append(_aws_unusable(engine.config, error))
            break
        except RoleRefused as error:  # aws.role_arn: no table can be read without it
            found.append(str(error))
            break
        except AwsError as error:
            found.append(_table_problem(engine.config, position, table, error))
            continue
        found.extend(await _stream_problems(engine, table, stream))
        if leases is None:
            leases = await _existing_leases(engine)
        found.extend(_target_problems(engine, position, table, stream, leases))
        try:
            where = f"tables[{position}].transform"
            hook = load_hook(table.transform, where) if table.transform is not None else None
        except StreamsyncError as error:
            found.append(str(error))
            continue
        usable.append(Sampled(position, table, stream, hook))
    cluster = await cluster_problems(engine.search, engine.config)
    found.extend(cluster)
    if sample_items and not cluster:
        found.extend(await misfits(engine, usable))
    return found


async def refuse_problems(engine: Engine) -> None:
    """Raises, with every problem `problems` finds, before a command writes anything."""
    found = await problems(engine)
    if found:
        raise StreamsyncError("\n".join(found))


async def wait_out_passing_problems(
    engine: Engine, report: Callable[[list[str]], None], first_wait: float = 1.0
) -> bool:
    """True once `problems` finds none. While every problem found is one that passes by itself
    (see Passing: a cluster down for maintenance, a network out), reports them through `report`
    (an empty list once they passed) and checks again, waiting twice as long each time up to
    MAX_WAIT_SECONDS; raises as `refuse_problems` once any is lasting; False when the engine was
    asked to stop meanwhile."""
    wait = first_wait
    since = time.monotonic()
    waited = False
    while True:
        found = await problems(engine)
        if any(not isinstance(problem, Passing) for problem in found):
            raise StreamsyncError("\n".join(found))
        if not found:
            report([])
            if waited:
                log.info("recovered", extra={"waited_seconds": round(time.monotonic() - since, 1)})
            return True
        report(found)
        log.warning("waiting: %s", "; ".join(found), extra={"retry_in_seconds": wait})
        try:
            await asyncio.wait_for(engine.stopping.wait(), wait)
        except TimeoutError:
            waited = True
            wait = min(wait * 2, MAX_WAIT_SECONDS)
            continue
        return False


def _aws_unusable(config: Config, error: NoCredentialsError | EndpointConnectionError) -> str:
    if isinstance(error, NoCredentialsError):
        return (
            "AWS: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or run with an IAM role"
        )
    endpoint = config.aws.endpoint_url or f"the {config.aws.region} endpoint"
    if config.aws.role_arn is not None:  # the role's credentials come first, from STS
        return Passing(
            f"AWS: cannot reach {error.kwargs.get('endpoint_url', 'STS or DynamoDB')}; check "
            "aws.sts_endpoint_url, aws.endpoint_url and aws.region"
        )
    return Passing(
        f"AWS: cannot reach DynamoDB at {endpoint}; check aws.endpoint_url and aws.region"
    )


def _table_problem(config: Config, position: int, table: TableConfig, error: AwsError) -> str:
    if error.code == "ResourceNotFoundException":
        return (
            f"table {table.table}: not found in {config.aws.region}; "
            f"create it or correct tables[{position}].table"
        )
    return f"table {table.table}: DescribeTable failed ({error.code}: {error.message})"


async def _stream_problems(engine: Engine, table: TableConfig, stream: TableStream) -> list[str]:
    enable = (
        f"aws dynamodb update-table --table-name {table.table} --stream-specification "
        "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES"
    )
    if not stream.stream_enabled or stream.stream_arn is None:
        return [f"table {table.table}: its stream is not enabled; enable it with: {enable}"]
    if stream.view_type not in IMAGE_VIEW_TYPES:
        return [
            f"table {table.table}: its stream's view type {stream.view_type} carries no new "
            "images; disable the stream and enable it again with NEW_AND_OLD_IMAGES"
        ]
    if table.stream_arn is not None and table.stream_arn != stream.stream_arn:
        try:
            await engine.api.describe_shards(table.stream_arn)
        except AwsError as error:
            return [f"table {table.table}: stream_arn {table.stream_arn}: {error.code}"]
    return []


async def _existing_leases(engine: Engine) -> list[Lease]:
    if not await engine.leases.exists():
        return []
    return (await engine.leases.scan()).leases


def _target_problems(
    engine: Engine, position: int, table: TableConfig, stream: TableStream, leases: list[Lease]
) -> list[str]:
    """Leases of this stream that fed another index: reading on from them would leave this
    index without what came before (a changed `index`, or another deployment sharing the
    lease table with another target)."""
    arn = table.stream_arn or stream.stream_arn
    other = other_target((lease for lease in leases if lease.stream_arn == arn), table.index)
    if other is None:
        return []
    return [target_changed(table.table, position, engine.leases.name, table.index, other)]
