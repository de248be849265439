"""`streamsync verify`: is the index still what the table says it should be?

Both sides are streamed, never held: the table is read page by page (a Scan), each page's
expected documents (through the table's transform) are fetched from Elasticsearch by id (mget)
and compared; then the index is read page by page (a point-in-time search) and each page's keys
are looked up in DynamoDB (BatchGetItem) to find documents the table does not have. Memory stays
bounded by a page whatever the table's size. `--repair` re-indexes the missing and different
items and deletes the extra documents (with a tombstone), both at the version a backfill started
now would give (`scan_version`), so any stream change made since the verify began outranks them.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from streamsync.awsjson import is_transient
from streamsync.backfill import SOURCE
from streamsync.retry import retry_transient
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.engine import SearchEngine
from streamsync.sink.engine import is_transient as is_search_transient
from streamsync.source.acks import AckTracker
from streamsync.source.client import StreamsApi
from streamsync.transform.actions import Action, Origin, RecordTransformer, TransformError
from streamsync.transform.ids import document_id
from streamsync.transform.records import scanned_record
from streamsync.transform.versions import scan_version

log = logging.getLogger("streamsync.verify")

PAGE = 500
SAMPLES = 5


@dataclass
class VerifyReport:
    table: str
    index: str
    table_items: int = 0
    index_documents: int = 0
    missing: int = 0
    different: int = 0
    extra: int = 0
    unverifiable: int = 0  # documents whose key cannot be told (hashed id, key fields excluded)
    samples: dict[str, list[str]] = field(
        default_factory=lambda: {"missing": [], "different": [], "extra": []}
    )
    repaired: int = 0

    @property
    def drift(self) -> bool:
        return bool(self.missing or self.different or self.extra)

    def note(self, kind: str, doc_id: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.samples[kind]) < SAMPLES:
            self.samples[kind].append(doc_id)

    def summary(self) -> str:
        text = (
            f"verify {self.table} -> {self.index}: {self.table_items} items, "
            f"{self.index_documents} documents; missing {self.missing}, different "
            f"{self.different}, extra {self.extra}"
        )
        if self.unverifiable:
            text += f", unverifiable {self.unverifiable}"
        if self.repaired:
            text += f"; repaired {self.repaired}"
        for kind, ids in self.samples.items():
            if ids:
                text += f"\n  {kind}: {', '.join(ids)}"
        return text


@dataclass(frozen=True)
class Drifted:
    """A document found to differ from its item, and the item as the table held it then."""

    key: dict[str, Any]  # the item's key (DynamoDB JSON)
    item: dict[str, Any] | None  # None: the table had no such item (an extra document)


def _key_value(value: Any, kind: str) -> dict[str, Any]:
    """A document's key field (decoded JSON) back to DynamoDB JSON of the table's key type."""
    if kind == "S":
        return {"S": str(value)}
    if kind == "N":
        return {"N": value if isinstance(value, str) else format(Decimal(str(value)), "f")}
    return {"B": base64.b64decode(value) if isinstance(value, str) else value}


def _split_id(doc_id: str) -> list[str]:
    """Undoes `hash|range` escaping: splits on unescaped '|' and unescapes."""
    parts, current, escaped = [], "", False
    for char in doc_id:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


class Verifier:
    def __init__(
        self,
        *,
        api: StreamsApi,
        engine: SearchEngine,
        transformer: RecordTransformer,
        key_types: dict[str, str],
        hash_key: str,
        range_key: str | None,
        sink: BulkIndexer | None,
    ) -> None:
        self._api = api
        self._engine = engine
        self._transformer = transformer
        self._config = transformer.config
        self._key_types = key_types
        self._hash_key = hash_key
        self._range_key = range_key
        self._sink = sink  # None: report only
        self._started = time.time()
        self._tracker = AckTracker()
        self.drifted: dict[str, Drifted] = {}  # document id -> what was found to differ

    async def verify(self) -> VerifyReport:
        report = VerifyReport(self._config.table, self._config.index)
        await self._engine.refresh(self._config.index)
        async for items in self._table_pages():
            report.table_items += len(items)
            await self._compare(items, report)
        async for hits in self._engine.scan(self._config.index, PAGE):
            report.index_documents += len(hits)
            await self._find_extra(hits, report)
        if self._sink is not None:
            await self._sink.drain()
        return report

    async def recheck(self, keys: list[dict[str, Any]]) -> VerifyReport:
        """Compares only the items with these keys, as the table holds them now: what a verify
        found drifted, looked at again (under writes, a verify also finds the changes still on
        their way; `streamsync reindex` tells them from lasting drift this way)."""
        report = VerifyReport(self._config.table, self._config.index)
        await self._engine.refresh(self._config.index)
        items: list[dict[str, Any]] = []
        absent: list[dict[str, Any]] = []
        for key in keys:
            item = await retry_transient(
                lambda key=key: self._api.get_item(self._config.table, key),  # type: ignore[misc]
                "verify GetItem",
                is_transient,
                table=self._config.table,
            )
            if item is None:
                absent.append(key)
            else:
                items.append(item)
        report.table_items = len(items)
        await self._compare(items, report)
        ids = [document_id(key, self._hash_key, self._range_key) for key in absent]
        docs = [{"_index": self._config.index, "_id": doc_id} for doc_id in ids]
        found = await self._mget(docs) if docs else []
        for key, doc_id, doc in zip(absent, ids, found, strict=True):
            if doc.get("found"):
                report.note("extra", doc_id)
                self.drifted[doc_id] = Drifted(key, None)
                await self._delete(doc_id, report)
        return report

    async def _mget(self, docs: list[dict[str, str]]) -> list[dict[str, Any]]:
        return await retry_transient(
            lambda: self._engine.mget(docs),
            "verify mget",
            is_search_transient,
            table=self._config.table,
        )

    async def _table_pages(self) -> AsyncIterator[list[dict[str, Any]]]:
        start: dict[str, Any] | None = None
        while True:
            items, start = await retry_transient(
                lambda key=start: self._api.scan_page(self._config.table, 0, 1, key),  # type: ignore[misc]
                "verify Scan",
                is_transient,
                table=self._config.table,
            )
            yield items
            if start is None:
                return

    async def _expected(self, item: dict[str, Any]) -> Action | None:
        keys = {k: item[k] for k in (self._hash_key, self._range_key) if k and k in item}
        record = scanned_record(item, keys, self._started)
        version = scan_version(self._started)
        try:
            actions = await self._transformer.actions(record, SOURCE, version)
        except TransformError:
            return None  # a dead letter, not a document
        own = [a for a in actions if a.index == self._config.index]
        return own[0] if own and own[0].op == "index" else None

    async def _compare(self, items: list[dict[str, Any]], report: VerifyReport) -> None:
        actions = [await self._expected(item) for item in items]
        expected = [(item, a) for item, a in zip(items, actions, strict=True) if a is not None]
        if not expected:
            return
        found = await self._mget(
            [{"_index": self._config.index, "_id": a.doc_id} for _, a in expected]
        )
        for (item, action), doc in zip(expected, found, strict=True):
            if not doc.get("found"):
                report.note("missing", action.doc_id)
            elif doc["_source"] != orjson.loads(action.source or b"{}"):
                report.note("different", action.doc_id)
            else:
                continue
            key = {k: item[k] for k in (self._hash_key, self._range_key) if k and k in item}
            self.drifted[action.doc_id] = Drifted(key, item)
            await self._repair(action, report)

    def _key_of(self, hit: dict[str, Any]) -> dict[str, Any] | None:
        names = [n for n in (self._hash_key, self._range_key) if n]
        source = hit.get("_source") or {}
        if all(name in source for name in names):
            return {n: _key_value(source[n], self._key_types[n]) for n in names}
        doc_id = hit["_id"]
        if doc_id.startswith("sha256:"):
            return None
        parts = [doc_id] if self._range_key is None else _split_id(doc_id)
        if len(parts) != len(names):
            return None
        return {n: _key_value(p, self._key_types[n]) for n, p in zip(names, parts, strict=True)}

    async def _find_extra(self, hits: list[dict[str, Any]], report: VerifyReport) -> None:
        keyed = [(hit, self._key_of(hit)) for hit in hits]
        report.unverifiable += sum(key is None for _, key in keyed)
        lookups = [(hit, key) for hit, key in keyed if key is not None]
        for start in range(0, len(lookups), 100):
            chunk = lookups[start : start + 100]
            present = await self._present([key for _, key in chunk])
            for hit, key in chunk:
                if hit["_id"] not in present:
                    report.note("extra", hit["_id"])
                    self.drifted[hit["_id"]] = Drifted(key, None)
                    await self._delete(hit["_id"], report)

    async def _present(self, keys: list[dict[str, Any]]) -> set[str]:
        """The document ids of those keys that the table has."""
        found = await retry_transient(
            lambda: self._api.existing_keys(self._config.table, keys),
            "verify BatchGetItem",
            is_transient,
            table=self._config.table,
        )
        return {document_id(key, self._hash_key, self._range_key) for key in found}

    async def _repair(self, action: Action, report: VerifyReport) -> None:
        if self._sink is None:
            return
        await self._sink.put(action, self._tracker.register(0, action.version, 1))
        report.repaired += 1

    async def _delete(self, doc_id: str, report: VerifyReport) -> None:
        if self._sink is None:
            return
        # Like a scanned image: an item re-created after the verify began outranks the delete.
        version = scan_version(self._started)
        origin = Origin(self._config.table, SOURCE, 0, b"{}")
        action = Action("delete", self._config.index, doc_id, version, None, origin)
        await self._repair(action, report)
