"""`${VAR}` expansion on its own: parse_config shows only its outcome, not which parts of the data
are expanded, nor what an unresolved reference leaves in place while it is reported."""

from __future__ import annotations

from typing import Any

from streamsync.config.environment import _expand
from streamsync.config.schema import _Loc


def test_only_string_values_are_expanded_not_keys_or_other_scalars() -> None:
    data = {"${KEY}": "${VALUE}", "n": 5, "on": True, "off": None, "items": ["a$b", "${VALUE}"]}
    unresolved: list[tuple[_Loc, str]] = []

    expanded: Any = _expand(data, (), {"KEY": "k", "VALUE": "v"}, unresolved)

    assert expanded == {"${KEY}": "v", "n": 5, "on": True, "off": None, "items": ["a$b", "v"]}
    assert unresolved == []


def test_unresolved_references_are_kept_as_written_and_reported_where_they_are() -> None:
    data = {"tables": [{"index": "${PREFIX}-${SUFFIX}", "table": "${:-x}"}]}
    unresolved: list[tuple[_Loc, str]] = []

    expanded: Any = _expand(data, (), {"SUFFIX": "v1"}, unresolved)

    assert expanded == {"tables": [{"index": "${PREFIX}-v1", "table": "${:-x}"}]}
    assert unresolved == [
        (
            ("tables", 0, "index"),
            "environment variable PREFIX is not set (set it, or write ${PREFIX:-default})",
        ),
        (
            ("tables", 0, "table"),
            "invalid variable reference: write ${NAME} or ${NAME:-default}, and $$ for a $",
        ),
    ]
