"""AckTracker: only the contiguous, fully acknowledged prefix of a shard may be checkpointed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsync.leases.model import Position
from streamsync.source.acks import AckTracker, PendingRecord


def _seq(i: int) -> int:
    # Sequence numbers are increasing but not contiguous, like DynamoDB's.
    return 1_000 + 7 * i


def test_fresh_tracker_has_nothing_acknowledged() -> None:
    tracker = AckTracker()
    assert tracker.acknowledged is None
    assert tracker.outstanding == 0


def test_in_order_acks_advance_one_by_one() -> None:
    tracker = AckTracker()
    records = [tracker.register(_seq(i), 100 + i, 1) for i in range(3)]
    assert tracker.outstanding == 3
    for i, record in enumerate(records):
        record.ack()
        assert tracker.acknowledged == Position(_seq(i), 100 + i)
        assert tracker.outstanding == 2 - i


def test_out_of_order_acks_advance_only_when_contiguous() -> None:
    tracker = AckTracker()
    a, b, c, d = (tracker.register(_seq(i), 10 + i, 1) for i in range(4))
    c.ack()
    b.ack()
    assert tracker.acknowledged is None  # the head (a) is still in flight
    assert tracker.outstanding == 4
    a.ack()
    # a, b and c are all acknowledged now: the prefix jumps to c, the version travels with it.
    assert tracker.acknowledged == Position(_seq(2), 12)
    assert tracker.outstanding == 1
    d.ack()
    assert tracker.acknowledged == Position(_seq(3), 13)
    assert tracker.outstanding == 0


def test_gap_in_the_middle_holds_back_later_records() -> None:
    tracker = AckTracker()
    records = [tracker.register(_seq(i), i + 1, 1) for i in range(5)]
    records[0].ack()
    records[1].ack()
    records[3].ack()
    records[4].ack()
    assert tracker.acknowledged == Position(_seq(1), 2)
    records[2].ack()
    assert tracker.acknowledged == Position(_seq(4), 5)


def test_skipped_record_at_the_head_advances_immediately() -> None:
    tracker = AckTracker()
    tracker.register(_seq(0), 5, 0)
    assert tracker.acknowledged == Position(_seq(0), 5)
    assert tracker.outstanding == 0


def test_skipped_records_behind_a_pending_one_do_not_block() -> None:
    tracker = AckTracker()
    head = tracker.register(_seq(0), 1, 1)
    tracker.register(_seq(1), 2, 0)
    tracker.register(_seq(2), 3, 0)
    assert tracker.acknowledged is None  # skipped, but behind an unacknowledged record
    head.ack()
    assert tracker.acknowledged == Position(_seq(2), 3)
    assert tracker.outstanding == 0


def test_skipped_record_between_pending_ones() -> None:
    tracker = AckTracker()
    first = tracker.register(_seq(0), 1, 1)
    tracker.register(_seq(1), 2, 0)
    third = tracker.register(_seq(2), 3, 1)
    first.ack()
    assert tracker.acknowledged == Position(_seq(1), 2)  # the skipped one is passed at once
    third.ack()
    assert tracker.acknowledged == Position(_seq(2), 3)


def test_record_with_several_actions_needs_every_ack() -> None:
    tracker = AckTracker()
    record = tracker.register(_seq(0), 9, 3)
    record.ack()
    record.ack()
    assert tracker.acknowledged is None
    assert record.remaining == 1
    record.ack()
    assert tracker.acknowledged == Position(_seq(0), 9)


def test_several_actions_later_record_finishing_first() -> None:
    tracker = AckTracker()
    big = tracker.register(_seq(0), 1, 2)
    small = tracker.register(_seq(1), 2, 1)
    small.ack()
    big.ack()
    assert tracker.acknowledged is None
    big.ack()
    assert tracker.acknowledged == Position(_seq(1), 2)


def test_acking_more_than_sent_raises() -> None:
    tracker = AckTracker()
    record = tracker.register(_seq(0), 1, 2)
    record.ack()
    record.ack()
    with pytest.raises(RuntimeError, match="more often than sent"):
        record.ack()
    assert tracker.acknowledged == Position(_seq(0), 1)


def test_acking_a_skipped_record_raises() -> None:
    tracker = AckTracker()
    record = tracker.register(_seq(0), 1, 0)
    with pytest.raises(RuntimeError, match="more often than sent"):
        record.ack()


def test_over_ack_of_a_record_behind_the_head_raises_and_changes_nothing() -> None:
    tracker = AckTracker()
    head = tracker.register(_seq(0), 1, 1)
    later = tracker.register(_seq(1), 2, 1)
    later.ack()
    with pytest.raises(RuntimeError):
        later.ack()
    assert tracker.acknowledged is None
    head.ack()
    assert tracker.acknowledged == Position(_seq(1), 2)


def test_on_advance_fires_when_the_prefix_moves() -> None:
    tracker = AckTracker()
    seen: list[Position | None] = []
    tracker.on_advance = lambda: seen.append(tracker.acknowledged)
    first = tracker.register(_seq(0), 1, 1)
    second = tracker.register(_seq(1), 2, 2)
    first.ack()
    assert seen[-1] == Position(_seq(0), 1)
    second.ack()
    second.ack()
    assert seen[-1] == Position(_seq(1), 2)
    tracker.register(_seq(2), 3, 0)  # skipped at the head: advances straight away
    assert seen[-1] == Position(_seq(2), 3)
    # Every position the prefix reached was reported to the callback.
    assert {Position(_seq(0), 1), Position(_seq(1), 2), Position(_seq(2), 3)} <= set(seen)


def test_on_advance_is_optional() -> None:
    tracker = AckTracker()
    assert tracker.on_advance is None
    tracker.register(_seq(0), 1, 1).ack()  # must not fail without a callback
    assert tracker.acknowledged == Position(_seq(0), 1)


def _expected_prefix(
    actions: list[int], acks_done: list[int], registered: int
) -> tuple[int, int] | None:
    """The model: the last registered record such that it and all before it are fully acked."""
    last = None
    for i in range(registered):
        if acks_done[i] < actions[i]:
            break
        last = (_seq(i), 10 * i + 1)
    return last


@st.composite
def _schedules(draw: st.DrawFn) -> tuple[list[int], list[tuple[str, int]]]:
    """Actions per record, and an interleaving of registrations (in order) and acks."""
    actions = draw(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=25))
    # Each ack token may happen any time after its record was registered.
    tokens = [i for i, n in enumerate(actions) for _ in range(n)]
    order = draw(st.permutations(tokens))
    # Interleave: register record i at some point before its first ack.
    ops: list[tuple[str, int]] = []
    registered = 0
    for token in order:
        while registered <= token:
            ops.append(("register", registered))
            registered += 1
        if draw(st.booleans()) and registered < len(actions):
            ops.append(("register", registered))  # sometimes register ahead of need
            registered += 1
        ops.append(("ack", token))
    while registered < len(actions):
        ops.append(("register", registered))
        registered += 1
    return actions, ops


@settings(max_examples=300, deadline=None)
@given(_schedules())
def test_acknowledged_is_always_the_fully_acked_prefix(
    schedule: tuple[list[int], list[tuple[str, int]]],
) -> None:
    actions, ops = schedule
    tracker = AckTracker()
    calls: list[int] = []
    tracker.on_advance = lambda: calls.append(1)
    records: dict[int, PendingRecord] = {}
    acks_done = [0] * len(actions)
    registered = 0
    for op, i in ops:
        before = tracker.acknowledged
        calls.clear()
        if op == "register":
            records[i] = tracker.register(_seq(i), 10 * i + 1, actions[i])
            registered += 1
        else:
            records[i].ack()
            acks_done[i] += 1
        expected = _expected_prefix(actions, acks_done, registered)
        got = tracker.acknowledged
        assert (None if got is None else (got.sequence_number, got.version)) == expected
        # Outstanding: registered records not yet in the prefix.
        in_prefix = 0 if expected is None else (expected[0] - 1_000) // 7 + 1
        assert tracker.outstanding == registered - in_prefix
        if got != before:
            assert calls, "the prefix moved without on_advance firing"
    # Every ack was delivered: the whole shard is acknowledged.
    last = len(actions) - 1
    assert tracker.acknowledged == Position(_seq(last), 10 * last + 1)
    assert tracker.outstanding == 0
