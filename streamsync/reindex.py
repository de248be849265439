"""`streamsync reindex --table T`: a new index with the table's current settings and mappings,
filled and verified beside the running workers, then put behind the table's alias in one step.

Mappings and analyzers cannot change in place, so the table's `index` names an alias and each
change builds a new index behind it. The new index is filled by the engine's own initial load
(`initial_load: scan`): a second, independent consumer of the table's stream, in a lease table of
its own (so it never takes the workers' shards, nor trips their check that a stream's leases feed
one index), leases the shards at TRIM_HORIZON, scans the table, then streams. Once it has read
everything the stream held at a moment after the scan, the index is verified against the table,
and only an index without drift is put behind the alias, by one `_aliases` request that removes
the alias from the old index and adds it to the new one: searches see the old index or the new,
never one half built. The workers write through the alias, so from then on into the new index;
what they wrote into the old one before the swap came from records the consumer reads too, so it
goes on until it has read everything the stream held after the swap, then stops and its lease
table is deleted. The old index is kept until the user deletes it. The workers' tombstones are
keyed by the alias, so a delete they made before the swap still buries an older image arriving
after it; the consumer's own are keyed by the new index, which it writes to directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from streamsync import clock
from streamsync.checks import refuse_problems
from streamsync.commands import verifier
from streamsync.config import Config, TableConfig
from streamsync.engine import Engine, open_engine
from streamsync.errors import StreamsyncError
from streamsync.leases.model import Lease
from streamsync.observability.metrics import Metrics
from streamsync.sink.engine import SearchError
from streamsync.streaming import Streaming
from streamsync.verify import Drifted, VerifyReport

log = logging.getLogger("streamsync.reindex")

SETTLE_SECONDS = 2.0
"""A poll asked this long after a moment finds every record written before it: a stream shows
a new record to its readers within about a second, not at once."""
CHECK_EVERY_SECONDS = 0.5
RECHECKS = 5
"""How often the documents a verify found different are looked at again, the consumer caught up
in between, before what still differs is called drift (see `lasting_drift`)."""

BeforeVerify = Callable[[str], Awaitable[None]]
T = TypeVar("T")


@dataclass
class ReindexReport:
    table: str
    alias: str
    new_index: str
    old_indices: list[str]  # what the alias pointed to before (empty: it did not exist)
    verified: VerifyReport  # the new index against the table, once caught up
    drift: VerifyReport | None  # what still differed when looked at again (None: nothing)
    settled: int = 0  # differences of `verified` that were changes on their way

    @property
    def swapped(self) -> bool:
        return self.drift is None

    def summary(self) -> str:
        old = ", ".join(self.old_indices) or "nothing"
        if self.drift is not None:
            return (
                f"reindex {self.table}: {self.new_index} differs from the table, so the alias "
                f"{self.alias} was left on {old}; the documents looked at again:\n"
                f"{self.drift.summary()}\n{self.new_index} is kept for inspection: delete it "
                f"when done (DELETE /{self.new_index}), then run reindex again"
            )
        report = self.verified
        text = (
            f"reindex {self.table}: the alias {self.alias} now points to {self.new_index} "
            f"(before: {old}); verified {report.table_items} items, "
            f"{report.index_documents} documents"
        )
        if self.settled:
            text += f" ({self.settled} changes still on their way when compared, equal since)"
        if self.old_indices:
            text += (
                f"\nthe old index is kept: once satisfied, delete it "
                f"(DELETE /{','.join(self.old_indices)})"
            )
        return text


def new_index_name(alias: str, now: datetime) -> str:
    """The default name of the index a reindex builds: the alias and the UTC time."""
    return f"{alias}-{now.astimezone(UTC):%Y%m%d%H%M%S}"


def lease_table_name(leases_table: str, table: str) -> str:
    """The reindex consumer's own lease table: one reindex of a table at a time."""
    return f"{leases_table}-reindex-{table}"[:255]


def swap_actions(alias: str, old: Iterable[str], new: str) -> list[dict[str, Any]]:
    """One `_aliases` request's actions: the alias leaves the old indices and points to `new`,
    which takes the writes, all at once."""
    removals: list[dict[str, Any]] = [{"remove": {"index": index, "alias": alias}} for index in old]
    return [*removals, {"add": {"index": new, "alias": alias, "is_write_index": True}}]


def concrete_index(table: TableConfig, position: int) -> str:
    """The one line that refuses to reindex a table whose `index` names an index, not an
    alias."""
    return (
        f"tables[{position}].index {table.index}: is an index, not an alias, and an alias cannot "
        f"take its name while it exists. Once, move to an alias: set tables[{position}].index to "
        f"a new alias name and leases.table to a new lease table, run reindex (it builds the "
        f"index behind the new alias), then run the workers with that configuration and point "
        f"searches at the alias (see the README, 'Changing mappings')"
    )


def builder_config(config: Config, table: TableConfig, new_index: str) -> Config:
    """The configuration of the consumer that fills `new_index`: this table alone, written to
    the new index, loaded by a scan and the stream from its TRIM_HORIZON, with leases of its own
    and no probes' server."""
    into_new = table.model_copy(
        update={"index": new_index, "initial_load": "scan", "start_position": "TRIM_HORIZON"}
    )
    leases = config.leases.model_copy(
        update={"table": lease_table_name(config.leases.table, table.table), "worker_id": None}
    )
    observability = config.observability.model_copy(update={"listen": None})
    return config.model_copy(
        update={"tables": [into_new], "leases": leases, "observability": observability}
    )


def caught_up(
    leases: Iterable[Lease], caught_up_at: Mapping[str, float | None], since: float
) -> bool:
    """Whether every shard of the stream is read by this consumer up to a poll asked at `since`
    or later, with everything read before it acknowledged, or read to its end. A finished shard
    counts once its children are leased (right after it finished): until then, what they hold
    is read by no one."""
    leases = list(leases)
    parents = {parent for lease in leases for parent in lease.parent_shard_ids}
    return bool(leases) and all(
        (lease.finished and lease.shard_id in parents)
        or (caught_up_at.get(lease.key) or -math.inf) >= since
        for lease in leases
    )


def lasting_drift(before: Mapping[str, Drifted], after: Mapping[str, Drifted]) -> set[str]:
    """The documents that differed in both looks from an item the table held unchanged across
    them. The consumer caught up in between, so such a document is not a change on its way: it
    is drift. A document whose item changed in between is looked at again."""
    return {
        doc_id
        for doc_id, now in after.items()
        if doc_id in before and before[doc_id].item == now.item
    }


async def reindex(
    engine: Engine,
    table_name: str,
    new_index: str | None = None,
    *,
    before_verify: BeforeVerify | None = None,
) -> ReindexReport:
    """Builds a new index for the table, verifies it and moves the table's alias to it (see the
    module). `before_verify(new_index)`: a test's way to change the new index before it is
    verified (drift must stop the swap)."""
    config = engine.config
    table = next((t for t in config.tables if t.table == table_name), None)
    if table is None:
        raise StreamsyncError(f"--table {table_name}: not in the configuration")
    await refuse_problems(engine)
    search = engine.search
    old = await search.alias_indices(table.index)
    if old is None and await search.index_exists(table.index):
        raise StreamsyncError(concrete_index(table, config.tables.index(table)))
    new = new_index or new_index_name(table.index, datetime.now(UTC))
    if await search.index_exists(new):
        raise StreamsyncError(
            f"index {new}: exists already; name another with --index, or delete it"
        )
    builder = builder_config(config, table, new)
    async with open_engine(
        builder, Metrics(), f"{engine.worker_id}-reindex", asyncio.Event()
    ) as consumer:
        if await consumer.leases.exists():
            raise StreamsyncError(
                f"lease table {consumer.leases.name}: exists; another reindex of {table.table} "
                "is running, or one was interrupted: delete that table (and the index it was "
                "building), then run reindex again"
            )
        try:
            return await _Build(engine, consumer, table, old or [], new).run(before_verify)
        finally:
            await consumer.leases.delete_table()


class _Build:
    """One reindex under way: its consumer streaming into the new index, and the steps that
    wait on it."""

    def __init__(
        self, engine: Engine, consumer: Engine, table: TableConfig, old: list[str], new: str
    ) -> None:
        self._engine = engine
        self._consumer = consumer
        self._table = table
        self._old = old
        self._new = new
        self._started = asyncio.Event()
        self._streaming: Streaming | None = None
        self._swapped = False

    async def run(self, before_verify: BeforeVerify | None) -> ReindexReport:
        alias, new = self._table.index, self._new
        log.info("reindex: building", extra={"table": self._table.table, "index": new})
        task = asyncio.create_task(self._stream())
        try:
            streaming = await self._wait(task, self._loaded)
            await self._catch_up(task, streaming)
            if before_verify is not None:
                await before_verify(new)
            verified, drift, settled = await self._verify(task, streaming)
            report = ReindexReport(
                self._table.table, alias, new, self._old, verified, drift, settled
            )
            if drift is not None:
                return report
            await self._swap()
            self._swapped = True
            log.info("reindex: alias moved", extra={"alias": alias, "index": new})
            await self._catch_up(task, streaming)  # what the workers wrote to the old index
            return report
        finally:
            self._consumer.stopping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _swap(self) -> None:
        alias, new = self._table.index, self._new
        try:
            await self._engine.search.update_aliases(swap_actions(alias, self._old, new))
        except SearchError as error:
            raise StreamsyncError(
                f"alias {alias}: cannot move it to {new} ({error}); the alias is unchanged and "
                f"{new} was verified: grant the credentials the manage privilege on both and run "
                f"reindex again, or delete {new}"
            ) from error

    async def _stream(self) -> None:
        """The consumer: the engine's own run() (its initial load, then streaming), in a task
        of its own so that its supervisor is its own."""
        streaming = await Streaming.prepare(self._consumer)
        self._streaming = streaming
        await streaming.run(self._started, None)

    async def _loaded(self) -> Streaming | None:
        streaming = self._streaming
        done = streaming is not None and self._started.is_set() and not streaming.loading
        return streaming if done else None

    async def _catch_up(self, task: asyncio.Task[None], streaming: Streaming) -> None:
        """Waits until the consumer has indexed everything the stream holds now."""
        since = clock.monotonic() + SETTLE_SECONDS
        source = streaming.sources[0]

        async def caught_up_now() -> bool | None:
            if source.failure is not None:
                raise StreamsyncError(f"reindex {self._table.table}: {source.failure}")
            scan = await self._consumer.leases.scan()
            leases = [lease for lease in scan.leases if lease.stream_arn == source.stream_arn]
            return caught_up(leases, streaming.coordinator.caught_up_at(), since) or None

        await self._wait(task, caught_up_now)

    async def _wait(
        self, task: asyncio.Task[None], condition: Callable[[], Awaitable[T | None]]
    ) -> T:
        """Polls `condition` until it gives a value; raises should the consumer or the command
        stop first."""
        table = self._table.table
        while True:
            if task.done():
                task.result()
                raise StreamsyncError(f"reindex {table}: the consumer stopped early")
            failed = self._streaming.supervisor.problems if self._streaming else []
            if failed:  # a failed initial load, say: what it should fill never will be
                raise StreamsyncError(f"reindex {table}: {'; '.join(failed)}")
            if self._engine.stopping.is_set() and self._swapped:
                raise StreamsyncError(
                    f"reindex {table}: interrupted after the alias moved to {self._new}, before "
                    f"it read past the swap: run `streamsync verify --table {table} --repair`"
                )
            if self._engine.stopping.is_set():
                raise StreamsyncError(
                    f"reindex {table}: interrupted; the alias was not moved, and {self._new} is "
                    "left as it was: delete it"
                )
            value = await condition()
            if value is not None:
                return value
            await asyncio.sleep(CHECK_EVERY_SECONDS)

    async def _verify(
        self, task: asyncio.Task[None], streaming: Streaming
    ) -> tuple[VerifyReport, VerifyReport | None, int]:
        """(the new index against the table; what still differs, or None; how many differences
        were changes on their way). Under writes a verify also meets changes the consumer has
        not indexed yet: whatever differs is looked at again once the consumer caught up with
        the stream, until it is equal, or differs from an item that did not change."""
        source = streaming.sources[0]
        first = verifier(self._consumer, source, None)
        verified = await first.verify()
        drifted = first.drifted
        recheck: VerifyReport | None = None
        for _ in range(RECHECKS):
            if not drifted:
                break
            await self._catch_up(task, streaming)
            again = verifier(self._consumer, source, None)
            recheck = await again.recheck([d.key for d in drifted.values()])
            if lasting_drift(drifted, again.drifted):
                return verified, recheck, 0
            drifted = again.drifted
        if drifted:  # changed again before every look: not shown equal, so not swapped
            return verified, recheck, 0
        return verified, None, len(first.drifted)
