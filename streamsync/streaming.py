"""`run()`: streaming every table into its index until asked to stop.

Built in full before the first record is read (its sources, the bulk indexer, the coordinator),
so that whatever the probes ask of it is there to answer; then it starts the initial loads and
runs the coordinator for as long as the bulk indexer runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from streamsync.coordinator import Coordinator, Source
from streamsync.engine import Engine
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.running import Lanes
from streamsync.sink.tombstones import Tombstones
from streamsync.supervise import Supervisor, spawn
from streamsync.supervise import current as current_supervisor

log = logging.getLogger("streamsync")


@dataclass
class Streaming:
    engine: Engine
    supervisor: Supervisor
    sources: list[Source]
    sink: BulkIndexer
    tombstones: Tombstones
    coordinator: Coordinator
    lanes: Lanes | None = None  # the bulk indexer's, while run() runs it
    loading: dict[str, int] = field(default_factory=dict)  # table -> about how many items

    @classmethod
    async def prepare(cls, engine: Engine) -> Streaming:
        """Every table's source, the indexes and the bulk indexer in place, old tombstones
        pruned; the background tasks of this run report to a supervisor of its own (see
        streamsync.supervise)."""
        engine.count_retries()
        supervisor = Supervisor(lambda task: engine.metrics.task_failures.labels(task).inc())
        current_supervisor.set(supervisor)
        sources = [await engine.source(table) for table in engine.config.tables]
        sink, tombstones = await engine.prepare_sink()
        await tombstones.prune()
        engine.metrics.queue_depth(lambda: sink.outstanding)
        coordinator = Coordinator(
            config=engine.config,
            worker_id=engine.worker_id,
            api=engine.api,
            leases=engine.leases,
            heartbeats=engine.heartbeats,
            sources=sources,
            sink=sink,
            metrics=engine.metrics,
            stopping=engine.stopping,
            on_rejected_record=engine.rejects.record,
        )
        return cls(engine, supervisor, sources, sink, tombstones, coordinator)

    def readiness(self) -> list[str]:
        """See `StreamSync.readiness`, once started."""
        reasons = self.coordinator.problems()
        reasons.extend(
            f"initial load of table {table}: about {items} items"
            for table, items in self.loading.items()
        )
        failing = self.sink.failing_since
        if failing is not None and time.monotonic() - failing > 1:
            product = self.engine.search.product
            reasons.append(f"{product}: bulk requests failing ({self.sink.last_error})")
        return reasons

    def liveness(self) -> list[str]:
        """Why the process should be restarted: the bulk indexer or a background task ended."""
        ended = self.lanes is not None and self.lanes.ended
        return (["the engine stopped"] if ended else []) + self.supervisor.problems

    async def run(self, started: asyncio.Event, http_port: int | None) -> None:
        """Streams until the coordinator stops; `http_port`: where the probes answer, if they
        do, for the log."""
        engine = self.engine
        async with engine.running(self.sink) as lanes:
            self.lanes = lanes
            await self._stream(lanes, started, http_port)
        log.info("stopped", extra={"worker": engine.worker_id, **self._summary()})

    async def _stream(self, lanes: Lanes, started: asyncio.Event, http_port: int | None) -> None:
        loads = await self._initial_loads()
        started.set()
        log.info(
            "started",
            extra={
                "worker": self.engine.worker_id,
                "tables": len(self.sources),
                "http_port": http_port,
            },
        )
        pruner = self.supervisor.spawn(_prune_hourly(self.tombstones), "tombstone_pruner")
        try:
            await lanes.until(self.coordinator.run())
        finally:
            # An initial load not done resumes at the next start, from its segments' checkpoints.
            tasks = [task for task in (pruner, loads) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1)

    async def _initial_loads(self) -> asyncio.Task[None] | None:
        """Leases the new streams of the tables with `initial_load: scan` at TRIM_HORIZON (here,
        before the coordinator runs, which would lease them at their start position), then
        starts backfilling them, and those whose backfill was interrupted, in a supervised
        background task; None when there is nothing to load. Meanwhile every table streams,
        these included (safe: a scanned image is versioned below every stream change made
        after its scan began), the probes answer, and /readyz names each load not done yet."""
        engine = self.engine
        pending: list[Source] = []
        for source in self.sources:
            if source.config.initial_load != "scan":
                continue
            new = await self.coordinator.lease_new_stream(source)
            progress = await engine.backfill_progress.load(source.config.table)
            if not new and (not progress or all(p.done for p in progress)):
                continue
            self.loading[source.config.table] = await engine.api.item_count(source.config.table)
            pending.append(source)
        if not pending:
            return None

        async def load() -> None:
            for source in pending:
                table = source.config.table
                log.info("initial load: backfilling while streaming", extra={"table": table})
                items = await engine.scan_into(self.sink, source)
                del self.loading[table]
                log.info("initial load done", extra={"table": table, "items": items})

        return spawn(load(), "initial_load", ends=True, name="initial load")

    def _summary(self) -> dict[str, int]:
        """Counts, as counts (Prometheus keeps every counter as a float)."""
        m = self.engine.metrics
        return {
            f"{name}.{table.table}": int(m.value(f"streamsync_{name}_total", table=table.table))
            for table in self.engine.config.tables
            for name in ("records_read", "documents_indexed", "documents_deleted", "dead_letters")
        }


async def _prune_hourly(tombstones: Tombstones) -> None:
    while True:
        await asyncio.sleep(3600)
        try:
            await tombstones.prune()
        except Exception as error:  # retried next hour; old tombstones only cost disk meanwhile
            log.warning("pruning old tombstones failed: %s", error)
