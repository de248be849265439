"""StreamSync: the engine as an object an asyncio program can own.

`async with StreamSync(config) as sync: await sync.run()` runs until `sync.stop()`. It installs no
signal handlers and touches no global state (metrics live in its own registry unless the host
passes one), so it can run inside an existing service beside its other tasks; the command line
adds the signal handling. Before anything is written, `check()` verifies every table, stream and
the cluster, and `run()` refuses to start with one line per problem.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from types import TracebackType
from typing import Any, TextIO

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import EndpointConnectionError, NoCredentialsError
from prometheus_client import CollectorRegistry

from streamsync.awsjson import AwsError, AwsJsonClient
from streamsync.backfill import Backfill, Progress, terminal
from streamsync.config import Config, TableConfig
from streamsync.coordinator import Coordinator, Source
from streamsync.errors import StreamsyncError
from streamsync.leases.model import Lease, other_target, target_changed
from streamsync.leases.table import LeaseTable
from streamsync.observability.http import HealthServer
from streamsync.observability.metrics import Metrics
from streamsync.retry import on_retry
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.cluster import cluster_problems, connect, ensure_index
from streamsync.sink.deadletter import DeadLetter, DeadLetters
from streamsync.sink.engine import SearchEngine
from streamsync.sink.replay import Replayer, ReplayReport
from streamsync.sink.tombstones import Tombstones
from streamsync.source.client import StreamsApi, TableStream
from streamsync.status import rows as status_rows
from streamsync.supervise import Supervisor, spawn
from streamsync.supervise import current as current_supervisor
from streamsync.transform.actions import Action, RecordTransformer, TransformError, load_hook
from streamsync.verify import Verifier, VerifyReport

log = logging.getLogger("streamsync")

IMAGE_VIEW_TYPES = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
# streamsync retries by itself, visibly; botocore's silent retries would hide throttling.
AWS_CLIENT_CONFIG = AioConfig(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=50,
)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class StreamSync:
    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        serve_http: bool = True,
    ) -> None:
        """`registry`: the host's Prometheus registry (default: a new one); `serve_http=False`:
        no /metrics, /healthz, /readyz server even if the configuration has an address."""
        self.config = config
        self.metrics = Metrics(registry)
        self._serve_http = serve_http and config.observability.listen is not None
        self.http: HealthServer | None = None
        self.started: asyncio.Event | None = None  # set once run() serves and reads
        self.worker_id = config.leases.worker_id or default_worker_id()
        self._stack = AsyncExitStack()
        self._stopping: asyncio.Event | None = None
        self._api: StreamsApi | None = None
        self._engine: SearchEngine | None = None
        self._leases: LeaseTable | None = None
        self._dead_letters: DeadLetters | None = None
        self._sink: BulkIndexer | None = None
        self._tombstones: Tombstones | None = None
        self.coordinator: Coordinator | None = None

    async def __aenter__(self) -> StreamSync:
        aws = self.config.aws
        session = get_session()
        kwargs: dict[str, Any] = {
            "region_name": aws.region,
            "endpoint_url": aws.endpoint_url,
            "config": AWS_CLIENT_CONFIG,
        }
        dynamodb = await self._stack.enter_async_context(
            session.create_client("dynamodb", **kwargs)
        )
        streams = await self._stack.enter_async_context(
            session.create_client("dynamodbstreams", **kwargs)
        )
        http = await self._stack.enter_async_context(
            aiohttp.ClientSession(
                # `connect` would also count the wait for a pooled connection, which a thousand
                # idle shards polling at once make long: time the TCP connect alone.
                timeout=aiohttp.ClientTimeout(total=30, sock_connect=5),
                connector=aiohttp.TCPConnector(limit=256),
            )
        )
        credentials = await session.get_credentials()
        self._api = StreamsApi(
            dynamodb,
            streams,
            AwsJsonClient(streams.meta.endpoint_url, aws.region, credentials, http),
        )
        self._leases = LeaseTable(
            dynamodb,
            AwsJsonClient(dynamodb.meta.endpoint_url, aws.region, credentials, http),
            self.config.leases.table,
        )
        self._engine = connect(self.config, credentials)
        self._stack.push_async_callback(self._engine.close)
        self._dead_letters = DeadLetters(
            self._engine, self.config.dead_letters, self.metrics, self.config.tables
        )
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def readiness(self) -> list[str]:
        """Why this instance is not ready (an empty list: ready): the cluster is failing bulk
        requests, leases are not being renewed, a table stopped streaming, or an initial load
        is not done yet."""
        started = self.started is not None and self.started.is_set()
        if self._sink is None or self.coordinator is None or self._engine is None or not started:
            return ["starting"]
        reasons = self.coordinator.problems()
        reasons.extend(
            f"initial load of table {table}: about {items} items"
            for table, items in self._loading.items()
        )
        failing = self._sink.failing_since
        if failing is not None and time.monotonic() - failing > 1:
            product = self._engine.product
            reasons.append(f"{product}: bulk requests failing ({self._sink.last_error})")
        return reasons

    def stop(self) -> None:
        """Asks `run()` to drain, checkpoint, release its leases and return (from the same loop;
        from another thread, use `loop.call_soon_threadsafe(sync.stop)`)."""
        if self._stopping is not None:
            self._stopping.set()

    async def check(self) -> list[str]:
        """Every problem that would stop `run()`, one line each; nothing is written."""
        api, engine = self._require()
        problems: list[str] = []
        leases: list[Lease] | None = None  # read once, when a table's stream is known
        for position, table in enumerate(self.config.tables):
            try:
                stream = await api.describe_table(table.table)
            except (NoCredentialsError, EndpointConnectionError) as error:
                problems.append(self._aws_unusable(error))
                break
            except AwsError as error:
                problems.append(self._table_problem(position, table, error))
                continue
            problems.extend(await self._stream_problems(table, stream))
            if leases is None:
                leases = await self._existing_leases()
            problems.extend(self._target_problems(position, table, stream, leases))
            if table.transform is not None:
                try:
                    load_hook(table.transform, f"tables[{position}].transform")
                except StreamsyncError as error:
                    problems.append(str(error))
        problems.extend(await cluster_problems(engine, self.config))
        return problems

    def _aws_unusable(self, error: Exception) -> str:
        if isinstance(error, NoCredentialsError):
            return (
                "AWS: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or run with an IAM role"
            )
        endpoint = self.config.aws.endpoint_url or f"the {self.config.aws.region} endpoint"
        return f"AWS: cannot reach DynamoDB at {endpoint}; check aws.endpoint_url and aws.region"

    def _table_problem(self, position: int, table: TableConfig, error: AwsError) -> str:
        if error.code == "ResourceNotFoundException":
            return (
                f"table {table.table}: not found in {self.config.aws.region}; "
                f"create it or correct tables[{position}].table"
            )
        return f"table {table.table}: DescribeTable failed ({error.code}: {error.message})"

    async def _stream_problems(self, table: TableConfig, stream: TableStream) -> list[str]:
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
            api, _ = self._require()
            try:
                await api.describe_shards(table.stream_arn)
            except AwsError as error:
                return [f"table {table.table}: stream_arn {table.stream_arn}: {error.code}"]
        return []

    async def _existing_leases(self) -> list[Lease]:
        assert self._leases is not None
        if not await self._leases.exists():
            return []
        return (await self._leases.scan()).leases

    def _target_problems(
        self, position: int, table: TableConfig, stream: TableStream, leases: list[Lease]
    ) -> list[str]:
        """Leases of this stream that fed another index: reading on from them would leave this
        index without what came before (a changed `index`, or another deployment sharing the
        lease table with another target)."""
        assert self._leases is not None
        arn = table.stream_arn or stream.stream_arn
        other = other_target((lease for lease in leases if lease.stream_arn == arn), table.index)
        if other is None:
            return []
        return [target_changed(table.table, position, self._leases.name, table.index, other)]

    def _require(self) -> tuple[StreamsApi, SearchEngine]:
        if self._api is None or self._engine is None:
            raise RuntimeError("use StreamSync as `async with StreamSync(config) as sync:`")
        return self._api, self._engine

    async def run(self) -> None:
        api, engine = self._require()
        assert self._leases is not None
        assert self._stopping is not None
        problems = await self.check()
        if problems:
            raise StreamsyncError("\n".join(problems))
        on_retry.set(lambda what, table: self.metrics.retries.labels(what, table).inc())
        # Every background task of this run reports to it (see streamsync.supervise).
        supervisor = Supervisor(lambda task: self.metrics.task_failures.labels(task).inc())
        current_supervisor.set(supervisor)
        sources = [await self._source(api, table) for table in self.config.tables]
        sink = self._sink = await self._prepare_sink(engine)
        tombstones = self._tombstones
        assert tombstones is not None
        await tombstones.prune()
        self.metrics.queue_depth(lambda: sink.outstanding)
        self._loading: dict[str, int] = {}  # table -> its approximate item count, while loading
        self.coordinator = Coordinator(
            config=self.config,
            worker_id=self.worker_id,
            api=api,
            leases=self._leases,
            sources=sources,
            sink=sink,
            metrics=self.metrics,
            stopping=self._stopping,
            on_rejected_record=self._reject_record,
        )
        sink_task = supervisor.spawn(sink.run(), "bulk_indexer", ends=True, name="bulk indexer")

        def liveness() -> list[str]:
            return (["the engine stopped"] if sink_task.done() else []) + supervisor.problems

        loads: asyncio.Task[None] | None = None
        pruner: asyncio.Task[None] | None = None
        # The whole stop is bounded by shutdown_grace_seconds from when it was asked for: the
        # readers drain within it (then are cancelled, keeping what was acknowledged), and the
        # bulk indexer gets what is left of it (at least a moment to end its lanes).
        loop = asyncio.get_running_loop()
        asked: list[float] = []
        stop_asked = asyncio.ensure_future(self._stopping.wait())
        stop_asked.add_done_callback(lambda _: asked.append(loop.time()))
        try:
            if self._serve_http:  # the probes answer from here on, during initial loads too
                await self._start_http(liveness)
            loads = await self._initial_loads(api, sources, sink)
            assert self.started is not None
            self.started.set()
            log.info(
                "started",
                extra={
                    "worker": self.worker_id,
                    "tables": len(sources),
                    "http_port": self.http.port if self.http else None,
                },
            )
            pruner = supervisor.spawn(_prune_hourly(tombstones), "tombstone_pruner")
            await _until_either(self.coordinator.run(), sink_task)
            if loads is not None:
                loads.cancel()  # resumed at the next start, from its segments' checkpoints
            grace = self.config.shutdown_grace_seconds
            left = asked[0] + grace - loop.time() if asked else 0.0
            try:
                async with asyncio.timeout(max(left, 1.0)):
                    await sink.close()
                    await sink_task
            except TimeoutError:
                log.warning(
                    "stopping: the cluster did not take the last bulk requests within "
                    "shutdown_grace_seconds (%s s); they were not acknowledged, so no checkpoint "
                    "covers them and the next owner of their shards reads them again",
                    grace,
                    extra={"worker": self.worker_id, "unsent_actions": sink.outstanding},
                )
        finally:
            stop_asked.cancel()
            for task in (sink_task, pruner, loads):
                if task is not None:
                    task.cancel()
            await asyncio.wait([t for t in (sink_task, pruner, loads) if t is not None], timeout=1)
            if self.http is not None:
                await self.http.stop()
        log.info("stopped", extra={"worker": self.worker_id, **self._summary()})

    async def status(self) -> list[dict[str, Any]]:
        """Every lease of the configured tables, one row per shard (see `streamsync status`)."""
        api, _ = self._require()
        assert self._leases is not None
        if not await self._leases.exists():
            raise StreamsyncError(
                f"lease table {self._leases.name}: not found; streamsync has not run with this "
                "configuration yet (or leases.table names another table)"
            )
        scan = await self._leases.scan()
        entries: list[dict[str, Any]] = []
        for table in self.config.tables:
            stream = (await self._source(api, table)).stream_arn
            listed = {shard.shard_id for shard in await api.describe_shards(stream)}
            leases = [lease for lease in scan.leases if lease.stream_arn == stream]
            entries.extend(status_rows(table.table, leases, listed))
        return entries

    async def backfill(
        self,
        tables: list[str] | None = None,
        segments: int = 4,
        restart: bool = False,
        rate_limit: float | None = None,
    ) -> dict[str, int]:
        """Scans the tables (all configured, or those named) into their indexes; resumes an
        interrupted backfill unless `restart`. Returns the items indexed per table."""
        api, engine = self._require()
        selected = [t for t in self.config.tables if tables is None or t.table in tables]
        unknown = set(tables or []) - {t.table for t in self.config.tables}
        if unknown:
            raise StreamsyncError(f"--table {', '.join(sorted(unknown))}: not in the configuration")
        problems = await self.check()
        if problems:
            raise StreamsyncError("\n".join(problems))
        on_retry.set(lambda what, table: self.metrics.retries.labels(what, table).inc())
        sink = await self._prepare_sink(engine)
        lanes = asyncio.create_task(sink.run(), name="bulk indexer")
        counts: dict[str, int] = {}
        try:
            for table in selected:
                source = await self._source(api, table)
                counts[table.table] = await self._scan_into(
                    api, sink, source, segments, restart, rate_limit, terminal()
                )
            await sink.drain()
            await sink.close()
            await lanes
        finally:
            lanes.cancel()
        return counts

    async def _prepare_sink(self, engine: SearchEngine) -> BulkIndexer:
        """The lease table, dead letters, tombstones and target indexes in place; a bulk
        indexer writing to them."""
        assert self._leases is not None
        assert self._dead_letters is not None
        await self._leases.ensure_exists()
        await self._dead_letters.ensure_index()
        tombstones = Tombstones(engine)
        await tombstones.ensure_template()
        for table in self.config.tables:
            if await ensure_index(engine, table):
                log.info("created index", extra={"index": table.index, "table": table.table})
        self._tombstones = tombstones
        return BulkIndexer(engine, self.config.bulk, self.metrics, self._reject_action, tombstones)

    async def verify(
        self, tables: list[str] | None = None, repair: bool = False
    ) -> list[VerifyReport]:
        """Compares each table with its index; with `repair`, fixes what differs."""
        api, engine = self._require()
        selected = [t for t in self.config.tables if tables is None or t.table in tables]
        sink = await self._prepare_sink(engine) if repair else None
        lanes = asyncio.create_task(sink.run()) if sink is not None else None
        reports = []
        try:
            for table in selected:
                source = await self._source(api, table)
                verifier = Verifier(
                    api=api,
                    engine=engine,
                    transformer=source.transformer,
                    key_types=source.stream.key_types,
                    hash_key=source.stream.hash_key,
                    range_key=source.stream.range_key,
                    sink=sink,
                )
                reports.append(await verifier.verify())
            if sink is not None and lanes is not None:
                await sink.close()
                await lanes
        finally:
            if lanes is not None:
                lanes.cancel()
        return reports

    async def replay_dead_letters(self, dry_run: bool) -> ReplayReport:
        """Re-drives the stored dead letters: each letter's item, as the table holds it now,
        through the table's current transform (see streamsync.sink.replay)."""
        api, engine = self._require()
        transformers = {
            table.table: (await self._source(api, table)).transformer
            for table in self.config.tables
        }
        await Tombstones(engine).ensure_template()
        replayer = Replayer(engine, api, self.config, transformers, self.metrics)
        return await replayer.replay(dry_run)

    async def _initial_loads(
        self, api: StreamsApi, sources: list[Source], sink: BulkIndexer
    ) -> asyncio.Task[None] | None:
        """Leases the new streams of the tables with `initial_load: scan` at TRIM_HORIZON (here,
        before the coordinator runs, which would lease them at their start position), then
        starts backfilling them, and those whose backfill was interrupted, in a supervised
        background task; None when there is nothing to load. Meanwhile every table streams,
        these included (safe: a scanned image is versioned below every stream change made
        after its scan began), the probes answer, and /readyz names each load not done yet."""
        assert self.coordinator is not None
        assert self._leases is not None
        pending: list[Source] = []
        for source in sources:
            if source.config.initial_load != "scan":
                continue
            new = await self.coordinator.lease_new_stream(source)
            progress = await self._leases.backfill_progress(source.config.table)
            if not new and (not progress or all(p.done for p in progress)):
                continue
            self._loading[source.config.table] = await api.item_count(source.config.table)
            pending.append(source)
        if not pending:
            return None

        async def load() -> None:
            for source in pending:
                table = source.config.table
                log.info("initial load: backfilling while streaming", extra={"table": table})
                items = await self._scan_into(api, sink, source)
                del self._loading[table]
                log.info("initial load done", extra={"table": table, "items": items})

        return spawn(load(), "initial_load", ends=True, name="initial load")

    async def _scan_into(
        self,
        api: StreamsApi,
        sink: BulkIndexer,
        source: Source,
        segments: int = 4,
        restart: bool = False,
        rate_limit: float | None = None,
        terminal: TextIO | None = None,
    ) -> int:
        """Backfills one source's table through `sink`; the items indexed."""
        assert self._leases is not None
        backfill = Backfill(
            api=api,
            leases=self._leases,
            sink=sink,
            transformer=source.transformer,
            hash_key=source.stream.hash_key,
            range_key=source.stream.range_key,
            on_rejected_record=self._reject_record,
            rate_limit=rate_limit,
        )
        expected = await api.item_count(source.config.table)
        return await backfill.run(
            segments, restart, Progress(source.config.table, expected, terminal)
        )

    async def _start_http(self, liveness: Callable[[], list[str]]) -> None:
        """Serves /metrics, /healthz (fails with `liveness`'s reasons) and /readyz."""
        listen = self.config.observability.listen
        assert listen is not None
        self.http = HealthServer(self.metrics.registry, self.readiness, liveness)
        try:
            await self.http.start(listen)
        except OSError as error:
            self.http = None
            raise StreamsyncError(
                f"observability.listen {listen}: cannot serve there ({error.strerror}); choose "
                "another address, port 0 for any free port, or null for no HTTP server"
            ) from error

    async def _source(self, api: StreamsApi, table: TableConfig) -> Source:
        stream = await api.describe_table(table.table)
        if table.stream_arn is not None:
            stream = replace(stream, stream_arn=table.stream_arn)
        where = f"tables[{self.config.tables.index(table)}].transform"
        hook = load_hook(table.transform, where) if table.transform else None
        transformer = RecordTransformer(table, stream.hash_key, stream.range_key, hook)
        return Source(table, stream, transformer)

    async def _reject_record(
        self,
        table: str,
        shard_id: str,
        record: dict[str, Any],
        version: int,
        error: TransformError,
    ) -> None:
        assert self._dead_letters is not None
        await self._dead_letters.put(
            DeadLetter(
                table=table,
                shard=shard_id,
                sequence_number=str(record.get("dynamodb", {}).get("SequenceNumber")),
                version=version,
                reason="transform_error",
                error={"type": "transform_error", "reason": str(error)},
                record=record,
            )
        )

    async def _reject_action(self, action: Action, error: dict[str, Any]) -> None:
        assert self._dead_letters is not None
        origin = action.origin
        await self._dead_letters.put(
            DeadLetter(
                table=origin.table,
                shard=origin.shard_id,
                sequence_number=str(origin.sequence_number),
                version=action.version,
                reason=str(error.get("type", "rejected")),
                error=error,
                record=origin.record,
                index=action.index,
                doc_id=action.doc_id,
                op=action.op,
            )
        )

    def _summary(self) -> dict[str, float]:
        m = self.metrics
        return {
            f"{name}.{table.table}": m.value(f"streamsync_{name}_total", table=table.table)
            for table in self.config.tables
            for name in ("records_read", "documents_indexed", "documents_deleted", "dead_letters")
        }


async def _prune_hourly(tombstones: Tombstones) -> None:
    while True:
        await asyncio.sleep(3600)
        try:
            await tombstones.prune()
        except Exception as error:  # retried next hour; old tombstones only cost disk meanwhile
            log.warning("pruning old tombstones failed: %s", error)


async def _until_either(main: Any, guard: asyncio.Task[None]) -> None:
    """Awaits `main`; if `guard` ends first (it should not), stops `main` and raises its error."""
    main_task = asyncio.ensure_future(main)
    done, _ = await asyncio.wait({main_task, guard}, return_when=asyncio.FIRST_COMPLETED)
    if main_task not in done:
        main_task.cancel()
        error = guard.exception()
        raise error if error is not None else RuntimeError("the bulk indexer stopped early")
    main_task.result()
