"""`streamsync dlq replay`: re-drive dead letters once their cause is fixed.

A letter may be older than anything else streamsync remembers: the item may have changed since,
or been deleted (a delete's tombstone lasts two days, a letter `retention_days`). So a replay
never indexes the letter's own image, nor at the letter's version. It reads the item as it is
now (a consistent GetItem, by the keys the letter keeps), puts that through the table's current
transform (so a fixed hook or mapping applies) and indexes the result at the version of a scan
that began when the replay did (`scan_version`, as backfill and verify's repairs do): every
stream change made since outranks it, so a replay never overwrites a newer document (the engine
refuses it as stale, which counts as done). When the item no longer exists, what a REMOVE of it
gives is applied instead (for the default transform: the document is deleted, with its
tombstone) at that same version, so a replay never brings a deleted item back. A table that
keeps the documents of expired items (`ttl_expirations: ignore`) cannot tell a deleted item
from an expired one: there, nothing is written for an item that is gone.

Letters of one item are replayed together (one read, one set of actions), and each letter is
judged by its own outcome: a letter that named a document still fails when that document is
refused again; a letter of a record that could not be transformed still fails when any of its
item's documents is refused, or the transform fails again. Letters that went through are
removed from their destination; the others stay, with their new error logged. Letters older
than `retention_days` are removed without a replay.

Before any of that, a letter whose document the cluster already holds at its version or newer
(indexed, or deleted: sink/superseded.py) is superseded: a newer change went through, so it is
not replayed, is reported on its own (not as still failing, which it would otherwise be for as
long as, say, the transform fails on the item as it is now), and is removed unless
`--keep-superseded`.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from botocore.exceptions import ParamValidationError

from streamsync.awsjson import AwsError
from streamsync.awsjson import is_transient as is_aws_transient
from streamsync.config import Config
from streamsync.observability.metrics import Metrics
from streamsync.retry import retry_transient
from streamsync.sink.bulk import BulkIndexer
from streamsync.sink.engine import SearchEngine
from streamsync.sink.letterstore import StoredLetter, remove, stored_letters
from streamsync.sink.superseded import supersessions
from streamsync.source.client import StreamsApi
from streamsync.transform.actions import Action, RecordTransformer, TransformError
from streamsync.transform.records import removed_record, scanned_record
from streamsync.transform.versions import scan_version

log = logging.getLogger("streamsync.deadletters")

SOURCE = "replay"  # the "shard" of replayed actions, in logs

Document = tuple[str, str]  # (index, id)


@dataclass
class ReplayReport:
    total: int = 0
    replayed: int = 0
    still_failing: int = 0
    superseded: int = 0  # a newer change of their documents is indexed: not replayed
    skipped: int = 0  # their table is not in the configuration
    expired: int = 0  # older than dead_letters.retention_days: removed, not replayed
    superseded_kept: bool = False  # --keep-superseded: reported, left stored

    def summary(self, dry_run: bool) -> str:
        verb = "would replay" if dry_run else "replayed"
        expired = "would expire" if dry_run else "expired"
        superseded = "" if dry_run else (" kept" if self.superseded_kept else " removed")
        return (
            f"dead letters: {self.total}; {verb}: {self.replayed}; still failing: "
            f"{self.still_failing}; superseded (a newer version is indexed): {self.superseded}"
            f"{superseded}; skipped (table not configured): {self.skipped}; "
            f"{expired} (older than retention_days): {self.expired}"
        )

    def checked(self) -> str:
        """What a dry run found out, and what it did not: the cluster indexed nothing, so
        whether it would accept each document is unknown."""
        judged = self.total - self.skipped - self.expired
        transformed = judged - self.superseded
        return (
            f"dry run: of {self.total} stored dead letters, {self.skipped} are of tables not "
            f"configured and {self.expired} past retention_days; of the other {judged}, "
            f"{self.superseded} are superseded (the cluster holds their documents, indexed or "
            f"deleted, at a version at least theirs); for the remaining {transformed}, each "
            "item was read from its table and put through the current transform: "
            f"{self.replayed} would be replayed, {self.still_failing} would still fail (the "
            "transform, the item's keys, or reading the item; each is logged). The cluster "
            "was not asked to index anything, so a document it would refuse (a mapping "
            "conflict, say) counts as would be replayed; no letter was removed."
        )


@dataclass(eq=False)
class _Item:
    """An item's replay: the documents its actions wrote, or that its transform failed."""

    failed: bool = False
    documents: frozenset[Document] = frozenset()
    why: str = ""  # when it failed: the reason, for the letter's own line


@dataclass(eq=False)
class _Stored:
    """A stored letter, and what its replay depends on."""

    copy: StoredLetter
    item: _Item | None = None  # None: the letter names no item, it cannot be replayed
    documents: frozenset[Document] = field(default_factory=frozenset)

    def succeeded(self, refused: dict[Document, str]) -> bool:
        return self.why_failing(refused) is None

    def why_failing(self, refused: dict[Document, str]) -> str | None:
        """None when the letter went through; otherwise why it did not."""
        if self.item is None:
            return "the letter names no item (its record has no keys)"
        if self.item.failed:
            return self.item.why
        again = sorted(refused[document] for document in self.documents & refused.keys())
        return f"refused again: {'; '.join(again)}" if again else None

    @property
    def fields(self) -> dict[str, object]:
        letter = self.copy.letter
        return {
            "table": letter.table,
            "index": letter.index,
            "id": letter.doc_id,
            "dead_letter": f"{self.copy.where} {self.copy.name}",
        }


def request_key(keys: dict[str, Any]) -> dict[str, Any]:
    """An item's keys as the stream sends them (binary as base64 text) to botocore's form."""
    return {
        name: {"B": base64.b64decode(value["B"])}
        if isinstance(value, dict) and isinstance(value.get("B"), str)
        else value
        for name, value in keys.items()
    }


def _readable_later(error: BaseException) -> bool:
    # Keys botocore refuses to send (a letter edited by hand) will not get better.
    return is_aws_transient(error) and not isinstance(error, ParamValidationError)


class Replayer:
    def __init__(
        self,
        engine: SearchEngine,
        api: StreamsApi,
        config: Config,
        transformers: dict[str, RecordTransformer],
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self._api = api
        self._config = config
        self._transformers = transformers
        self._metrics = metrics if metrics is not None else Metrics()
        self._refused: dict[Document, str] = {}  # document -> why the cluster refused it

    async def refused_again(self, action: Action, error: dict[str, Any]) -> None:
        """The bulk indexer's `on_rejected`: the letter stays, and says so."""
        why = f"{action.op}: {error.get('type', 'rejected')}: {error.get('reason', '')}"
        self._refused[(action.index, action.doc_id)] = why.rstrip(": ")

    async def replay(self, sink: BulkIndexer | None, keep_superseded: bool = False) -> ReplayReport:
        """Replays every stored letter through `sink` (whose `on_rejected` is `refused_again`),
        and removes the letters whose documents were written, and those superseded unless
        `keep_superseded`; with no sink (a dry run), only finds out which would go through."""
        started = time.time()
        version = scan_version(started)
        cutoff = started - self._config.dead_letters.retention_days * 86400
        report = ReplayReport(superseded_kept=keep_superseded)
        judged: list[_Stored] = []
        expired: list[_Stored] = []
        async for copy in stored_letters(self._engine, self._config.dead_letters):
            report.total += 1
            if copy.letter.table not in self._transformers:
                report.skipped += 1
            elif copy.letter.time and copy.letter.time < cutoff:
                expired.append(_Stored(copy))
            else:
                judged.append(_Stored(copy))
        stored, superseded = await self._without_superseded(judged)
        items: dict[bytes, _Item] = {}
        for entry in stored:
            await self._replay_letter(entry, items, version, started, sink)
        if sink is not None:
            await sink.drain()
        succeeded = [entry for entry in stored if entry.succeeded(self._refused)]
        for entry in stored:
            why = entry.why_failing(self._refused)
            if why is not None:  # each letter that stays says why, whatever the log level
                log.warning("dead letter still failing: %s", why, extra=entry.fields)
        report.replayed = len(succeeded)
        report.expired = len(expired)
        report.superseded = len(superseded)
        report.still_failing = len(stored) - report.replayed
        if sink is not None:
            removed = succeeded + expired + ([] if keep_superseded else superseded)
            await remove(self._engine, self._config.dead_letters, [entry.copy for entry in removed])
        return report

    async def _without_superseded(
        self, entries: list[_Stored]
    ) -> tuple[list[_Stored], list[_Stored]]:
        """(the letters to replay, those a newer change superseded: each is logged)."""
        found = await supersessions(
            self._engine,
            [(entry.copy.letter, self._transformers[entry.copy.letter.table]) for entry in entries],
        )
        stored: list[_Stored] = []
        superseded: list[_Stored] = []
        for entry, why in zip(entries, found, strict=True):
            if why is None:
                stored.append(entry)
            else:
                superseded.append(entry)
                log.info("dead letter superseded: %s", why, extra=entry.fields)
        return stored, superseded

    async def _replay_letter(
        self,
        entry: _Stored,
        items: dict[bytes, _Item],
        version: int,
        started: float,
        sink: BulkIndexer | None,
    ) -> None:
        """Replays the letter's item (once for all its letters), and notes what the letter's
        outcome depends on."""
        letter = entry.copy.letter
        keys = letter.item_keys
        if not keys:
            return  # it cannot be replayed: said with the letters still failing
        item_id = orjson.dumps([letter.table, keys], option=orjson.OPT_SORT_KEYS)
        item = items.get(item_id)
        if item is None:
            transformer = self._transformers[letter.table]
            item = items[item_id] = await self._replay_item(
                transformer, keys, version, started, sink
            )
        entry.item = item
        named = (letter.index, letter.doc_id)
        if named[0] is not None and named[1] is not None and named in item.documents:
            entry.documents = frozenset({(named[0], named[1])})
        else:
            entry.documents = item.documents

    async def _replay_item(
        self,
        transformer: RecordTransformer,
        keys: dict[str, Any],
        version: int,
        started: float,
        sink: BulkIndexer | None,
    ) -> _Item:
        """Indexes the item as it is now (or applies its removal) through `sink`; with no sink
        (a dry run), only finds out whether its transform goes through."""
        config = transformer.config
        try:
            item = await retry_transient(
                lambda: self._api.get_item(config.table, request_key(keys)),
                "dead-letter replay GetItem",
                _readable_later,
                table=config.table,
            )
        except (AwsError, ParamValidationError) as error:
            return _Item(failed=True, why=f"reading its item failed: {error}")
        if item is not None:
            record = scanned_record(item, keys, started)
        elif config.ttl_expirations == "ignore":
            return _Item()  # gone, deleted or expired: the index keeps what it has
        else:
            record = removed_record(keys, started)
        try:
            actions = await transformer.actions(record, SOURCE, version)
        except TransformError as error:
            return _Item(failed=True, why=f"the transform still fails: {error}")
        if sink is not None:
            for action in actions:
                await sink.put(action)
        return _Item(documents=frozenset((a.index, a.doc_id) for a in actions))
