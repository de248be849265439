"""Which dead letters `dlq list`/`delete` choose and which are superseded, without a cluster:
durations, ages, ids given by their beginnings, the filters, and the versions that make a letter
stale. The same choices run against the real node in tests/integration/test_dead_letters.py."""

from __future__ import annotations

import pytest

from streamsync.cli import main
from streamsync.config import TableConfig
from streamsync.errors import StreamsyncError
from streamsync.sink.letterfilter import (
    LetterFilter,
    age_text,
    parse_duration,
    resolve_names,
)
from streamsync.sink.superseded import Held, documents_of, superseded_by
from streamsync.transform.actions import ChangeRecord, RecordTransformer
from tests.unit.test_deadletter import letter, scanned

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), (" 1.5H ", 5400)],
)
def test_durations_are_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["7", "d", "7x", "-1d", "7 days", ""])
def test_anything_else_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a duration: a number and a unit .* as in 90s"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3660, "1h 1m"),
        (86400 * 3 + 7200, "3d 2h"),
        (-5, "0s"),
    ],
)
def test_ages_read_to_the_precision_a_person_wants(seconds: float | None, text: str) -> None:
    assert age_text(seconds) == text


KNOWN = ["abc123", "abc456", "abd789", "abc"]


def test_an_id_is_named_whole_or_by_a_beginning_no_other_id_shares() -> None:
    assert resolve_names(["abd", "abc123", "abc"], KNOWN) == {"abd789", "abc123", "abc"}


def test_an_unknown_or_shared_beginning_names_nothing_and_says_why() -> None:
    with pytest.raises(StreamsyncError) as raised:
        resolve_names(["ab", "zzz", "abc1"], KNOWN)
    assert str(raised.value).splitlines() == [
        "ab begins the ids of 4 dead letters; give more of the id",
        "no dead letter zzz; `streamsync dlq list` shows their ids",
    ]


def test_filters_all_hold_for_a_letter_to_match() -> None:
    old = letter(scanned("k"), time=NOW - 3 * 86400, reason="document_parsing_exception")
    new = letter(scanned("k"), time=NOW - 60, table="users")
    timeless = letter(scanned("k"), time=0.0)
    chosen = LetterFilter(tables=frozenset({"orders"}), older_than=86400, error="PARSING")
    assert chosen.matches("a", old, NOW, superseded=False)
    assert not chosen.matches("a", new, NOW, superseded=False)  # neither table nor age
    assert not LetterFilter(older_than=86400).matches("a", timeless, NOW, superseded=False)
    assert LetterFilter(error="boom").matches("a", new, NOW, superseded=False), "error text"
    assert not LetterFilter(names=frozenset({"b"})).matches("a", old, NOW, superseded=False)
    assert not LetterFilter(superseded=True).matches("a", old, NOW, superseded=False)
    assert LetterFilter(superseded=True).matches("a", old, NOW, superseded=True)
    assert LetterFilter().matches("a", timeless, NOW, superseded=False), "no filter: all"


@pytest.mark.parametrize(
    "chosen",
    [
        LetterFilter(names=frozenset({"a"})),
        LetterFilter(tables=frozenset({"t"})),
        LetterFilter(error=""),
        LetterFilter(older_than=0),
        LetterFilter(superseded=True),
    ],
)
def test_any_filter_given_narrows(chosen: LetterFilter) -> None:
    assert chosen.narrows
    assert not LetterFilter().narrows


def test_a_delete_without_ids_filters_or_all_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["dlq", "delete"], ["dlq", "delete", "abc", "--all"]):
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--config", "does-not-exist.yaml"])
        assert exited.value.code == 2
        assert "or give --all (not both)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dlq", "list", "--older-than", "7x", "--config", "does-not-exist.yaml"])
    assert "argument --older-than: '7x' is not a duration" in capsys.readouterr().err


DOC = ("orders", "k")


@pytest.mark.parametrize(
    ("held", "superseded"),
    [
        ({}, None),
        ({DOC: Held(6, deleted=False)}, None),
        ({DOC: Held(7, deleted=False)}, "orders/k indexed at version 7 (the letter's: 7)"),
        ({DOC: Held(9, deleted=True)}, "orders/k deleted at version 9 (the letter's: 7)"),
    ],
)
def test_a_letter_is_superseded_by_its_version_or_a_newer_one(
    held: dict[tuple[str, str], Held], superseded: str | None
) -> None:
    assert superseded_by(7, frozenset({DOC}), held) == superseded


def test_every_document_of_a_letter_must_be_newer_and_none_known_is_not_superseded() -> None:
    other = ("orders-b", "k")
    both = frozenset({DOC, other})
    assert superseded_by(7, both, {DOC: Held(8, deleted=False)}) is None
    assert superseded_by(7, frozenset(), {DOC: Held(8, deleted=False)}) is None


def _hook(record: ChangeRecord) -> None:
    return None


def test_which_documents_a_letter_is_about() -> None:
    table = TableConfig(table="orders", index="orders-index")
    default = RecordTransformer(table, "pk", None, None)
    hooked = RecordTransformer(table, "pk", None, _hook)
    action = letter(scanned("k"), index="elsewhere", doc_id="d", op="index")
    record = letter(scanned("k"))
    assert documents_of(action, hooked) == {("elsewhere", "d")}, "the action says"
    assert documents_of(record, default) == {("orders-index", "k")}, "the default transform's"
    assert documents_of(record, hooked) == frozenset(), "a hook's: cannot tell"
    assert documents_of(record, None) == frozenset(), "a table not configured"
    assert documents_of(letter({"dynamodb": {}}), default) == frozenset(), "no keys"
    ranged = RecordTransformer(table, "pk", "sk", None)
    assert documents_of(record, ranged) == frozenset(), "keys of another schema"
