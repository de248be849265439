"""Dead letters that a newer change made stale: their document is indexed, or deleted, at a
version at least their own.

Versions order every image of an item (transform/versions.py), and a scan's image (backfill,
verify's repairs, a replay) ranks below every change made after the scan began: so a document
held at a version >= a letter's holds that change or a newer one, and replaying the letter
could only be refused as stale. A delete is known by the engine's own version while it
remembers it (the document is then gone, not held) and by its tombstone for the days those are
kept (sink/tombstones.py); after that, a letter of a deleted item is not found superseded, and a
replay deletes the item again, which is harmless.

Which document a letter is about: the one its action named; for a record no transform accepted,
the one the table's default transform makes of that item. A transform hook's documents are the
hook's own, so such a letter is never found superseded (`None`: cannot tell).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from streamsync.retry import retry_transient
from streamsync.sink.deadletter import DeadLetter
from streamsync.sink.engine import SearchEngine, is_transient
from streamsync.sink.tombstones import Document, Tombstones
from streamsync.transform.actions import RecordTransformer

PAGE = 500  # documents per look-up


@dataclass(frozen=True)
class Held:
    """The newest version the cluster knows a document at, and whether that is its delete."""

    version: int
    deleted: bool


def documents_of(letter: DeadLetter, transformer: RecordTransformer | None) -> frozenset[Document]:
    """The documents a letter is about (see the module's docstring); empty: cannot tell."""
    if letter.index is not None and letter.doc_id is not None:
        return frozenset({(letter.index, letter.doc_id)})
    if transformer is None or not letter.item_keys:
        return frozenset()
    document = transformer.default_document(letter.item_keys)
    return frozenset({document}) if document is not None else frozenset()


def superseded_by(
    version: int, documents: frozenset[Document], held: dict[Document, Held]
) -> str | None:
    """Why a letter at `version` about `documents` is superseded, or None when it is not (or
    that cannot be told): each of its documents is held at `version` or newer."""
    if not documents or any(
        document not in held or held[document].version < version for document in documents
    ):
        return None
    return "; ".join(
        f"{index}/{doc_id} {'deleted' if held[index, doc_id].deleted else 'indexed'} at "
        f"version {held[index, doc_id].version} (the letter's: {version})"
        for index, doc_id in sorted(documents)
    )


async def held_versions(
    engine: SearchEngine, documents: Collection[Document]
) -> dict[Document, Held]:
    """What the cluster holds of each document: its version when indexed, its newest
    tombstone's when that is newer; documents it knows nothing of are left out."""
    held: dict[Document, Held] = {}
    wanted = sorted(documents)
    for start in range(0, len(wanted), PAGE):
        page = wanted[start : start + PAGE]
        for document, doc in zip(page, await _indexed(engine, page), strict=True):
            if doc.get("found"):
                held[document] = Held(int(doc["_version"]), deleted=False)
    tombstones = await retry_transient(
        lambda: Tombstones(engine).newest(wanted), "dead letters: tombstones", is_transient
    )
    for document, version in tombstones.items():
        if document not in held or held[document].version < version:
            held[document] = Held(version, deleted=True)
    return held


async def _indexed(engine: SearchEngine, page: list[Document]) -> list[dict[str, Any]]:
    """The documents' versions, in order (a missing index: not found)."""
    docs = [{"_index": index, "_id": doc_id} for index, doc_id in page]
    return await retry_transient(
        lambda: engine.mget(docs, filter_path="docs._index,docs._id,docs._version,docs.found"),
        "dead letters: indexed versions",
        is_transient,
    )


async def supersessions(
    engine: SearchEngine, letters: Sequence[tuple[DeadLetter, RecordTransformer | None]]
) -> list[str | None]:
    """For each (letter, its table's transformer): why it is superseded, or None."""
    documents = [documents_of(letter, transformer) for letter, transformer in letters]
    held = await held_versions(engine, set().union(*documents))
    return [
        superseded_by(letter.version, about, held)
        for (letter, _), about in zip(letters, documents, strict=True)
    ]
