"""The per-shard core without I/O: duplicates, versions, LATEST starts, floors and the prefix."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamsync.leases.model import Position
from streamsync.source.shard_state import ShardState
from streamsync.transform.records import (
    MalformedRecord,
    StreamRecord,
    parse_record,
    removed_record,
    scanned_record,
)
from streamsync.transform.versions import COUNTER_BITS, EPOCH, version_floor

T0 = EPOCH + 1_000_000.0


def raw(seq: int, created: float = T0, event: str = "MODIFY", **extra: Any) -> dict[str, Any]:
    change = {
        "SequenceNumber": str(seq),
        "ApproximateCreationDateTime": created,
        "Keys": {"pk": {"S": f"k{seq}"}},
        "NewImage": {"pk": {"S": f"k{seq}"}},
    }
    return {"eventName": event, "dynamodb": change, **extra}


def record(seq: int, created: float = T0) -> StreamRecord:
    return parse_record(raw(seq, created))


def test_a_page_record_is_parsed_once_into_typed_fields() -> None:
    parsed = parse_record(raw(10**39, T0, "REMOVE"))
    assert parsed.sequence_number == 10**39  # 40 digits: an int, not a float
    assert parsed.created_at == T0
    assert parsed.removed
    assert not parsed.ttl_expiry
    assert parsed.keys == {"pk": {"S": f"k{10**39}"}}
    assert parsed.old_image is None
    assert parsed.raw["dynamodb"]["SequenceNumber"] == str(10**39), "kept as it came"


def test_a_removal_by_time_to_live_is_told_apart() -> None:
    identity = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    assert parse_record(raw(1, event="REMOVE", userIdentity=identity)).ttl_expiry
    assert not parse_record(raw(1, event="MODIFY", userIdentity=identity)).ttl_expiry


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"eventName": "INSERT"},
        {"eventName": "INSERT", "dynamodb": {"Keys": {}}},
        {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "x", "Keys": {}}},
        {"dynamodb": {"SequenceNumber": "1", "Keys": {}}},
        {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "1"}},
        {"eventName": "INSERT", "dynamodb": None},
    ],
)
def test_a_record_with_nothing_to_go_by_is_malformed(broken: dict[str, Any]) -> None:
    with pytest.raises(MalformedRecord):
        parse_record(broken)


def test_scanned_and_removed_records_look_like_stream_records() -> None:
    scanned = scanned_record({"pk": {"B": b"\x00"}, "n": {"N": "1"}}, {"pk": {"B": b"\x00"}}, T0)
    assert scanned.event_name == "INSERT"
    assert scanned.sequence_number == 0
    assert scanned.keys == {"pk": {"B": "AA=="}}, "binary as the stream sends it"
    assert parse_record(scanned.raw) == scanned
    gone = removed_record({"pk": {"S": "a"}}, T0)
    assert gone.removed
    assert gone.new_image is None
    assert parse_record(gone.raw) == gone


def test_duplicates_are_dropped_and_versions_follow_the_clock() -> None:
    state = ShardState(start_version=0)
    first, second = record(5), record(7)
    assert state.read(first)
    assert state.version_for(first) == version_floor(T0)
    assert not state.read(record(5)), "a duplicate delivery"
    assert not state.read(record(4)), "older than what was read"
    assert state.read(second)
    assert state.version_for(second) == version_floor(T0) + 1, "same second: one more"
    assert state.last_read == 7


def test_the_clock_continues_above_the_start_version() -> None:
    start = version_floor(T0 + 60)
    state = ShardState(start_version=start)
    older = record(1, T0)
    assert state.read(older)
    assert state.version_for(older) == start + 1, "never below the parent's final version"


def test_records_before_a_latest_start_are_acknowledged_at_once() -> None:
    state = ShardState(start_version=0, start_after=T0 + 0.7)
    early, same_second, late = record(1, T0 - 1), record(2, T0), record(3, T0 + 5)
    assert state.read(early)
    assert state.version_for(early) is None
    assert state.acknowledged == Position(1, 0), "passed by checkpoints"
    assert state.read(same_second)
    assert state.version_for(same_second) is not None, "whole seconds: the start's second stays"
    assert state.read(late)
    assert state.version_for(late) is not None


def test_a_floor_after_a_loss_numbers_on_from_it_never_lower() -> None:
    state = ShardState(start_version=0)
    floor = version_floor(T0 + 3600)
    state.hold_floor(floor)
    assert state.version == floor
    state.hold_floor(floor - 5)
    assert state.version == floor, "a floor never lowers the clock"
    later = record(9, T0)
    state.read(later)
    assert state.version_for(later) == floor + 1


def test_only_the_acknowledged_prefix_may_be_checkpointed() -> None:
    state = ShardState(start_version=0)
    tickets = []
    for seq in (1, 2, 3):
        rec = record(seq)
        state.read(rec)
        version = state.version_for(rec)
        assert version is not None
        tickets.append((state.sent(rec, version, actions=2), version))
    moves: list[Position | None] = []
    state.on_acknowledged(lambda: moves.append(state.acknowledged))
    tickets[1][0].ack()
    tickets[1][0].ack()
    assert state.acknowledged is None
    assert state.outstanding == 3
    tickets[0][0].ack()
    assert state.acknowledged is None, "one of record 1's two actions is still out"
    tickets[0][0].ack()
    assert state.acknowledged == Position(2, tickets[1][1]), "1 and 2 done, 3 not"
    assert state.outstanding == 1
    assert moves[-1] == Position(2, tickets[1][1])


def test_a_record_that_gave_no_action_is_acknowledged_when_sent() -> None:
    state = ShardState(start_version=0)
    rec = record(1)
    state.read(rec)
    version = state.version_for(rec)
    assert version is not None
    state.sent(rec, version, actions=0)
    assert state.acknowledged == Position(1, version)


def test_the_iterator_age_grows_until_a_page_comes_back_empty() -> None:
    state = ShardState(start_version=0)
    assert state.iterator_age(T0 + 100) == 0.0
    state.page_read(record(2, T0 + 10), asked_at=1.0)
    assert state.iterator_age(T0 + 40) == 30.0, "measured from the last record read"
    assert state.iterator_age(T0 + 5) == 0.0, "never negative"
    state.page_read(None, asked_at=2.0)
    assert state.iterator_age(T0 + 100) == 0.0, "caught up"


def test_caught_up_once_an_empty_poll_follows_records_all_acknowledged() -> None:
    """What reindex waits on: the time an empty poll was asked for counts only once every
    record read before it is in the index, and a later empty poll moves it on."""
    state = ShardState(start_version=0)
    assert state.caught_up_at is None, "never polled"
    state.page_read(None, asked_at=5.0)
    assert state.caught_up_at == 5.0, "an empty shard: nothing to wait for"
    tickets = []
    for seq in (1, 2):
        rec = record(seq)
        state.read(rec)
        version = state.version_for(rec)
        assert version is not None
        tickets.append(state.sent(rec, version, actions=1))
    state.page_read(record(2), asked_at=6.0)
    assert state.caught_up_at == 5.0, "records read since: still the earlier empty poll"
    state.page_read(None, asked_at=7.0)
    assert state.caught_up_at is None, "records 1 and 2 not acknowledged yet"
    tickets[1].ack()
    assert state.caught_up_at is None, "record 1 still outstanding"
    tickets[0].ack()
    assert state.caught_up_at == 7.0


@given(st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=60))
def test_redelivered_pages_send_each_record_once_with_rising_versions(seqs: list[int]) -> None:
    state = ShardState(start_version=0)
    sent: list[tuple[int, int]] = []
    for seq in seqs:
        rec = record(seq, T0 + seq // 10)
        if state.read(rec):
            version = state.version_for(rec)
            assert version is not None
            sent.append((seq, version))
    numbers = [seq for seq, _ in sent]
    assert numbers == sorted(set(numbers)), "in order, each once"
    versions = [v for _, v in sent]
    assert versions == sorted(set(versions)), "strictly rising"
    assert all(v >> COUNTER_BITS >= (T0 - EPOCH) for v in versions)
