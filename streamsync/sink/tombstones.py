"""Delete tombstones that outlive Elasticsearch's own.

Elasticsearch remembers a deleted document's version only for `index.gc_deletes` (60 s). After
that, an older image arriving late (a replay after a crash, an overlapping worker's bulk request
in flight during a lease hand-off, a backfill image, a replayed dead letter) would bring the
document back to life. So every delete also writes a tombstone (target index, id, version) into a
daily, hidden index `streamsync-tombstones-YYYY.MM.DD`, kept `RETENTION_DAYS` (longer than the
stream's 24 h retention), and every index action that *created* a document is checked against the
tombstones: if a newer one exists, the document is deleted again at the tombstone's version. A
resurrected document is thus visible for one bulk round trip at most, and never stays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from streamsync.retry import retry_transient_per_table
from streamsync.sink.batch import settled
from streamsync.sink.engine import Refused, SearchEngine, is_transient
from streamsync.transform.actions import Action

log = logging.getLogger("streamsync.sink")

Document = tuple[str, str]  # (index, id)

PREFIX = "streamsync-tombstones-"
RETENTION_DAYS = 2
TEMPLATE: dict[str, Any] = {
    "settings": {"index.hidden": True, "number_of_shards": 1},
    "mappings": {"dynamic": False, "properties": {"v": {"type": "long"}}},
}


class Tombstones:
    def __init__(
        self,
        engine: SearchEngine,
        retention_days: int = RETENTION_DAYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._retention = retention_days
        self._clock = clock

    def _day(self, days_ago: int = 0) -> str:
        day = datetime.fromtimestamp(self._clock(), UTC) - timedelta(days=days_ago)
        return f"{PREFIX}{day:%Y.%m.%d}"

    @staticmethod
    def _id(action: Action) -> str:
        return f"{action.index}|{action.doc_id}"

    def lines(self, delete: Action) -> bytes:
        """The bulk lines that record a delete's tombstone, to send with the delete."""
        meta = {
            "_index": self._day(),
            "_id": self._id(delete),
            "version": delete.version,
            "version_type": "external",
        }
        return orjson.dumps({"index": meta}) + b"\n" + orjson.dumps({"v": delete.version}) + b"\n"

    async def ensure_template(self) -> None:
        await self._engine.put_index_template(
            "streamsync-tombstones", {"index_patterns": [f"{PREFIX}*"], "template": TEMPLATE}
        )

    async def prune(self) -> None:
        """Deletes tombstone indices older than the retention."""
        keep = {self._day(days) for days in range(self._retention + 1)}
        for index in await self._engine.indices(f"{PREFIX}*"):
            if index not in keep and index < min(keep):
                await self._engine.delete_index(index)

    async def bury_again(self, created: list[Action]) -> None:
        """Deletes again the documents just created that a newer tombstone says are deleted."""
        if not created:
            return
        await retry_transient_per_table(
            lambda: self._bury_again(created),
            "tombstone check",
            is_transient,
            lambda: {action.origin.table for action in created},
            actions=len(created),
        )

    async def newest(self, documents: Collection[Document]) -> dict[Document, int]:
        """The version of the newest tombstone of each of `documents` (index, id) that has one
        within the retention. A tombstone that cannot be read now may exist: that raises
        `Refused`, to be retried, rather than be taken for none."""
        # Only the days whose index exists now, after the documents were created: a tombstone
        # that predates them was written, and its day's index made, before this look-up, so
        # none is skipped. Without deletes lately there is no look-up at all (thousands of gets
        # on missing indices cost Elasticsearch about a third of the stream's throughput).
        if not documents:
            return {}
        days = {self._day(days) for days in range(self._retention + 1)}
        existing = sorted(days & set(await self._engine.indices(f"{PREFIX}*")))
        if not existing:
            return {}
        wanted = {f"{index}|{doc_id}": (index, doc_id) for index, doc_id in documents}
        docs = [{"_index": day, "_id": key} for key in wanted for day in existing]
        # Most look-ups miss: keep the answer down to the ids, versions and error types, or
        # parsing it costs the worker more than the bulk request did.
        found = await self._engine.mget(
            docs, source=["v"], filter_path="docs._id,docs._source.v,docs.error.type"
        )
        newest: dict[Document, int] = {}
        for doc in found:
            if "_source" in doc:
                document = wanted[doc["_id"]]
                newest[document] = max(newest.get(document, 0), int(doc["_source"]["v"]))
            elif doc.get("error", {}).get("type", "index_not_found_exception") != (
                "index_not_found_exception"
            ):
                raise Refused(500, "tombstone_lookup_failed", str(doc))
        return newest

    async def _bury_again(self, created: list[Action]) -> None:
        newest = await self.newest({(action.index, action.doc_id) for action in created})
        body = bytearray()
        for action in created:
            tombstone = newest.get((action.index, action.doc_id), 0)
            if tombstone > action.version:
                log.info(
                    "an older image recreated a deleted document; deleting it again",
                    extra={"index": action.index, "id": action.doc_id, "version": tombstone},
                )
                meta: dict[str, Any] = {
                    "_index": action.index,
                    "_id": action.doc_id,
                    "version": tombstone,
                    "version_type": "external",
                }
                body += orjson.dumps({"delete": meta}) + b"\n"
        if body:
            response = await self._engine.bulk(bytes(body))
            for item in response["items"]:
                status = int(item["delete"]["status"])
                if not settled("delete", status):
                    raise Refused(status, "re_delete_failed", str(item))
