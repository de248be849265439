"""What the coordinator's flows share: this worker, and the tables it streams.

A table can stop streaming on its own (its stream deleted or disabled, its leases written for
another index): the other tables keep flowing, so each table's work runs guarded and the reason
it stopped stays on its `Source` for readiness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from streamsync.awsjson import AwsError
from streamsync.config import Config, TableConfig
from streamsync.leases.ports import LeaseStore
from streamsync.observability.metrics import Metrics
from streamsync.sink.ports import ActionSink
from streamsync.source.client import TableStream
from streamsync.source.poller import OnRejectedRecord
from streamsync.source.ports import StreamReader
from streamsync.transform.actions import RecordTransformer

log = logging.getLogger("streamsync.coordinator")


@dataclass
class Source:
    """One configured table and what was learnt about its stream."""

    config: TableConfig
    stream: TableStream
    transformer: RecordTransformer
    listed: set[str] = field(default_factory=set)  # shard ids DescribeStream listed last
    failure: str | None = None  # why this table stopped streaming (table deleted, ...)

    @property
    def stream_arn(self) -> str:
        assert self.stream.stream_arn is not None
        return self.stream.stream_arn


@dataclass(frozen=True)
class Worker:
    """This worker, handed whole to each flow of its coordinator: they must see the same
    tables (a table one flow stops, the others stop too), the same stop and the same wake-up."""

    id: str
    config: Config
    api: StreamReader
    leases: LeaseStore
    sources: dict[str, Source]  # stream ARN -> its table
    sink: ActionSink
    metrics: Metrics
    on_rejected_record: OnRejectedRecord
    stopping: asyncio.Event  # set once: drain, checkpoint, release and leave
    wake: asyncio.Event  # wakes the taker before its next cycle is due


async def guarded(source: Source, work: Callable[[], Awaitable[None]]) -> None:
    """Runs one table's discovery work so that its failure stops only that table: a deleted
    table or a disabled stream is an error for it while the other tables keep flowing."""
    if source.failure is not None:
        return
    try:
        await work()
    except AwsError as error:
        if error.code != "ResourceNotFoundException":
            raise
        source.failure = (
            f"table {source.config.table}: its stream {source.stream_arn} is gone (the table "
            "was deleted or its stream disabled); its changes are no longer streamed. Fix: "
            "enable the stream again and restart streamsync (a new stream needs a backfill)"
        )
        log.error(source.failure, extra={"table": source.config.table})
