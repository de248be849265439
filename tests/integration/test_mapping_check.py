"""The mapping check's verdicts against the real node's: each value is indexed into an index with
the mapping, and the check must report exactly the ones the node refuses (never one it takes),
except for the values the check leaves unjudged, where it must stay silent. Many of the values
are generated (a fixed seed) from the pieces number and date strings are made of, so the rules
for strings are held to the JVM's parsers, not to a list of examples."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from streamsync.sink.mapping_check import Rules, document_clashes
from tests.support.search import Probe, every_engine

NUMBER_PIECES = (
    "", "+", "-", "0", "1", "7", "12", "127", "128", "32768", "65520", "2147483648",
    "9223372036854775807", "9223372036854775808", "1234567890123456789012345", ".", ".5", "e",
    "E", "e+", "e-", "3", "38", "39", "400", "0x", "1p3", "p", "f", "d", "NaN", "Infinity", " ",
    "\t", "a", "_", "x", ",",
)  # fmt: skip


def generated(pieces: tuple[str, ...], count: int, seed: int) -> list[str]:
    chooser = random.Random(seed)
    return ["".join(chooser.choices(pieces, k=chooser.randint(1, 4))) for _ in range(count)]


NUMBERS: list[Any] = [
    0, 1, -1, 1.5, -1.5, 1.0, 127, 128, -129, 32767, 32768, 65504, 65519.0, 65520, 2**31 - 1,
    2**31, -(2**31) - 1, 2**53, 2.5e9, 1e10, 1e20, 3.4e38, 3.5e38, 1e300, True, False, None, "",
    "12", "12.5", " 12", "1e3", "abc", "true", "NaN", "Infinity", "-Infinity", "0x10", "1.5d",
    "١٢", {"a": 1}, [1, 2], [1, "x"], [[1]], [], [{"a": 1}],
]  # fmt: skip


def everything(_: Any) -> bool:
    return True


def ascii_only(value: Any) -> bool:
    return not isinstance(value, str) or value.isascii()


def scalar(value: Any) -> bool:
    """With ignore_malformed, objects are left unjudged (OpenSearch takes them, Elasticsearch
    does not)."""
    return ascii_only(value) and "{" not in repr(value)


def date_judged(value: Any) -> bool:
    """Dates: strings with a digit and fractional numbers are left unjudged."""
    if isinstance(value, str):
        return not any(c.isdigit() for c in value)
    return not isinstance(value, float)


DATE_VALUES: list[Any] = [
    0, -1, 1700000000000, 1700000000000.5, 1e20, True, False, None, {"a": 1}, "", "x", "n/a",
    "2024-01-01", "2024-01-01T10:00:00Z", "2024-01-01 10:00:00", "2024-13-01", "1700000000000",
    "-", "T", "Z", ["2024-01-01", "x"], ["2024-01-01"],
]  # fmt: skip

CASES: list[tuple[dict[str, Any], dict[str, Any], list[Any], Callable[[Any], bool]]] = [
    *(
        ({"type": kind}, {}, NUMBERS + generated(NUMBER_PIECES, 400, n), ascii_only)
        for n, kind in enumerate(("long", "integer", "short", "byte", "double", "float"))
    ),
    ({"type": "half_float"}, {}, NUMBERS + generated(NUMBER_PIECES, 200, 9), ascii_only),
    ({"type": "long", "coerce": False}, {}, NUMBERS, ascii_only),
    ({"type": "integer", "coerce": False}, {}, NUMBERS, ascii_only),
    ({"type": "double"}, {"index.mapping.coerce": False}, NUMBERS, ascii_only),
    ({"type": "long", "ignore_malformed": True}, {}, NUMBERS, scalar),
    ({"type": "integer"}, {"index.mapping.ignore_malformed": True}, NUMBERS, scalar),
    ({"type": "boolean"}, {}, [*NUMBERS, "True", "false", "yes", [True, "false"]], everything),
    ({"type": "keyword"}, {}, NUMBERS, everything),
    ({"type": "text"}, {}, NUMBERS, everything),
    ({"type": "date"}, {}, DATE_VALUES, date_judged),
    ({"type": "date_nanos"}, {}, DATE_VALUES, date_judged),
    ({"type": "date", "format": "epoch_second"}, {}, DATE_VALUES, lambda v: isinstance(v, dict)),
    ({"type": "object", "properties": {"a": {"type": "long"}}}, {}, NUMBERS, everything),
    ({"type": "nested", "properties": {"a": {"type": "long"}}}, {}, NUMBERS, everything),
]


@every_engine
@pytest.mark.parametrize(("field", "settings", "values", "judged"), CASES)
async def test_the_check_refuses_what_the_node_refuses(
    probe: Probe,
    index_name: str,
    field: dict[str, Any],
    settings: dict[str, Any],
    values: list[Any],
    judged: Callable[[Any], bool],
) -> None:
    mappings = {"properties": {"f": field}}
    await probe.create_index(index_name, {"mappings": mappings, "settings": settings})
    rules = rules_of(index_name, mappings, settings)
    refused = await probe.bulk_index(index_name, [{"f": value} for value in values])
    disagreements = []
    for value, error in zip(values, refused, strict=True):
        reported = list(document_clashes(rules, {"f": value}))
        taken_yet_reported = reported and error is None
        refused_unreported = error is not None and not reported and judged(value)
        if taken_yet_reported or refused_unreported:
            disagreements.append((value, error and error["reason"][:160], reported))
    assert disagreements == []
    if not field.get("ignore_malformed") and not settings.get("index.mapping.ignore_malformed"):
        assert any(refused), "no value was refused: the case proves nothing"


def rules_of(index: str, mappings: dict[str, Any], settings: dict[str, Any]) -> Rules:
    return Rules(
        index,
        mappings,
        coerce=settings.get("index.mapping.coerce", True),
        ignore_malformed=settings.get("index.mapping.ignore_malformed", False),
    )


# Each new field appears once: where it is taken, the node maps it from its first value.
STRICT_DOCUMENTS: list[dict[str, Any]] = [
    {"a": "x"},
    {"b": 1},
    {"c": None},
    {"d": []},
    {"e": {}},
    {"o": {"c": 1}},
    {"o": {"d": 1}},
    {"s": {"x": 1}},
    {"s": {"y": {"z": 1}}},
    {"loose": {"anything": 1}},
    {"off": {"anything": {"deep": 1}}},
    {"o": [{"c": 1}, {"f": 1}]},
    {"o": {"g": []}},
    {"o": {"h": {}}},
    {"o": {"i": [None]}},
    {"j": [None]},
    {"s": {"k": None}},
]
# A null for a field a strict-inheriting object lacks: Elasticsearch refuses it, OpenSearch not.
UNJUDGED_STRICT: list[dict[str, Any]] = [{"o": {"e": None}}]


@every_engine
@pytest.mark.parametrize("dynamic", ["strict", "true", "false", "runtime"])
async def test_strict_objects_refuse_what_the_check_reports(
    probe: Probe, index_name: str, dynamic: str
) -> None:
    if dynamic == "runtime" and probe.target.engine != "elasticsearch":
        pytest.skip("OpenSearch has no runtime fields (its mappings refuse dynamic: runtime)")
    mappings = {
        "dynamic": dynamic,
        "properties": {
            "a": {"type": "keyword"},
            "o": {"properties": {"c": {"type": "long"}}},
            "s": {"type": "object", "dynamic": "strict", "properties": {"x": {"type": "long"}}},
            "loose": {"type": "object", "dynamic": "true"},
            "off": {"type": "object", "enabled": False},
        },
    }
    await probe.create_index(index_name, {"mappings": mappings})
    rules = rules_of(index_name, mappings, {})
    refused = await probe.bulk_index(index_name, STRICT_DOCUMENTS)
    verdicts = [
        (document, bool(list(document_clashes(rules, document)))) for document in STRICT_DOCUMENTS
    ]
    assert verdicts == [
        (document, error is not None)
        for document, error in zip(STRICT_DOCUMENTS, refused, strict=True)
    ]
    assert any(refused)
    assert [list(document_clashes(rules, document)) for document in UNJUDGED_STRICT] == [[]]
