"""`streamsync dlq list | show | delete`: the stored dead letters as an operator looks through
and clears them.

One entry per letter, whatever number of copies it has (in the index, in the file, on several
lines of the file), named by its key (sink/letterstore.py): deleting a letter deletes every copy,
so that it cannot come back from the other place at the next replay. Whether a letter is
superseded is looked up in the cluster (sink/superseded.py); for a record no transform
accepted, that needs the table's key schema, so only then is the table described.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from streamsync.engine import Engine
from streamsync.sink.deadletter import DeadLetter
from streamsync.sink.letterfilter import LetterFilter, age_of, age_text, resolve_names
from streamsync.sink.letterstore import StoredLetter, remove, stored_letters
from streamsync.sink.superseded import documents_of, supersessions
from streamsync.terminal import aligned
from streamsync.transform.actions import RecordTransformer

SHORT_NAME = 12  # characters of a name shown in tables: enough to be unique, and accepted back


@dataclass
class Listed:
    """A letter, its copies, and whether it is superseded."""

    name: str
    letter: DeadLetter
    copies: list[StoredLetter] = field(default_factory=list)
    superseded: str | None = None  # why, when it is
    decidable: bool = False  # False: which documents it is about cannot be told

    @property
    def stored_in(self) -> list[str]:
        return sorted({copy.where for copy in self.copies})

    @property
    def document(self) -> str:
        letter = self.letter
        return f"{letter.index}/{letter.doc_id}" if letter.index is not None else "-"

    @property
    def superseded_cell(self) -> str:
        if not self.decidable:
            return "?"
        return "yes" if self.superseded is not None else "no"

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.name,
            "stored_in": self.stored_in,
            "copies": len(self.copies),
            "age_seconds": _rounded(age_of(self.letter, now)),
            "superseded": self.superseded is not None if self.decidable else None,
            "superseded_by": self.superseded,
            **self.letter.to_json(),
        }


def _rounded(seconds: float | None) -> float | None:
    return round(seconds, 1) if seconds is not None else None


async def chosen(
    engine: Engine, names: list[str], letters_filter: LetterFilter, *, superseded: bool = True
) -> list[Listed]:
    """The stored letters `names` (ids or unique beginnings of ids; none: all) and
    `letters_filter` choose, oldest first; `superseded`: find out which are (a look-up in the
    cluster; always done when the filter asks for superseded letters)."""
    listed: dict[str, Listed] = {}
    async for copy in stored_letters(engine.search, engine.config.dead_letters):
        listed.setdefault(copy.name, Listed(copy.name, copy.letter)).copies.append(copy)
    if names:
        letters_filter = replace(letters_filter, names=frozenset(resolve_names(names, listed)))
    entries = list(listed.values())
    if superseded or letters_filter.superseded:
        await _find_superseded(engine, entries)
    now = time.time()
    return sorted(
        (
            entry
            for entry in entries
            if letters_filter.matches(entry.name, entry.letter, now, entry.superseded is not None)
        ),
        key=lambda entry: entry.letter.time,
    )


async def _find_superseded(engine: Engine, entries: list[Listed]) -> None:
    transformers: dict[str, RecordTransformer | None] = {}
    tables = {table.table: table for table in engine.config.tables}
    for entry in entries:
        table = entry.letter.table
        if entry.letter.index is None and table not in transformers:
            configured = tables.get(table)
            transformers[table] = (
                (await engine.source(configured)).transformer if configured else None
            )
    pairs = [(entry.letter, transformers.get(entry.letter.table)) for entry in entries]
    for entry, (letter, transformer), why in zip(
        entries, pairs, await supersessions(engine.search, pairs), strict=True
    ):
        entry.decidable = bool(documents_of(letter, transformer))
        entry.superseded = why


async def show(engine: Engine, name: str) -> Listed:
    """The one letter `name` (an id, or the unique beginning of one) names."""
    [entry] = await chosen(engine, [name], LetterFilter())
    return entry


async def delete(engine: Engine, names: list[str], letters_filter: LetterFilter) -> list[Listed]:
    """Deletes every copy of each letter chosen (as by `chosen`); returns them."""
    entries = await chosen(engine, names, letters_filter, superseded=False)
    copies = [copy for entry in entries for copy in entry.copies]
    await remove(engine.search, engine.config.dead_letters, copies)
    return entries


def render_list(entries: list[Listed], now: float) -> str:
    """One line per letter, under a header."""
    header = ["id", "table", "document", "age", "reason", "superseded", "stored in"]
    rows = [
        [
            entry.name[:SHORT_NAME],
            entry.letter.table,
            entry.document,
            age_text(age_of(entry.letter, now)),
            entry.letter.reason,
            entry.superseded_cell,
            ", ".join(entry.stored_in),
        ]
        for entry in entries
    ]
    return aligned([header, *rows])


def render_deleted(entries: list[Listed]) -> str:
    lines = [
        f"deleted {entry.name[:SHORT_NAME]} ({entry.letter.table}, {entry.document}, "
        f"{entry.letter.reason}) from {' and '.join(entry.stored_in)}"
        for entry in entries
    ]
    return "\n".join([*lines, f"deleted {len(entries)} dead letter(s)"])


def render_letter(entry: Listed, now: float) -> str:
    """The whole letter: what it is about, then its error and record in full."""
    letter = entry.letter
    when = (
        f"{datetime.fromtimestamp(letter.time, UTC):%Y-%m-%dT%H:%M:%SZ} "
        f"({age_text(age_of(letter, now))} ago)"
        if letter.time
        else "-"
    )
    superseded = {
        "?": "cannot tell which documents it is about (a hook's, or a table not configured)",
        "no": "no",
    }.get(entry.superseded_cell, f"yes: {entry.superseded}")
    fields = [
        ("id", entry.name),
        ("stored in", ", ".join(entry.stored_in) + f" ({len(entry.copies)} copies)"),
        ("table", letter.table),
        ("shard", letter.shard),
        ("sequence number", letter.sequence_number),
        ("version", str(letter.version)),
        ("stored at", when),
        ("document", f"{entry.document} ({letter.op})" if letter.op else entry.document),
        ("reason", letter.reason),
        ("superseded", superseded),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name + ':':<{width + 1}} {value}" for name, value in fields]
    for name, value in (("error", letter.error), ("record", letter.record)):
        lines.append(f"{name}:")
        lines.append(json.dumps(value, indent=2, sort_keys=True, default=str))
    return "\n".join(lines)
