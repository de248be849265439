from __future__ import annotations

import base64
import math
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamsync.transform.decode import decode_image, decode_number, decode_value

# --- scalars -------------------------------------------------------------------------------


def test_string() -> None:
    assert decode_value({"S": "héllo"}) == "héllo"
    assert decode_value({"S": ""}) == ""


@pytest.mark.parametrize("flag", [True, False])
def test_bool(flag: bool) -> None:
    assert decode_value({"BOOL": flag}) is flag


def test_null() -> None:
    assert decode_value({"NULL": True}) is None


def test_binary_stays_base64_text() -> None:
    assert decode_value({"B": "AAEC/w=="}) == "AAEC/w=="


def test_binary_bytes_are_base64_encoded() -> None:
    assert decode_value({"B": b"\x00\x01\x02\xff"}) == "AAEC/w=="


# --- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("-0", 0),
        ("12", 12),
        ("-7", -7),
        (str(2**53), 2**53),
        (str(-(2**53)), -(2**53)),
        ("0.1", 0.1),
        ("12.5", 12.5),
        ("-0.000001", -0.000001),
        ("1E+3", 1000.0),
        ("1.5E-7", 1.5e-7),
        ("0E-400", 0.0),
    ],
)
def test_exact_numbers_become_json_numbers(text: str, expected: float) -> None:
    result = decode_number(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        str(2**53 + 1),
        str(-(2**53) - 1),
        "123456789012345678901234567890",
        "3.14159265358979323846264338327950288",
        "0.12345678901234567890123456789012345678",
        "1E+400",
        "-1E+400",
        "1E-400",
        "9.9999999999999999999E+125",
    ],
)
def test_inexact_numbers_stay_strings(text: str) -> None:
    assert decode_number(text) == text


def test_number_attribute_and_number_set() -> None:
    assert decode_value({"N": "42"}) == 42
    assert decode_value({"NS": ["1", "0.5", str(2**60)]}) == [1, 0.5, str(2**60)]


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "NaN", "inf"])
def test_invalid_number_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract, not the wording
        decode_number(text)


@given(st.integers())
def test_integers_are_exact_or_kept_as_text(i: int) -> None:
    expected = i if abs(i) <= 2**53 else str(i)
    result = decode_number(str(i))
    assert result == expected
    assert type(result) is type(expected)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip(f: float) -> None:
    assert decode_number(repr(f)) == f


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_decimal_values_are_never_rounded(d: Decimal) -> None:
    result = decode_number(str(d))
    if isinstance(result, str):
        assert result == str(d)
    else:
        assert Decimal(repr(result)) == d


# --- sets and containers -------------------------------------------------------------------


def test_sets_keep_their_order() -> None:
    assert decode_value({"SS": ["b", "a", "c"]}) == ["b", "a", "c"]
    assert decode_value({"BS": ["AQ==", b"\x02"]}) == ["AQ==", "Ag=="]


def test_nested_lists_and_maps() -> None:
    value = {
        "L": [
            {"S": "x"},
            {"N": "1"},
            {"M": {"inner": {"L": [{"BOOL": False}, {"NULL": True}]}, "n": {"N": "2.5"}}},
            {"L": []},
            {"M": {}},
        ]
    }
    assert decode_value(value) == ["x", 1, {"inner": [False, None], "n": 2.5}, [], {}]


def test_whole_image() -> None:
    image: dict[str, dict[str, Any]] = {
        "pk": {"S": "order-1"},
        "total": {"N": "129.99"},
        "paid": {"BOOL": True},
        "note": {"NULL": True},
        "tags": {"SS": ["gift"]},
        "blob": {"B": "AQI="},
        "address": {"M": {"city": {"S": "Springfield"}}},
    }
    assert decode_image(image) == {
        "pk": "order-1",
        "total": 129.99,
        "paid": True,
        "note": None,
        "tags": ["gift"],
        "blob": "AQI=",
        "address": {"city": "Springfield"},
    }


def test_unknown_tag_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'X'"):
        decode_value({"X": "1"})
    with pytest.raises(ValueError, match="'X'"):
        decode_image({"a": {"M": {"b": {"X": "1"}}}})


def test_empty_attribute_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown DynamoDB type tag"):
        decode_value({})


@pytest.mark.parametrize("container", ["L", "M"])
def test_32_levels_of_nesting(container: str) -> None:
    value: dict[str, Any] = {"S": "leaf"}
    for _ in range(32):
        value = {"L": [value]} if container == "L" else {"M": {"k": value}}
    decoded = decode_value(value)
    for _ in range(32):
        decoded = decoded[0] if container == "L" else decoded["k"]
    assert decoded == "leaf"


# --- generated images serialise ------------------------------------------------------------

_numbers = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
_binaries = st.one_of(st.binary(), st.binary().map(lambda b: base64.b64encode(b).decode()))
_scalars = st.one_of(
    st.builds(lambda s: {"S": s}, st.text()),
    st.builds(lambda n: {"N": n}, _numbers),
    st.builds(lambda b: {"B": b}, _binaries),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda s: {"SS": s}, st.lists(st.text(), min_size=1, unique=True)),
    st.builds(lambda s: {"NS": s}, st.lists(_numbers, min_size=1)),
    st.builds(lambda s: {"BS": s}, st.lists(_binaries, min_size=1)),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.builds(lambda items: {"L": items}, st.lists(children, max_size=4)),
        st.builds(lambda m: {"M": m}, st.dictionaries(st.text(), children, max_size=4)),
    ),
    max_leaves=30,
)


@given(st.dictionaries(st.text(), _values, max_size=8))
def test_decoded_images_always_serialise(image: dict[str, dict[str, Any]]) -> None:
    decoded = decode_image(image)
    orjson.loads(orjson.dumps(decoded))


def test_no_float_is_ever_infinite_or_nan() -> None:
    for text in ("1E+308", "1.7976931348623157E+308", "1E+309", "2E-324", "5E-324"):
        result = decode_number(text)
        assert isinstance(result, str) or math.isfinite(result)
