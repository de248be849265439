"""Derive the Elasticsearch `_id` of an item from its DynamoDB key.

The id must be a pure function of the key, so an update, a replay or a delete of the same item
always lands on the same document, and two different keys must never share an id, or one item
would silently overwrite another. Ids stay readable where that costs nothing (a hash-only
table's id is its key text), which keeps documents easy to find by hand.

Numbers are canonicalised because DynamoDB treats "1", "1.0" and "1E+0" as the same key; strings
and binaries are taken as they are, being their own canonical form. Types are not tagged in the
id: a key attribute has one type, fixed by the table's schema.

Ids over Elasticsearch's 512-byte limit are replaced by a SHA-256 digest. So that a digest can
never equal a readable id, a readable id that itself starts with the digest prefix is hashed
too: without that, an item keyed "sha256:<hex>" could overwrite the long-keyed item it names.
"""

from __future__ import annotations

import hashlib
from base64 import b64encode
from decimal import Context, Decimal, DecimalException
from typing import Any

_MAX_ID_BYTES = 512  # Elasticsearch rejects longer `_id`s.
_HASHED_PREFIX = "sha256:"


def _canonical_number(text: str) -> str:
    try:
        number = Decimal(text)
    except DecimalException:
        raise ValueError(f"invalid DynamoDB number {text!r}") from None
    if not number.is_finite():
        raise ValueError(f"invalid DynamoDB number {text!r}")
    if not number:
        return "0"  # Folds "-0", "0.0" and "0E+5" into one key.
    # normalize() under the default 28-digit context would round DynamoDB's 38-digit numbers;
    # a context as precise as the number itself only strips its trailing zeros.
    exact = Context(prec=len(number.as_tuple().digits))
    return format(number.normalize(exact), "f")


def _key_text(keys: dict[str, dict[str, Any]], name: str) -> str:
    try:
        value = keys[name]
    except KeyError:
        raise KeyError(f"key attribute {name!r} is missing from the record's Keys") from None
    if "S" in value:
        text: str = value["S"]
        return text
    if "N" in value:
        return _canonical_number(value["N"])
    if "B" in value:
        binary: str | bytes = value["B"]
        return binary if isinstance(binary, str) else b64encode(binary).decode("ascii")
    raise ValueError(f"key attribute {name!r} has a type other than S, N or B: {list(value)}")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def document_id(keys: dict[str, dict[str, Any]], hash_key: str, range_key: str | None) -> str:
    """Return the `_id` for the item whose raw DynamoDB `Keys` map is `keys`."""
    hash_text = _key_text(keys, hash_key)
    if range_key is None:
        readable = hash_text
    else:
        readable = f"{_escape(hash_text)}|{_escape(_key_text(keys, range_key))}"
    encoded = readable.encode("utf-8")
    if len(encoded) > _MAX_ID_BYTES or readable.startswith(_HASHED_PREFIX):
        return _HASHED_PREFIX + hashlib.sha256(encoded).hexdigest()
    return readable
