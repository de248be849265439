"""The commands that end by themselves: status, backfill, verify and dlq replay.

Each takes the built engine rather than a StreamSync, so that it can only use parts that exist,
and is an embedding's way to the same work the command line does.
"""

from __future__ import annotations

from typing import Any

from streamsync.backfill import terminal
from streamsync.checks import refuse_problems
from streamsync.config import TableConfig
from streamsync.coordinator import Source
from streamsync.engine import Engine
from streamsync.errors import StreamsyncError
from streamsync.replay import Replayer, ReplayReport
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.tombstones import Tombstones
from streamsync.status import rows as status_rows
from streamsync.verify import Verifier, VerifyReport


async def status(engine: Engine) -> list[dict[str, Any]]:
    """Every lease of the configured tables, one row per shard (see `streamsync status`)."""
    leases = engine.leases
    if not await leases.exists():
        raise StreamsyncError(
            f"lease table {leases.name}: not found; streamsync has not run with this "
            "configuration yet (or leases.table names another table)"
        )
    scan = await leases.scan()
    entries: list[dict[str, Any]] = []
    for table in engine.config.tables:
        stream = (await engine.source(table)).stream_arn
        listed = {shard.shard_id for shard in await engine.api.describe_shards(stream)}
        held = [lease for lease in scan.leases if lease.stream_arn == stream]
        entries.extend(status_rows(table.table, held, listed, scan.workers))
    return entries


async def backfill(
    engine: Engine,
    tables: list[str] | None = None,
    segments: int = 4,
    restart: bool = False,
    rate_limit: float | None = None,
) -> dict[str, int]:
    """Scans the tables (all configured, or those named) into their indexes; resumes an
    interrupted backfill unless `restart`. Returns the items indexed per table."""
    selected = _selected(engine, tables)
    unknown = set(tables or []) - {t.table for t in engine.config.tables}
    if unknown:
        raise StreamsyncError(f"--table {', '.join(sorted(unknown))}: not in the configuration")
    await refuse_problems(engine)
    engine.count_retries()
    sink, _ = await engine.prepare_sink()
    counts: dict[str, int] = {}
    async with engine.running(sink) as lanes:
        for table in selected:
            source = await engine.source(table)
            counts[table.table] = await lanes.until(
                engine.scan_into(sink, source, segments, restart, rate_limit, terminal())
            )
        await lanes.until(sink.drain())
    return counts


async def verify(
    engine: Engine, tables: list[str] | None = None, repair: bool = False
) -> list[VerifyReport]:
    """Compares each table with its index; with `repair`, fixes what differs."""
    if not repair:
        return [await _verify(engine, table, None) for table in _selected(engine, tables)]
    sink, _ = await engine.prepare_sink()
    async with engine.running(sink) as lanes:
        reports = [
            await lanes.until(_verify(engine, table, sink)) for table in _selected(engine, tables)
        ]
        await lanes.until(sink.drain())
    return reports


async def replay(engine: Engine, dry_run: bool, keep_superseded: bool = False) -> ReplayReport:
    """Re-drives the stored dead letters: each letter's item, as the table holds it now,
    through the table's current transform (see streamsync.replay); superseded letters are
    removed unless `keep_superseded`."""
    transformers = {
        table.table: (await engine.source(table)).transformer for table in engine.config.tables
    }
    await Tombstones(engine.search).ensure_template()
    replayer = Replayer(engine.search, engine.api, engine.config, transformers, engine.metrics)
    if dry_run:
        return await replayer.replay(None, keep_superseded)
    sink = BulkIndexer(engine.search, engine.config.bulk, engine.metrics, replayer.refused_again)
    async with engine.running(sink) as lanes:
        return await lanes.until(replayer.replay(sink, keep_superseded))


def _selected(engine: Engine, tables: list[str] | None) -> list[TableConfig]:
    return [t for t in engine.config.tables if tables is None or t.table in tables]


async def _verify(engine: Engine, table: TableConfig, sink: BulkIndexer | None) -> VerifyReport:
    return await verifier(engine, await engine.source(table), sink).verify()


def verifier(engine: Engine, source: Source, sink: BulkIndexer | None) -> Verifier:
    """A verifier of the source's table against its index (`sink`: None, report only)."""
    return Verifier(
        api=engine.api,
        engine=engine.search,
        transformer=source.transformer,
        key_types=source.stream.key_types,
        hash_key=source.stream.hash_key,
        range_key=source.stream.range_key,
        sink=sink,
    )
