from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamsync.transform.ids import document_id


def _s(text: str) -> dict[str, Any]:
    return {"S": text}


def _n(text: str) -> dict[str, Any]:
    return {"N": text}


def test_hash_only_string_key_is_readable() -> None:
    assert document_id({"pk": _s("order-123")}, "pk", None) == "order-123"


def test_hash_only_key_is_not_escaped() -> None:
    assert document_id({"pk": _s("a|b\\c")}, "pk", None) == "a|b\\c"


def test_hash_and_range() -> None:
    keys = {"pk": _s("customer-7"), "sk": _s("2024-01-01")}
    assert document_id(keys, "pk", "sk") == "customer-7|2024-01-01"


def test_hash_and_range_are_escaped() -> None:
    keys = {"pk": _s("a|b"), "sk": _s("c\\")}
    assert document_id(keys, "pk", "sk") == "a\\|b|c\\\\"
    # Without escaping, these two would both read "a|b|c".
    first = document_id({"pk": _s("a|b"), "sk": _s("c")}, "pk", "sk")
    second = document_id({"pk": _s("a"), "sk": _s("b|c")}, "pk", "sk")
    assert first != second


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["1", "1.0", "1.00", "1E+0", "0.1E+1", "10E-1"], "1"),
        (["0", "-0", "0.0", "0E+5", "-0E-3"], "0"),
        (["1E+3", "1000", "1000.000", "1.000E+3"], "1000"),
        (["-0.000001", "-1E-6", "-0.0000010"], "-0.000001"),
        (["123.45", "1.2345E+2", "123.450"], "123.45"),
        (["12345678901234567890123456789012345678"], "12345678901234567890123456789012345678"),
        (["1.2345678901234567890123456789012345678E+5"], "123456.78901234567890123456789012345678"),
    ],
)
def test_numbers_are_canonical(texts: list[str], expected: str) -> None:
    for text in texts:
        assert document_id({"pk": _n(text)}, "pk", None) == expected


def test_numeric_range_key_is_canonical() -> None:
    one = document_id({"pk": _s("a"), "sk": _n("1.0")}, "pk", "sk")
    assert one == document_id({"pk": _s("a"), "sk": _n("1E+0")}, "pk", "sk") == "a|1"


def test_binary_keys() -> None:
    assert document_id({"pk": {"B": "AAEC"}}, "pk", None) == "AAEC"
    assert document_id({"pk": {"B": b"\x00\x01\x02"}}, "pk", None) == "AAEC"


def test_long_ids_are_hashed() -> None:
    long_hash = "é" * 300  # 600 UTF-8 bytes although only 300 characters
    expected = "sha256:" + hashlib.sha256(long_hash.encode()).hexdigest()
    assert document_id({"pk": _s(long_hash)}, "pk", None) == expected
    composite = document_id({"pk": _s("x" * 300), "sk": _s("y" * 300)}, "pk", "sk")
    assert composite.startswith("sha256:")
    assert len(composite.encode()) <= 512


def test_id_of_exactly_512_bytes_is_kept() -> None:
    assert document_id({"pk": _s("x" * 512)}, "pk", None) == "x" * 512
    assert document_id({"pk": _s("x" * 513)}, "pk", None).startswith("sha256:")


def test_a_key_that_looks_like_a_digest_cannot_take_a_hashed_id() -> None:
    long_key = "z" * 600
    hashed = document_id({"pk": _s(long_key)}, "pk", None)
    assert document_id({"pk": _s(hashed)}, "pk", None) != hashed


@pytest.mark.parametrize(("keys", "missing"), [({"sk": _s("1")}, "pk"), ({"pk": _s("1")}, "sk")])
def test_missing_key_attribute_is_named(keys: dict[str, dict[str, Any]], missing: str) -> None:
    with pytest.raises(KeyError, match=f"'{missing}'"):
        document_id(keys, "pk", "sk")


@pytest.mark.parametrize("text", ["abc", "NaN", "Infinity"])
def test_invalid_number_key_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="invalid DynamoDB number"):
        document_id({"pk": _n(text)}, "pk", None)


def test_key_of_another_type_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'pk'"):
        document_id({"pk": {"BOOL": True}}, "pk", None)


_tricky_text = st.one_of(st.text(alphabet="ab|\\", max_size=8), st.text(), st.text(min_size=200))


@given(st.lists(st.tuples(_tricky_text, _tricky_text), unique=True, min_size=2, max_size=20))
def test_hash_and_range_ids_are_injective(pairs: list[tuple[str, str]]) -> None:
    ids = {document_id({"pk": _s(h), "sk": _s(r)}, "pk", "sk") for h, r in pairs}
    assert len(ids) == len(pairs)
    assert all(len(i.encode()) <= 512 for i in ids)


@given(st.lists(_tricky_text, unique=True, min_size=2, max_size=20))
def test_hash_only_ids_are_injective(hashes: list[str]) -> None:
    ids = {document_id({"pk": _s(h)}, "pk", None) for h in hashes}
    assert len(ids) == len(hashes)
