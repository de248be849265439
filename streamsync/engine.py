"""The engine's parts, built once per `async with StreamSync(...)`.

Every command (check, status, run, backfill, verify, dlq replay) works with the same clients
and tables; building them all at once, before any command, leaves no part that a command could
find missing, and one place that decides how they are connected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from streamsync.assumerole import role_credentials, session_with
from streamsync.awsjson import AwsJsonClient
from streamsync.backfill import Backfill, Progress
from streamsync.config import Config, TableConfig
from streamsync.coordinator import Source
from streamsync.leases.heartbeats import Heartbeats
from streamsync.leases.progress import BackfillProgress
from streamsync.leases.table import LeaseTable
from streamsync.observability.metrics import Metrics
from streamsync.retry import on_retry
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.cluster import connect, ensure_index
from streamsync.sink.deadletter import DeadLetters
from streamsync.sink.engine import SearchEngine
from streamsync.sink.rejects import Rejects
from streamsync.sink.running import Lanes, running
from streamsync.sink.tombstones import Tombstones
from streamsync.source.client import StreamsApi
from streamsync.transform.actions import RecordTransformer, load_hook

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

    from streamsync.sigv4 import CredentialSource

log = logging.getLogger("streamsync")

# streamsync retries by itself, visibly; botocore's silent retries would hide throttling.
AWS_CLIENT_CONFIG = AioConfig(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=50,
)


@dataclass(frozen=True)
class Engine:
    config: Config
    metrics: Metrics
    worker_id: str
    stopping: asyncio.Event  # set: the running command should end (see StreamSync.stop)
    api: StreamsApi
    search: SearchEngine
    leases: LeaseTable
    heartbeats: Heartbeats
    backfill_progress: BackfillProgress
    dead_letters: DeadLetters
    rejects: Rejects

    def count_retries(self) -> None:
        """Counts the retries of this task's work in this engine's metrics."""
        on_retry.set(lambda what, table: self.metrics.retries.labels(what, table).inc())

    async def source(self, table: TableConfig) -> Source:
        """The table as it is now: its stream (or the configured one), its transform."""
        stream = await self.api.describe_table(table.table)
        if table.stream_arn is not None:
            stream = replace(stream, stream_arn=table.stream_arn)
        where = f"tables[{self.config.tables.index(table)}].transform"
        hook = load_hook(table.transform, where) if table.transform else None
        transformer = RecordTransformer(table, stream.hash_key, stream.range_key, hook)
        return Source(table, stream, transformer)

    async def prepare_sink(self) -> tuple[BulkIndexer, Tombstones]:
        """The lease table, dead letters, tombstones and target indexes in place; a bulk
        indexer writing to them, and the tombstones it keeps."""
        await self.leases.ensure_exists()
        await self.dead_letters.ensure_index()
        tombstones = Tombstones(self.search)
        await tombstones.ensure_template()
        for table in self.config.tables:
            if await ensure_index(self.search, table):
                log.info("created index", extra={"index": table.index, "table": table.table})
        indexer = BulkIndexer(
            self.search, self.config.bulk, self.metrics, self.rejects.action, tombstones
        )
        return indexer, tombstones

    def running(self, indexer: BulkIndexer) -> AbstractAsyncContextManager[Lanes]:
        """`indexer`'s lanes for the block, closed within the shutdown grace (see `running`)."""
        return running(
            indexer,
            stopping=self.stopping,
            grace=self.config.shutdown_grace_seconds,
            worker=self.worker_id,
        )

    async def scan_into(
        self,
        sink: BulkIndexer,
        source: Source,
        segments: int = 4,
        restart: bool = False,
        rate_limit: float | None = None,
        terminal: TextIO | None = None,
    ) -> int:
        """Backfills one source's table through `sink`; the items indexed."""
        backfill = Backfill(
            api=self.api,
            checkpoints=self.backfill_progress,
            sink=sink,
            transformer=source.transformer,
            hash_key=source.stream.hash_key,
            range_key=source.stream.range_key,
            on_rejected_record=self.rejects.record,
            rate_limit=rate_limit,
        )
        expected = await self.api.item_count(source.config.table)
        return await backfill.run(
            segments, restart, Progress(source.config.table, expected, terminal)
        )


@asynccontextmanager
async def open_engine(
    config: Config, metrics: Metrics, worker_id: str, stopping: asyncio.Event
) -> AsyncIterator[Engine]:
    """Connects every client `config` names; they are closed when the generator is."""
    async with AsyncExitStack() as stack:
        aws = config.aws
        # The worker's own identity keeps the lease table and signs for OpenSearch; the tables
        # and their streams are read through aws.role_arn when set (streamsync.assumerole).
        session = get_session()
        credentials = await session.get_credentials()
        tables_session: AioSession = session
        tables_credentials: CredentialSource | None = credentials
        if aws.role_arn is not None:
            role = role_credentials(session, aws, worker_id, AWS_CLIENT_CONFIG)
            tables_session, tables_credentials = session_with(role), role
        kwargs: dict[str, Any] = {
            "region_name": aws.region,
            "endpoint_url": aws.endpoint_url,
            "config": AWS_CLIENT_CONFIG,
        }
        dynamodb = await stack.enter_async_context(
            tables_session.create_client("dynamodb", **kwargs)
        )
        streams = await stack.enter_async_context(
            tables_session.create_client("dynamodbstreams", **kwargs)
        )
        http = await stack.enter_async_context(
            aiohttp.ClientSession(
                # `connect` would also count the wait for a pooled connection, which a thousand
                # idle shards polling at once make long: time the TCP connect alone.
                timeout=aiohttp.ClientTimeout(total=30, sock_connect=5),
                connector=aiohttp.TCPConnector(limit=256),
            )
        )
        lease_table = AwsJsonClient(dynamodb.meta.endpoint_url, aws.region, credentials, http)
        search = connect(config, credentials)
        stack.push_async_callback(search.close)
        dead_letters = DeadLetters(search, config.dead_letters, metrics, config.tables)
        yield Engine(
            config=config,
            metrics=metrics,
            worker_id=worker_id,
            stopping=stopping,
            api=StreamsApi(
                dynamodb,
                streams,
                AwsJsonClient(streams.meta.endpoint_url, aws.region, tables_credentials, http),
            ),
            search=search,
            leases=LeaseTable(lease_table, config.leases.table),
            heartbeats=Heartbeats(lease_table, config.leases.table),
            backfill_progress=BackfillProgress(lease_table, config.leases.table),
            dead_letters=dead_letters,
            rejects=Rejects(dead_letters),
        )
