"""Which documents an existing index's mapping would refuse, judged before any is sent.

An index created by hand (or by an earlier deployment) may have a mapping the table's items do
not fit: `dynamic: strict` without a field the items hold, or a field mapped as a number where
the items hold words. Every such item becomes a dead letter once streaming starts, so `validate`
compares the mapping with a sample of documents made by the table's own transform.

The verdicts follow what Elasticsearch 8 and OpenSearch 2 and 3 do (each rule is checked against
real nodes in tests/integration/test_mapping_check.py), and are kept to cases judged exactly and
alike on every engine: a value the rules cannot settle (a date string in some other shape, a
field type not listed here, a name holding a dot) is never reported, so a reported clash is
always a real refusal.

- `dynamic: strict` (at the root, or inherited by an object) refuses any field not in the
  mapping, even null or empty (but for a null in an object that inherits strict, which
  OpenSearch takes). `false` and `runtime` refuse nothing.
- An object (or a list holding one) is refused by a keyword, text, number, date or boolean field;
  any value but null (or a list of them) by an object or nested one.
- Numbers: a boolean is refused; a string only when the JVM's number parser refuses it (with
  `coerce`, the default, "12", "1e3" and "" go in; without it, any string); integer types refuse
  values out of their range, and fractions without `coerce`; float and half_float refuse what
  overflows them.
- boolean takes only true, false, "true", "false" and "".
- date takes booleans never, and a string only if it holds a digit (a string with digits in a
  shape not judged here is not reported).
- `ignore_malformed` (on the field or the index) lets every value in on OpenSearch, every scalar
  on Elasticsearch: such a field is not judged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

RANGES = {
    "long": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-(2**7), 2**7 - 1),
}
FLOAT_LIMITS = {
    "double": math.inf,
    # Values from these magnitudes up round to infinity in the type, which is refused.
    "float": 2.0**128 - 2.0**103,
    "half_float": 65520.0,
}
STRINGS = frozenset({"keyword", "text", "match_only_text", "wildcard"})
DATES = frozenset({"date", "date_nanos"})
OBJECTS = frozenset({"object", "nested"})
SCALARS = STRINGS | DATES | RANGES.keys() | FLOAT_LIMITS.keys() | {"boolean"}

# java.lang.Long.parseLong and java.math.BigDecimal(String), for ASCII text.
_JAVA_LONG = re.compile(r"[+-]?[0-9]+")
_JAVA_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# java.lang.Double.parseDouble, after it trims characters up to ' ' from both ends.
_JAVA_DOUBLE = re.compile(
    r"[+-]?(NaN|Infinity|(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
    r"|0[xX]([0-9a-fA-F]+\.?|[0-9a-fA-F]*\.[0-9a-fA-F]+)[pP][+-]?[0-9]+)[fFdD]?)"
)
_BOOLEAN_TEXT = frozenset({"true", "false", ""})
_JVM_TRIMMED = "".join(chr(c) for c in range(33))  # what String.trim() removes


@dataclass
class Clash:
    """One field whose values in the sample the index would refuse."""

    index: str
    path: str
    reason: str  # what is refused, to follow "field 'x' ..."
    strict: bool  # a field the mapping lacks, rather than a value of the wrong type
    example_id: str
    count: int = 1


@dataclass(frozen=True)
class Rules:
    """An index's mapping and the index-wide settings that change what it takes."""

    index: str
    mappings: Mapping[str, Any]
    coerce: bool = True
    ignore_malformed: bool = False


@dataclass
class Findings:
    """Clashes by index and field path, each counted over the sample."""

    clashes: dict[tuple[str, str], Clash] = field(default_factory=dict)

    def add(self, rules: Rules, doc_id: str, document: Mapping[str, Any]) -> None:
        seen: set[str] = set()
        for path, reason, strict in document_clashes(rules, document):
            if path in seen:
                continue
            seen.add(path)
            known = self.clashes.get((rules.index, path))
            if known is None:
                self.clashes[(rules.index, path)] = Clash(rules.index, path, reason, strict, doc_id)
            else:
                known.count += 1


def document_clashes(rules: Rules, document: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(field path, reason, strict) for each field of `document` that `rules` refuses."""
    dynamic = str(rules.mappings.get("dynamic", "true")).lower()
    yield from _object_clashes(rules, rules.mappings.get("properties") or {}, dynamic, document, "")


def _object_clashes(
    rules: Rules,
    properties: Mapping[str, Any],
    dynamic: str,
    document: Mapping[str, Any],
    prefix: str,
    inherited: bool = False,
) -> Iterator[tuple[str, str, bool]]:
    """`inherited`: the object has no `dynamic` of its own (OpenSearch then takes a null for a
    field it lacks, even under a strict parent; Elasticsearch does not: it is not judged)."""
    for name, value in document.items():
        if "." in name:  # a path to Elasticsearch: not judged here
            continue
        path = prefix + name
        mapped = properties.get(name)
        if mapped is None:
            if dynamic == "strict" and not (inherited and value is None):
                yield path, "is not in the mapping, which is dynamic: strict", True
            continue
        yield from _field_clashes(rules, mapped, dynamic, value, path)


def _field_clashes(
    rules: Rules, mapped: Mapping[str, Any], dynamic: str, value: Any, path: str
) -> Iterator[tuple[str, str, bool]]:
    kind = str(mapped.get("type", "object" if "properties" in mapped else ""))
    if kind in OBJECTS:
        if mapped.get("enabled") is False or mapped.get("subobjects") is False:
            return
        inner = str(mapped.get("dynamic", dynamic)).lower()
        inherited = "dynamic" not in mapped
        for element in _elements(value):
            if isinstance(element, dict):
                properties = mapped.get("properties") or {}
                yield from _object_clashes(rules, properties, inner, element, path + ".", inherited)
            elif element is not None:
                yield path, f"is mapped as {kind} but holds {_shown(element)}", False
                return
        return
    if kind not in SCALARS:
        return
    for element in _elements(value):
        reason = _scalar_refusal(rules, mapped, kind, element)
        if reason is not None:
            yield path, f"is mapped as {kind} but holds {reason}", False
            return


def _elements(value: Any) -> Iterator[Any]:
    """A value as Elasticsearch indexes it: a list (of lists) is its elements, one by one."""
    if isinstance(value, list):
        for item in value:
            yield from _elements(item)
    else:
        yield value


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _scalar_refusal(rules: Rules, mapped: Mapping[str, Any], kind: str, value: Any) -> str | None:
    """Why a field of type `kind` refuses `value` (None: it takes it, or it is not judged)."""
    if _flag(mapped.get("ignore_malformed", rules.ignore_malformed)):
        return None  # OpenSearch lets even objects in then; Elasticsearch does not
    if isinstance(value, dict):
        return "an object"
    if value is None or kind in STRINGS:
        return None
    if kind == "boolean":
        taken = isinstance(value, bool) or (isinstance(value, str) and value in _BOOLEAN_TEXT)
        return None if taken else _shown(value)
    if isinstance(value, bool):
        return _shown(value)
    if kind in DATES:
        return _date_refusal(kind, mapped, value)
    coerce = _flag(mapped.get("coerce", rules.coerce))
    if isinstance(value, str):
        return None if _number_text_fits(kind, value, coerce) else _shown(value)
    return None if _number_fits(kind, value, coerce) else _shown(value)


def _date_refusal(kind: str, mapped: Mapping[str, Any], value: Any) -> str | None:
    """Only the default format is judged: each of its shapes holds a digit, and date_nanos
    holds nothing before 1970."""
    if "format" in mapped:
        return None
    if isinstance(value, str) and not any(c.isdigit() for c in value):
        return _shown(value)
    if kind == "date_nanos" and isinstance(value, int | float) and value < 0:
        return _shown(value)
    return None


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _number_fits(kind: str, value: int | float, coerce: bool) -> bool:
    """A JSON number in a numeric field."""
    if kind in FLOAT_LIMITS:
        return abs(value) < FLOAT_LIMITS[kind]
    low, high = RANGES[kind]
    if isinstance(value, float) and not value.is_integer() and not coerce:
        return False
    return low <= math.trunc(value) <= high if math.isfinite(value) else False


def _number_text_fits(kind: str, text: str, coerce: bool) -> bool:
    """A string in a numeric field, as Elasticsearch parses it: long with Long.parseLong, then
    BigDecimal; the other integer types and the floating ones with Double.parseDouble (which
    trims, and takes NaN, Infinity, hex and a d or f suffix). Non-ASCII text is not judged
    (Java reads other scripts' digits too)."""
    if not text:
        return coerce  # an empty string is null, unless coerce is off
    if not coerce:
        return False
    if not text.isascii():
        return True
    if kind == "long":
        if _JAVA_LONG.fullmatch(text):
            number: float | int = int(text)
        elif decimal := _JAVA_DECIMAL.fullmatch(text):
            # BigDecimal's scale is an int: a larger exponent is no number at all.
            if decimal[2] and abs(int(decimal[2][1:])) > 2**31 - 1:
                return False
            return -(2**63) - 1 < Decimal(text) < 2**63
        else:
            return False
        low, high = RANGES[kind]
        return low <= number <= high
    trimmed = text.strip(_JVM_TRIMMED)
    if not _JAVA_DOUBLE.fullmatch(trimmed):
        return False
    parsed = _java_double(trimmed)
    if kind in FLOAT_LIMITS:
        return math.isfinite(parsed) and abs(parsed) < FLOAT_LIMITS[kind]
    if math.isnan(parsed):
        return True  # (int) NaN is 0 in Java
    low, high = RANGES["integer"]
    if not low <= parsed <= high:
        return False
    low, high = RANGES[kind]
    return low <= math.trunc(parsed) <= high


def _java_double(text: str) -> float:
    body = text if text.endswith(("NaN", "Infinity")) else text.rstrip("fFdD")
    if "x" in body or "X" in body:
        sign = -1.0 if body.startswith("-") else 1.0
        return sign * float.fromhex(body.lstrip("+-"))
    return float(body)


def clashes(rules: Rules, documents: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Clash]:
    """The clashes of (id, document) pairs with one index's rules, strict ones first."""
    findings = Findings()
    for doc_id, document in documents:
        findings.add(rules, doc_id, document)
    return sorted(findings.clashes.values(), key=lambda c: (not c.strict, c.path))
