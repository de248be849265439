"""Decode DynamoDB JSON into plain values that serialise to JSON without loss.

Every change record passes through here, so this is the hot path: the value decoder is a
membership if-chain ordered by how common each type is (measured faster than a dispatch dict
or matching on the tag), and numbers avoid `Decimal` unless the cheap checks cannot decide.

Numbers are the delicate part. DynamoDB numbers carry up to 38 significant digits, a double only
about 16, and Elasticsearch silently rounds what it indexes. A number therefore becomes a JSON
number only when a double holds exactly the value that was written; otherwise it stays the
original string, so nothing is ever rounded on the way through.
"""

from __future__ import annotations

from base64 import b64encode
from decimal import Decimal
from typing import Any

# Largest magnitude up to which every integer is exactly representable as a double.
_MAX_EXACT_INT = 2**53


def decode_number(text: str) -> int | float | str:
    """Return `text` as an int or float when that is exact, else `text` itself."""
    if "." in text or "e" in text or "E" in text:
        number = float(text)
        shortest = repr(number)
        # Comparing the shortest repr first settles most fractions ("0.1", "12.5") without
        # Decimal. Neither check can accept an overflow: inf's repr is "inf", which is neither
        # the text (it holds a '.' or an exponent) nor equal to it as a Decimal.
        if shortest == text or Decimal(shortest) == Decimal(text):
            return number
        return text
    integer = int(text)
    return integer if -_MAX_EXACT_INT <= integer <= _MAX_EXACT_INT else text


def _binary(value: str | bytes) -> str:
    # The raw Streams API already sends base64 text; botocore would hand over decoded bytes.
    return value if isinstance(value, str) else b64encode(value).decode("ascii")


def decode_value(value: dict[str, Any]) -> Any:
    """Decode one attribute value such as {"N": "12.5"}; an unknown type tag is a ValueError."""
    if "S" in value:
        return value["S"]
    if "N" in value:
        return decode_number(value["N"])
    if "M" in value:
        return decode_image(value["M"])
    if "L" in value:
        return [decode_value(item) for item in value["L"]]
    if "BOOL" in value:
        return value["BOOL"]
    if "NULL" in value:
        return None
    if "SS" in value:
        return list(value["SS"])
    if "NS" in value:
        return [decode_number(item) for item in value["NS"]]
    if "B" in value:
        return _binary(value["B"])
    if "BS" in value:
        return [_binary(item) for item in value["BS"]]
    raise ValueError(f"unknown DynamoDB type tag(s): {', '.join(map(repr, value)) or 'none'}")


def decode_image(image: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Decode a whole item (or map): attribute name to attribute value."""
    decoded: dict[str, Any] = {}
    for name, value in image.items():
        # Strings dominate real items; skipping the call for them is measurably faster.
        decoded[name] = value["S"] if "S" in value else decode_value(value)
    return decoded
