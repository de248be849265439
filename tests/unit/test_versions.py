"""VersionClock: per-shard document versions that only go up and replay identically."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from streamsync.transform.versions import (
    COUNTER_BITS,
    EPOCH,
    VersionClock,
    scan_version,
    version_floor,
)

YEAR_2100 = datetime(2100, 1, 1, tzinfo=UTC).timestamp()
NOW_ISH = datetime(2025, 6, 1, tzinfo=UTC).timestamp()

# Creation times as DynamoDB gives them: whole or fractional seconds, out of order at times.
_times = st.floats(min_value=0, max_value=YEAR_2100, allow_nan=False, allow_infinity=False)


def _versions(clock: VersionClock, times: list[float]) -> list[int]:
    return [clock.next(t) for t in times]


def test_floor_is_the_whole_second_since_the_epoch_shifted() -> None:
    assert version_floor(EPOCH) == 0
    assert version_floor(EPOCH - 100) == 0, "times before the epoch do not go negative"
    assert version_floor(EPOCH + 1) == 1 << COUNTER_BITS
    assert version_floor(EPOCH + 1.999) == 1 << COUNTER_BITS
    assert version_floor(NOW_ISH) == (int(NOW_ISH) - EPOCH) << COUNTER_BITS


def test_first_version_is_the_floor_of_its_second() -> None:
    assert VersionClock().next(NOW_ISH) == version_floor(NOW_ISH)


def test_records_in_the_same_second_count_up() -> None:
    clock = VersionClock()
    base = version_floor(NOW_ISH)
    versions = _versions(clock, [NOW_ISH + 0.1 * i for i in range(10)])
    assert versions == [base + i for i in range(10)]
    assert clock.last == base + 9


def test_a_new_second_jumps_to_its_floor() -> None:
    clock = VersionClock()
    clock.next(NOW_ISH)
    clock.next(NOW_ISH)
    assert clock.next(NOW_ISH + 1) == version_floor(NOW_ISH + 1)


def test_time_going_backwards_still_counts_up() -> None:
    clock = VersionClock()
    late = clock.next(NOW_ISH + 60)
    assert clock.next(NOW_ISH) == late + 1
    assert clock.next(0) == late + 2


def test_many_records_in_one_second_get_consecutive_versions() -> None:
    clock = VersionClock()
    versions = _versions(clock, [NOW_ISH] * 10_000)
    assert versions == list(range(version_floor(NOW_ISH), version_floor(NOW_ISH) + 10_000))


def test_a_used_up_counter_runs_into_the_next_second_and_stays_ordered() -> None:
    base = version_floor(NOW_ISH)
    clock = VersionClock(base + (1 << COUNTER_BITS) - 1)  # this second's counter is used up
    overflow = clock.next(NOW_ISH)
    assert overflow == version_floor(NOW_ISH + 1)
    assert clock.next(NOW_ISH + 1) == overflow + 1


@settings(max_examples=300)
@given(st.lists(_times, min_size=1, max_size=200))
def test_versions_strictly_increase(times: list[float]) -> None:
    clock = VersionClock()
    versions = _versions(clock, times)
    assert all(a < b for a, b in pairwise(versions))
    for t, v in zip(times, versions, strict=True):
        assert v >= version_floor(t)  # never below the record's own second
    assert clock.last == versions[-1]


@settings(max_examples=200)
@given(st.lists(_times, min_size=1, max_size=100), st.data())
def test_replay_from_a_checkpoint_assigns_the_same_versions(
    times: list[float], data: st.DataObject
) -> None:
    start = data.draw(st.integers(min_value=0, max_value=2**40))
    original = _versions(VersionClock(start), times)
    # A checkpoint stores the record and the clock after it; a new owner resumes after it.
    cut = data.draw(st.integers(min_value=0, max_value=len(times)))
    replay = VersionClock(original[cut - 1] if cut else start)
    assert _versions(replay, times[cut:]) == original[cut:]


def test_replay_from_a_checkpoint_example() -> None:
    times = [NOW_ISH, NOW_ISH, NOW_ISH - 5, NOW_ISH + 2, NOW_ISH + 2, NOW_ISH + 1]
    original = _versions(VersionClock(), times)
    for cut in range(1, len(times)):
        replay = VersionClock(original[cut - 1])
        assert _versions(replay, times[cut:]) == original[cut:]


@settings(max_examples=200)
@given(st.lists(_times, min_size=1, max_size=50), st.lists(_times, min_size=1, max_size=50))
def test_child_clock_continues_above_its_parent(parent: list[float], child: list[float]) -> None:
    parent_clock = VersionClock()
    parent_versions = _versions(parent_clock, parent)
    child_versions = _versions(VersionClock(parent_clock.last), child)
    assert min(child_versions) > max(parent_versions)


def test_child_clock_continues_above_a_parent_that_ran_ahead() -> None:
    parent = VersionClock()
    for _ in range(5):
        parent.next(NOW_ISH + 100)  # the parent's clock is ahead of the child's records
    child = VersionClock(parent.last)
    assert child.next(NOW_ISH) == parent.last + 1


@settings(max_examples=300)
@given(st.lists(_times, min_size=1, max_size=200))
def test_versions_stay_below_2_63(times: list[float]) -> None:
    clock = VersionClock()
    assert max(_versions(clock, times)) < 2**63


def test_versions_stay_below_2_53_today() -> None:
    late_2037 = datetime(2037, 12, 31, tzinfo=UTC).timestamp()
    clock = VersionClock()
    assert max(clock.next(late_2037) for _ in range(1000)) < 2**53
    # The last second 32 bits of seconds hold (in 2156), with its counter used up.
    assert version_floor(EPOCH + 2**32 - 1) + (1 << COUNTER_BITS) - 1 < 2**53


def test_versions_stay_below_2_53_until_2100() -> None:
    clock = VersionClock()
    assert clock.next(YEAR_2100) < 2**53


@given(st.floats(min_value=1.6e9, max_value=4e9), st.floats(min_value=-600, max_value=299))
def test_a_scanned_image_ranks_below_changes_after_the_scan_began(now: float, skew: float) -> None:
    """A scan started at `now` by a host clock `skew` seconds ahead of DynamoDB's (behind, when
    negative) versions its images below every change DynamoDB timestamps `now` or later."""
    assert scan_version(now + skew) < version_floor(now)
