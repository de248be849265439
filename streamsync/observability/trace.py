"""An opt-in trace of chosen items through every stage, with timings.

"Why is this order not in the index?" is answered by configuring its document id in
`tables[].trace_ids`: each of its changes then logs `trace` events when read, transformed,
queued, indexed and checkpointed, with the milliseconds since it was read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("streamsync.trace")


@dataclass
class Trace:
    table: str
    shard: str
    sequence_number: int
    doc_id: str
    started: float = field(default_factory=time.monotonic)

    def stage(self, name: str, **fields: object) -> None:
        log.info(
            "trace %s: %s",
            self.doc_id,
            name,
            extra={
                "table": self.table,
                "shard": self.shard,
                "sequence_number": str(self.sequence_number),
                "id": self.doc_id,
                "stage": name,
                "elapsed_ms": round((time.monotonic() - self.started) * 1000, 3),
                **fields,
            },
        )
