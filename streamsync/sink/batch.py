"""One bulk request without its I/O: what goes into it, and what its answer settles.

Every item's fate (written, stale, to retry, refused for good) and a delete's dependence on its
tombstone are decided here, by functions of the batch and the answer alone, so the rules are
tested as tables of cases and the lanes (bulk.py) only await the cluster and act on the verdict,
as elasticsearch-py's bulk helpers keep chunking and per-item handling apart from HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from streamsync.sink.engine import retriable
from streamsync.transform.actions import Action

if TYPE_CHECKING:
    from streamsync.sink.ports import Ticket
    from streamsync.sink.tombstones import Tombstones

META_BYTES = 100
"""Roughly what an action's metadata line adds to a request, for the `max_bytes` limit."""


@dataclass(slots=True)
class Entry:
    """A document's place in a batch: the action sent, the actions it settles with it, and
    the tickets of all of them, acknowledged once it is settled."""

    action: Action
    superseded: list[Action] = field(default_factory=list)
    tickets: list[Ticket] = field(default_factory=list)

    @property
    def settles(self) -> tuple[Action, ...]:
        return (*self.superseded, self.action)


class Batch:
    """The actions a lane gathers for one request, one entry per document. Later actions on a
    document replace earlier ones (the newest image wins anyway), so a hot item costs one write
    per request; an older one arriving late rides along only to be acknowledged."""

    def __init__(self, max_actions: int, max_bytes: int) -> None:
        self._max_actions = max_actions
        self._max_bytes = max_bytes
        self._entries: dict[tuple[str, str], Entry] = {}
        self._bytes = 0
        self.actions = 0
        """Every action added, superseded ones included: all are settled with the request."""

    @property
    def full(self) -> bool:
        return len(self._entries) >= self._max_actions or self._bytes >= self._max_bytes

    @property
    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def add(self, action: Action, ticket: Ticket | None = None) -> None:
        key = (action.index, action.doc_id)
        earlier = self._entries.get(key)
        if earlier is None:
            earlier = self._entries[key] = Entry(action)
        elif action.version >= earlier.action.version:
            earlier.superseded.append(earlier.action)
            earlier.action = action
        else:
            earlier.superseded.append(action)
        if ticket is not None:
            earlier.tickets.append(ticket)
        self._bytes += len(action.source or b"") + META_BYTES
        self.actions += 1


def bulk_body(actions: list[Action], tombstones: Tombstones) -> bytes:
    """The NDJSON body of a bulk request. Each action carries its external version, so the
    cluster itself refuses an image older than the document's; each delete carries its
    tombstone, so the delete outlives the cluster's memory of it."""
    body = bytearray()
    for action in actions:
        meta = {
            "_index": action.index,
            "_id": action.doc_id,
            "version": action.version,
            "version_type": "external",
        }
        body += orjson.dumps({action.op: meta})
        body += b"\n"
        if action.source is not None:
            body += action.source
            body += b"\n"
        else:
            body += tombstones.lines(action)
    return bytes(body)


def settled(op: str, status: int) -> bool:
    """Whether an item needs nothing more: written, refused as older than what the document
    holds (a 409 under external versions), or a delete of a document that is not there."""
    return status < 300 or status == 409 or (status == 404 and op == "delete")


@dataclass(frozen=True, slots=True)
class Done:
    """An entry the request settled, with what the lane reports of it."""

    entry: Entry
    status: int
    result: str | None

    @property
    def stale(self) -> bool:
        """The document held a newer change already: acknowledged, but nothing was written."""
        return self.status == 409


@dataclass(slots=True)
class Outcome:
    done: list[Done] = field(default_factory=list)
    retry: list[Entry] = field(default_factory=list)
    rejected: list[tuple[Entry, dict[str, Any]]] = field(default_factory=list)
    """With the error a dead letter keeps: the item's status and the cluster's error."""
    created: list[Action] = field(default_factory=list)
    """Documents the request created, which a newer tombstone may say are deleted."""
    retry_reason: str | None = None
    """Why the last entry to retry failed, for readiness and logs."""


def classify(entries: list[Entry], response: dict[str, Any]) -> Outcome:
    """What a bulk answer means for each entry sent (in `bulk_body`'s order): refusals
    `retriable` allows are retried, any other is rejected, so one bad document never blocks a
    shard."""
    items = iter(response["items"])
    outcome = Outcome()
    for entry in entries:
        op = entry.action.op
        answer = next(items)[op]
        status, error = int(answer["status"]), answer.get("error")
        if op == "delete":
            status, error = _with_tombstone(status, error, next(items)["index"])
        error_type = (error or {}).get("type")
        if settled(op, status):
            outcome.done.append(Done(entry, status, answer.get("result")))
            if answer.get("result") == "created":
                outcome.created.append(entry.action)
        elif retriable(status, error_type):
            outcome.retry.append(entry)
            outcome.retry_reason = f"{status} {error_type}"
        else:
            outcome.rejected.append((entry, {"status": status, **(error or {})}))
    return outcome


def _with_tombstone(
    status: int, error: dict[str, Any] | None, tombstone: dict[str, Any]
) -> tuple[int, dict[str, Any] | None]:
    """A delete counts as done once its tombstone is stored too (or is older than one already
    there): without it, a late older image could bring the document back. When the tombstone
    failed, its failure decides."""
    tombstone_status = int(tombstone["status"])
    if settled("index", tombstone_status):
        return status, error
    return tombstone_status, tombstone.get("error")
