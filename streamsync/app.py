"""StreamSync: the engine as an object an asyncio program can own.

`async with StreamSync(config) as sync: await sync.run()` runs until `sync.stop()`. It installs no
signal handlers and touches no global state (metrics live in its own registry unless the host
passes one), so it can run inside an existing service beside its other tasks; the command line
adds the signal handling. Before anything is written, `check()` verifies every table, stream and
the cluster (and holds a sample of each table's items against its existing index's mapping), and
`run()` refuses to start with one line per problem.

This is the composition root: entering builds the engine's parts once (streamsync.engine), and
each command is a function of them (streamsync.checks, streamsync.commands, streamsync.streaming).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from streamsync import checks, commands, deadletters
from streamsync.config import Config
from streamsync.coordinator import Coordinator
from streamsync.deadletters import Listed
from streamsync.engine import Engine, open_engine
from streamsync.observability.http import HealthServer, serving
from streamsync.observability.metrics import Metrics
from streamsync.reindex import ReindexReport, reindex
from streamsync.replay import ReplayReport
from streamsync.sink.letterfilter import LetterFilter
from streamsync.streaming import Streaming
from streamsync.verify import VerifyReport


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class StreamSync:
    # Built on entering: every command runs inside `async with StreamSync(config) as sync:`.
    _engine: Engine

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
        self.metrics.start_at_zero(table.table for table in config.tables)
        self.metrics.readiness(self.readiness)
        self._listen = config.observability.listen if serve_http else None
        self.started = asyncio.Event()  # set once run() serves and reads
        self.worker_id = config.leases.worker_id or default_worker_id()
        self._stack = AsyncExitStack()
        self._stopping = asyncio.Event()
        self._streaming: Streaming | None = None  # the run() under way, once prepared
        self._http: HealthServer | None = None  # the probes' server, while run() serves them
        self._waiting: list[str] = []  # what run() waits to pass before it starts

    @property
    def _entered(self) -> Engine:
        try:
            return self._engine
        except AttributeError:
            raise RuntimeError(
                "use StreamSync as `async with StreamSync(config) as sync:`"
            ) from None

    async def __aenter__(self) -> StreamSync:
        self._engine = await self._stack.enter_async_context(
            open_engine(self.config, self.metrics, self.worker_id, self._stopping)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    @property
    def coordinator(self) -> Coordinator | None:
        """The leases and shard readers of the run() under way, if one is."""
        return self._streaming.coordinator if self._streaming is not None else None

    @property
    def http(self) -> HealthServer | None:
        """The probes' server, while run() serves them."""
        return self._http

    def readiness(self) -> list[str]:
        """Why this instance is not ready (an empty list: ready): the cluster was unreachable
        at start-up, the cluster is failing bulk requests, leases are not being renewed, a table
        stopped streaming, or an initial load is not done yet."""
        if self._waiting:
            return list(self._waiting)
        if self._streaming is None or not self.started.is_set():
            return ["starting"]
        return self._streaming.readiness()

    def _liveness(self) -> list[str]:
        return self._streaming.liveness() if self._streaming is not None else []

    def _report_waiting(self, problems: list[str]) -> None:
        self._waiting = problems

    def stop(self) -> None:
        """Asks `run()` to drain, checkpoint, release its leases and return (from the same loop;
        from another thread, use `loop.call_soon_threadsafe(sync.stop)`)."""
        self._stopping.set()

    async def check(self) -> list[str]:
        """Every problem that would stop `run()`, and every field of a sample of a table's items
        that its existing index would refuse (dead letters, once running), one line each;
        nothing is written."""
        return await checks.problems(self._entered, sample_items=True)

    async def run(self) -> None:
        """Refuses to start, one line per problem, when the configuration, a table or the
        cluster's answers need fixing; waits while the only problems are ones that pass by
        themselves (an unreachable cluster), serving the probes meanwhile: not ready, alive."""
        engine = self._entered
        registry = self.metrics.registry
        async with serving(self._listen, registry, self.readiness, self._liveness) as http:
            self._http = http
            try:
                if not await checks.wait_out_passing_problems(engine, self._report_waiting):
                    return
                self._streaming = await Streaming.prepare(engine)
                await self._streaming.run(self.started, http.port if http else None)
            finally:
                self._http = None

    async def status(self) -> list[dict[str, Any]]:
        """Every lease of the configured tables, one row per shard (see `streamsync status`)."""
        return await commands.status(self._entered)

    async def backfill(
        self,
        tables: list[str] | None = None,
        segments: int = 4,
        restart: bool = False,
        rate_limit: float | None = None,
    ) -> dict[str, int]:
        """The items indexed per table (see `streamsync.commands.backfill`)."""
        return await commands.backfill(self._entered, tables, segments, restart, rate_limit)

    async def verify(
        self, tables: list[str] | None = None, repair: bool = False
    ) -> list[VerifyReport]:
        """Compares each table with its index; with `repair`, fixes what differs."""
        return await commands.verify(self._entered, tables, repair)

    async def reindex(self, table: str, new_index: str | None = None) -> ReindexReport:
        """Builds a new index for the table with its current settings and mappings, verifies
        it and moves the table's alias to it (see streamsync.reindex); `stop()` interrupts it
        before the alias moves."""
        return await reindex(self._entered, table, new_index)

    async def replay_dead_letters(
        self, dry_run: bool, keep_superseded: bool = False
    ) -> ReplayReport:
        """Re-drives the stored dead letters: each letter's item, as the table holds it now,
        through the table's current transform (see streamsync.replay). Letters a newer change
        superseded are reported apart, and removed unless `keep_superseded`."""
        return await commands.replay(self._entered, dry_run, keep_superseded)

    async def dead_letters(
        self, names: list[str] | None = None, letters_filter: LetterFilter | None = None
    ) -> list[Listed]:
        """The stored dead letters `names` (ids, or unique beginnings of ids) and the filter
        choose (none: all), each with its copies and whether it is superseded."""
        return await deadletters.chosen(
            self._entered, names or [], letters_filter or LetterFilter()
        )

    async def dead_letter(self, name: str) -> Listed:
        """The one letter `name` (an id, or the unique beginning of one) names."""
        return await deadletters.show(self._entered, name)

    async def delete_dead_letters(
        self, names: list[str], letters_filter: LetterFilter
    ) -> list[Listed]:
        """Deletes every copy of each letter chosen (as by `dead_letters`); returns them."""
        return await deadletters.delete(self._entered, names, letters_filter)
