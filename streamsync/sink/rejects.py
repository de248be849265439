"""What the engine gives up on, as dead letters.

Two places give up, each in its own terms: a shard reader or a backfill on a record no transform
accepts, the bulk indexer on an action the cluster refuses. Both only need a callback that
returns once the letter is kept (their checkpoints wait for it); this turns each report into a
`DeadLetter`, so neither needs to know what a letter holds or where it goes.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamsync.sink.deadletter import DeadLetter
from streamsync.sink.ports import DeadLetterSink
from streamsync.transform.actions import Action, TransformError


class Rejects:
    def __init__(self, letters: DeadLetterSink) -> None:
        self._letters = letters

    async def record(
        self,
        table: str,
        shard_id: str,
        record: dict[str, Any],
        version: int,
        error: TransformError,
    ) -> None:
        await self._letters.put(
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

    async def action(self, action: Action, error: dict[str, Any]) -> None:
        origin = action.origin
        await self._letters.put(
            DeadLetter(
                table=origin.table,
                shard=origin.shard_id,
                sequence_number=str(origin.sequence_number),
                version=action.version,
                reason=str(error.get("type", "rejected")),
                error=error,
                record=orjson.loads(origin.record),
                index=action.index,
                doc_id=action.doc_id,
                op=action.op,
            )
        )
