"""A stream record, parsed once where it enters: everything downstream reads these fields.

The wire form (`{"eventName", "dynamodb": {"SequenceNumber": "…", …}}`) is read here and nowhere
else, so the sequence number is an int and the creation time a float from the moment a page
arrives. Images and keys stay in DynamoDB JSON: only a transform that needs them decodes them,
and a dead letter keeps the record exactly as it came (`raw`) for a later replay.

Scanned items (backfill, verify, replay) become records here too, dressed as the INSERT or
REMOVE a stream would have carried, so transforms and dead letters treat both alike.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from streamsync.config import TableConfig

# Scanned items have no place in a shard; their records all carry this sequence number.
SCANNED_SEQUENCE_NUMBER = 0


class MalformedRecord(ValueError):
    """Not a stream record at all: nothing to order or checkpoint it by."""


@dataclass(frozen=True, slots=True)
class StreamRecord:
    sequence_number: int
    created_at: float  # ApproximateCreationDateTime: whole seconds from DynamoDB
    event_name: str  # INSERT, MODIFY or REMOVE
    keys: dict[str, Any]
    new_image: dict[str, Any] | None
    old_image: dict[str, Any] | None
    ttl_expiry: bool  # a REMOVE made by DynamoDB's time to live, not by a caller
    raw: dict[str, Any]

    @property
    def removed(self) -> bool:
        return self.event_name == "REMOVE"


def parse_record(raw: dict[str, Any]) -> StreamRecord:
    """The record as GetRecords gave it, typed; MalformedRecord when it has no sequence
    number, keys or event name to go by."""
    try:
        change = raw["dynamodb"]
        return StreamRecord(
            sequence_number=int(change["SequenceNumber"]),
            created_at=float(change.get("ApproximateCreationDateTime", 0)),
            event_name=str(raw["eventName"]),
            keys=change["Keys"],
            new_image=change.get("NewImage"),
            old_image=change.get("OldImage"),
            ttl_expiry=raw["eventName"] == "REMOVE" and _by_time_to_live(raw),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedRecord(f"malformed stream record ({error!r})") from error


def _by_time_to_live(raw: dict[str, Any]) -> bool:
    identity = raw.get("userIdentity") or {}
    return identity.get("type") == "Service" and identity.get("principalId") == (
        "dynamodb.amazonaws.com"
    )


def scanned_record(item: dict[str, Any], keys: dict[str, Any], at: float) -> StreamRecord:
    """A scanned item as the INSERT a stream would carry (in wire form: dead letters keep it)."""
    item, keys = _wire(item), _wire(keys)
    raw = {
        "eventName": "INSERT",
        "eventSource": "streamsync:backfill",
        "dynamodb": _change(keys, at) | {"NewImage": item},
    }
    return StreamRecord(SCANNED_SEQUENCE_NUMBER, at, "INSERT", keys, item, None, False, raw)


def removed_record(keys: dict[str, Any], at: float) -> StreamRecord:
    """The REMOVE of the item with these keys (no image: it is gone)."""
    raw = {"eventName": "REMOVE", "eventSource": "streamsync:replay", "dynamodb": _change(keys, at)}
    return StreamRecord(SCANNED_SEQUENCE_NUMBER, at, "REMOVE", keys, None, None, False, raw)


def _change(keys: dict[str, Any], at: float) -> dict[str, Any]:
    return {
        "Keys": keys,
        "SequenceNumber": str(SCANNED_SEQUENCE_NUMBER),
        "ApproximateCreationDateTime": at,
    }


def _wire(value: Any) -> Any:
    """An attribute value as DynamoDB Streams sends it: botocore's Scan gives binary as bytes,
    the stream gives base64 text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def kept_attributes(image: dict[str, Any], table: TableConfig) -> dict[str, Any]:
    """An image (or document) with only the top-level attributes the table's documents may hold
    (`include_fields`, `exclude_fields`): what is indexed, and all a dead letter may keep."""
    if table.include_fields is not None:
        image = {name: image[name] for name in table.include_fields if name in image}
    if not table.exclude_fields:
        return image
    excluded = set(table.exclude_fields)
    return {name: value for name, value in image.items() if name not in excluded}


def keys_in(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw record's key attributes, whatever else it lacks (a malformed record is a dead letter
    too); empty when it names no item."""
    change = raw.get("dynamodb")
    keys = change.get("Keys") if isinstance(change, dict) else None
    return keys if isinstance(keys, dict) else {}


def redacted(raw: dict[str, Any], table: TableConfig | None) -> dict[str, Any]:
    """A raw record as a dead letter keeps it: its images hold only what the table's documents
    may hold, its keys stay whole (a replay reads the item by them). A record of a table the
    configuration does not describe keeps no image at all."""
    change = raw.get("dynamodb")
    if not isinstance(change, dict):
        return raw
    kept = dict(change)
    for name in ("NewImage", "OldImage"):
        image = change.get(name)
        if image is None:
            continue
        if table is None or not isinstance(image, dict):
            del kept[name]
        else:
            kept[name] = kept_attributes(image, table)
    return {**raw, "dynamodb": kept}
