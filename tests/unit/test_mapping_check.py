"""The mapping check's bookkeeping, as pure logic: which path a refusal names, how a sample's
refusals are counted, and that documents made to fit a mapping are never reported (the verdicts
themselves are held to a real node in tests/integration/test_mapping_check.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streamsync.sink.mapping_check import Clash, Rules, clashes, document_clashes

MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "pk": {"type": "long"},
        "name": {"type": "keyword"},
        "address": {"properties": {"city": {"type": "keyword"}, "zip": {"type": "integer"}}},
        "free": {"type": "object", "dynamic": "true"},
        "opaque": {"type": "object", "enabled": False},
    },
}
RULES = Rules("people", MAPPINGS)


def test_each_field_is_reported_once_with_its_count_and_first_example() -> None:
    documents: list[tuple[str, dict[str, Any]]] = [
        ("a", {"pk": 1, "name": "x", "nick": "y", "address": {"city": "c", "zip": "no"}}),
        ("b", {"pk": "b", "nick": "z", "address": {"street": "s"}}),
        ("c", {"pk": "c", "nick": None}),
    ]

    found = clashes(RULES, documents)

    assert found == [
        Clash("people", "address.street", "is not in the mapping, which is dynamic: strict",
              True, "b"),
        Clash("people", "nick", "is not in the mapping, which is dynamic: strict", True, "a", 3),
        Clash("people", "address.zip", "is mapped as integer but holds 'no'", False, "a"),
        Clash("people", "pk", "is mapped as long but holds 'b'", False, "b", 2),
    ]  # fmt: skip


def test_a_list_is_judged_element_by_element_and_reported_once() -> None:
    document = {"pk": [1, "x", "y"], "address": [{"city": "c"}, {"town": "t"}, "here"]}

    assert list(document_clashes(RULES, document)) == [
        ("pk", "is mapped as long but holds 'x'", False),
        ("address.town", "is not in the mapping, which is dynamic: strict", True),
        ("address", "is mapped as object but holds 'here'", False),
    ]


def test_what_the_rules_leave_open_is_not_reported() -> None:
    document = {
        "free": {"anything": {"deep": 1}},
        "opaque": "a scalar where an unindexed object is mapped",
        "with.dot": 1,
        "pk": None,
        "name": {"an": "object"},
    }

    assert list(document_clashes(RULES, document)) == [
        ("name", "is mapped as keyword but holds an object", False)
    ]


def test_without_strict_an_unmapped_field_is_not_reported() -> None:
    for dynamic in ("true", "false", "runtime", False, True):
        rules = Rules("people", {**MAPPINGS, "dynamic": dynamic})
        assert list(document_clashes(rules, {"nick": 1, "address": {"town": "t"}})) == [
            ("address.town", "is not in the mapping, which is dynamic: strict", True)
        ] * (dynamic == "strict")


json_scalars = st.none() | st.booleans() | st.text(max_size=5) | st.integers(-(2**53), 2**53)
fitting_values = {
    "pk": st.integers(-(2**53), 2**53) | st.none(),
    "name": json_scalars | st.lists(json_scalars, max_size=3),
    "address": st.fixed_dictionaries(
        {}, optional={"city": st.text(max_size=5), "zip": st.integers(-(2**31), 2**31 - 1)}
    ),
    "free": st.dictionaries(st.text(max_size=3), json_scalars, max_size=3),
    "opaque": json_scalars,
}


@given(st.fixed_dictionaries({}, optional=fitting_values), st.text(min_size=1, max_size=8))
def test_documents_that_fit_are_not_reported_and_an_unmapped_field_is(
    document: dict[str, Any], extra: str
) -> None:
    assert list(document_clashes(RULES, document)) == []
    if extra in MAPPINGS["properties"] or "." in extra:
        return
    assert list(document_clashes(RULES, {**document, extra: 1})) == [
        (extra, "is not in the mapping, which is dynamic: strict", True)
    ]
