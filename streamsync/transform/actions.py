"""A stream record becomes Elasticsearch actions: index the new image, or delete the document.

Users can replace the default with a hook (`tables[].transform: package.module:function`, sync or
async) that gets a `ChangeRecord` and returns a document to index, a list of actions, or None to
skip the record. Anything that cannot become an action raises `TransformError`, which the caller
turns into a dead letter instead of stopping the shard.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from streamsync.config import TableConfig
from streamsync.errors import StreamsyncError
from streamsync.observability.trace import Trace
from streamsync.transform.decode import decode_image
from streamsync.transform.ids import document_id
from streamsync.transform.records import StreamRecord, kept_attributes

Op = Literal["index", "delete"]


class TransformError(Exception):
    """This record cannot become actions (bad data, or a hook that raised)."""


def kept(value: Any) -> bytes:
    """JSON to keep while the action waits in the queue: orjson's output is a bytes object of
    at least 4 KB whatever its length (measured with tracemalloc, orjson 3.13), so a
    thousand-byte document held as it comes costs four times its size; the copy is exact."""
    return bytes(memoryview(orjson.dumps(value)))


@dataclass(slots=True)
class Origin:
    """Where an action came from: enough to find, log and replay the record."""

    table: str
    shard_id: str
    sequence_number: int
    # As it came, for dead letters: JSON, not the parsed record, which takes several times the
    # memory while the action waits in the queue (most never become dead letters).
    record: bytes
    created_at: float | None = None  # of the change, for the lag metric


@dataclass(slots=True, eq=False)
class Action:
    op: Op
    index: str
    doc_id: str
    version: int
    source: bytes | None  # the encoded document, for index actions
    origin: Origin
    trace: Trace | None = None


@dataclass(frozen=True)
class ChangeRecord:
    """What a transform hook sees of a stream record."""

    table: str
    event_name: str  # INSERT, MODIFY or REMOVE
    keys: dict[str, Any]
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None
    doc_id: str
    index: str
    sequence_number: int
    approximate_creation_time: float
    ttl_expiry: bool
    raw: dict[str, Any]


Hook = Callable[[ChangeRecord], Any]


def load_hook(spec: str, where: str) -> Hook:
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise StreamsyncError(
            f"{where}: cannot import module '{module_name}' ({error}); "
            "check the name, and that it is installed beside streamsync or its folder is on "
            "PYTHONPATH"
        ) from error
    hook = getattr(module, function_name, None)
    if not callable(hook):
        raise StreamsyncError(f"{where}: '{module_name}' has no function '{function_name}'")
    return hook  # type: ignore[no-any-return]


class RecordTransformer:
    def __init__(
        self, config: TableConfig, hash_key: str, range_key: str | None, hook: Hook | None
    ) -> None:
        self.config = config
        self._config = config
        self._hash_key = hash_key
        self._range_key = range_key
        self._hook = hook
        self._trace_ids = frozenset(config.trace_ids)

    def traced_id(self, record: StreamRecord) -> str | None:
        """The record's document id when it is one of the table's `trace_ids`."""
        if not self._trace_ids:
            return None
        try:
            doc_id = document_id(record.keys, self._hash_key, self._range_key)
        except (KeyError, ValueError, TypeError):
            return None
        return doc_id if doc_id in self._trace_ids else None

    def default_document(self, keys: dict[str, Any]) -> tuple[str, str] | None:
        """(index, id) of the one document every record of the item with these keys becomes,
        for a table without a hook; None with a hook (its documents are the hook's own), or
        for keys that name no item of this table."""
        if self._hook is not None:
            return None
        try:
            return self._config.index, document_id(keys, self._hash_key, self._range_key)
        except (KeyError, ValueError, TypeError):
            return None

    async def actions(self, record: StreamRecord, shard_id: str, version: int) -> list[Action]:
        try:
            actions = await self._actions(record, shard_id, version)
        except TransformError:
            raise
        except Exception as error:
            raise TransformError(f"{type(error).__name__}: {error}") from error
        limit = self._config.max_document_bytes
        for action in actions:
            if limit is not None and action.source is not None and len(action.source) > limit:
                raise TransformError(
                    f"the document for {action.doc_id} has {len(action.source)} bytes, more than "
                    f"max_document_bytes ({limit})"
                )
        return actions

    async def _actions(self, record: StreamRecord, shard_id: str, version: int) -> list[Action]:
        origin = Origin(
            self._config.table,
            shard_id,
            record.sequence_number,
            kept(record.raw),
            record.created_at,
        )
        doc_id = document_id(record.keys, self._hash_key, self._range_key)
        index = self._config.index
        if record.ttl_expiry and self._config.ttl_expirations == "ignore":
            # Before the hook too: an archive keeps expired items' documents whatever transforms
            # them, as `dlq replay` does for an item that is gone.
            return []
        if self._hook is None:
            if record.removed:
                return [Action("delete", index, doc_id, version, None, origin)]
            if record.new_image is None:
                raise TransformError("the record has no NewImage (stream view type?)")
            source = kept(self._shape(decode_image(record.new_image)))
            return [Action("index", index, doc_id, version, source, origin)]
        return await self._hooked(record, origin, doc_id, version)

    def _shape(self, document: dict[str, Any]) -> dict[str, Any]:
        return kept_attributes(document, self._config)

    async def _hooked(
        self,
        record: StreamRecord,
        origin: Origin,
        doc_id: str,
        version: int,
    ) -> list[Action]:
        assert self._hook is not None
        new_image, old_image = record.new_image, record.old_image
        view = ChangeRecord(
            table=self._config.table,
            event_name=record.event_name,
            keys=decode_image(record.keys),
            new_image=self._shape(decode_image(new_image)) if new_image is not None else None,
            old_image=decode_image(old_image) if old_image is not None else None,
            doc_id=doc_id,
            index=self._config.index,
            sequence_number=record.sequence_number,
            approximate_creation_time=record.created_at,
            ttl_expiry=record.ttl_expiry,
            raw=record.raw,
        )
        result = self._hook(view)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return []
        if isinstance(result, dict):
            source = kept(result)
            return [Action("index", view.index, doc_id, version, source, origin)]
        if isinstance(result, list):
            return [self._hook_action(item, view, version, origin) for item in result]
        raise TransformError(
            f"the transform hook returned {type(result).__name__}; "
            "expected a document (dict), a list of actions, or None"
        )

    @staticmethod
    def _hook_action(item: Any, view: ChangeRecord, version: int, origin: Origin) -> Action:
        if not isinstance(item, dict) or item.get("op") not in ("index", "delete"):
            raise TransformError(
                f"the transform hook returned the action {item!r}; expected "
                '{"op": "index" | "delete", "index"?: str, "id"?: str, "document": {...}}'
            )
        index = str(item.get("index", view.index))
        doc_id = str(item.get("id", view.doc_id))
        if item["op"] == "delete":
            return Action("delete", index, doc_id, version, None, origin)
        document = item.get("document")
        if not isinstance(document, dict):
            raise TransformError("an index action from the transform hook needs a 'document'")
        return Action("index", index, doc_id, version, kept(document), origin)
