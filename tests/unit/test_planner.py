"""The taker's pure logic: expiry as seen by one worker's clock, and lease-count balancing."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsync.leases.model import SHARD_END, TRIM_HORIZON, Lease, WorkerBeat, worker_key
from streamsync.leases.planner import (
    ExpiryClock,
    Plan,
    lease_expiry,
    live_workers,
    older_worker_reads,
    plan,
)

ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2024-01-01T00:00:00.000"
FAILOVER = 10.0


def _released(n: int) -> Plan:
    """A plan that gives up `n` leases of the one stream `ARN`, and does nothing else."""
    return Plan(release=n, release_from={frozenset({ARN}): n})


def _lease(
    shard: str,
    owner: str | None = None,
    counter: int = 1,
    checkpoint: str = TRIM_HORIZON,
    parents: tuple[str, ...] = (),
) -> Lease:
    return Lease(ARN, shard, "t", parents, owner=owner, counter=counter, checkpoint=checkpoint)


def _owned(prefix: str, owner: str | None, n: int) -> list[Lease]:
    return [_lease(f"{prefix}{i}", owner) for i in range(n)]


def _always(_: Lease) -> bool:
    return True


def _ready_unless(not_ready: Iterable[Lease]) -> Callable[[Lease], bool]:
    keys = {lease.key for lease in not_ready}
    return lambda lease: lease.key not in keys


def _shards(leases: Iterable[Lease]) -> list[str]:
    return [lease.shard_id for lease in leases]


# ExpiryClock


def test_owned_lease_expires_only_after_more_than_the_failover_time() -> None:
    clock = ExpiryClock(FAILOVER)
    lease = _lease("a", "w1", counter=3)
    assert clock.expired([lease], now=100.0) == {}
    assert clock.expired([lease], now=105.0) == {}
    assert clock.expired([lease], now=110.0) == {}  # exactly the failover time: not yet
    assert clock.expired([lease], now=110.5) == {lease.key: 100.0}
    assert clock.expired([lease], now=200.0) == {lease.key: 100.0}  # stays expired, same since


def test_first_sight_starts_the_wait_even_for_a_long_dead_lease() -> None:
    # The worker cannot know how long the counter was still before it looked: it waits a
    # failover time of its own (renewed_at written by other machines is not trusted).
    clock = ExpiryClock(FAILOVER)
    lease = Lease(ARN, "a", "t", owner="w1", counter=3, renewed_at=0.0)
    assert clock.expired([lease], now=10_000.0) == {}
    assert clock.expired([lease], now=10_010.0) == {}
    assert clock.expired([lease], now=10_011.0) == {lease.key: 10_000.0}


def test_a_counter_change_resets_the_wait() -> None:
    clock = ExpiryClock(FAILOVER)
    assert clock.expired([_lease("a", "w1", counter=1)], now=0.0) == {}
    assert clock.expired([_lease("a", "w1", counter=2)], now=8.0) == {}
    assert clock.expired([_lease("a", "w1", counter=2)], now=15.0) == {}  # still since 8
    assert clock.expired([_lease("a", "w1", counter=2)], now=18.5) == {_lease("a").key: 8.0}


def test_an_expired_lease_that_moves_again_is_no_longer_expired() -> None:
    clock = ExpiryClock(FAILOVER)
    clock.expired([_lease("a", "w1", counter=1)], now=0.0)
    assert clock.expired([_lease("a", "w1", counter=1)], now=11.0) != {}
    # A slow renewal (or a take by another worker) bumps the counter: alive again.
    assert clock.expired([_lease("a", "w2", counter=2)], now=12.0) == {}
    assert clock.expired([_lease("a", "w2", counter=2)], now=22.0) == {}
    assert clock.expired([_lease("a", "w2", counter=2)], now=22.5) == {_lease("a").key: 12.0}


def test_renewed_lease_never_expires() -> None:
    clock = ExpiryClock(FAILOVER)
    for step in range(50):
        lease = _lease("a", "w1", counter=step)
        assert clock.expired([lease], now=step * 9.0) == {}


def test_unowned_leases_are_never_expired() -> None:
    clock = ExpiryClock(FAILOVER)
    free = _lease("a", None, counter=4)
    finished_free = _lease("b", None, counter=4, checkpoint=SHARD_END)
    for now in (0.0, 5.0, 50.0, 5_000.0):
        assert clock.expired([free, finished_free], now=now) == {}


def test_a_released_lease_is_not_expired_but_a_retaken_one_can_be() -> None:
    clock = ExpiryClock(FAILOVER)
    clock.expired([_lease("a", "w1", counter=1)], now=0.0)
    assert clock.expired([_lease("a", None, counter=2)], now=20.0) == {}
    assert clock.expired([_lease("a", None, counter=2)], now=40.0) == {}
    # Owned again with the counter unchanged since 40: the wait counts from 40, not from 20.
    assert clock.expired([_lease("a", "w2", counter=3)], now=45.0) == {}
    assert clock.expired([_lease("a", "w2", counter=3)], now=55.5) == {_lease("a").key: 45.0}


def test_leases_that_disappear_are_forgotten() -> None:
    clock = ExpiryClock(FAILOVER)
    lease = _lease("a", "w1", counter=7)
    other = _lease("b", "w1", counter=1)
    clock.expired([lease, other], now=0.0)
    clock.expired([other], now=5.0)  # "a" is gone (deleted, or filtered out of the scan)
    # Back with the same counter long after: first sight again, not expired since 0.
    result = clock.expired([lease, other], now=100.0)
    assert lease.key not in result
    assert result == {other.key: 0.0}
    assert clock.expired([lease], now=110.5) == {lease.key: 100.0}


def test_leases_are_judged_independently() -> None:
    clock = ExpiryClock(FAILOVER)
    clock.expired([_lease("a", "w1", 1), _lease("b", "w2", 1)], now=0.0)
    result = clock.expired([_lease("a", "w1", 1), _lease("b", "w2", 2)], now=11.0)
    assert result == {_lease("a").key: 0.0}


# plan: taking free and expired leases


def test_single_worker_takes_every_ready_free_lease() -> None:
    leases = _owned("s", None, 7)
    decided = plan(leases, "me", {}, _always)
    # Free leases come in random order: every one of them, each once.
    assert sorted(_shards(decided.take)) == sorted(_shards(leases))
    assert decided.steal is None
    assert decided.release == 0
    # The leases are returned as seen, so the conditional take checks the right counter.
    assert {id(lease) for lease in decided.take} == {id(lease) for lease in leases}


def test_nothing_to_do_without_leases() -> None:
    assert plan([], "me", {}, _always) == Plan()


@pytest.mark.parametrize(
    ("others", "mine", "free", "expected_take"),
    [
        ({}, 0, 10, 10),  # alone: target = n
        ({"w1": 3, "w2": 3}, 0, 4, 4),  # target ceil(10/3) = 4
        ({"w1": 3, "w2": 3}, 0, 5, 4),  # target ceil(11/3) = 4: one left for the others
        ({"w1": 2}, 2, 7, 4),  # target ceil(11/2) = 6, minus 2 held
        ({"w1": 2}, 3, 15, 7),  # target ceil(20/2) = 10, minus 3 held
        ({"w1": 5}, 5, 1, 1),  # target ceil(11/2) = 6: exactly one more
        ({"w1": 4}, 5, 1, 0),  # target 5 reached: the free one is left for w1
        ({f"w{i}": 1 for i in range(9)}, 0, 1, 1),  # ceil(10/10) = 1
    ],
)
def test_takes_up_to_target_minus_mine(
    others: dict[str, int], mine: int, free: int, expected_take: int
) -> None:
    leases = [*_owned("m", "me", mine), *_owned("f", None, free)]
    for worker, n in others.items():
        leases += _owned(f"{worker}-", worker, n)
    target = math.ceil(len(leases) / (len(others) + 1))
    assert expected_take == max(0, min(free, target - mine))  # the table above is the rule
    decided = plan(leases, "me", {}, _always)
    assert len(decided.take) == expected_take
    assert all(lease.owner is None for lease in decided.take)
    assert decided.steal is None


def test_workers_whose_leases_all_expired_do_not_count() -> None:
    dead = _owned("d", "dead", 6)
    alive = _owned("a", "w2", 4)
    expired = {lease.key: 50.0 for lease in dead}
    decided = plan([*dead, *alive], "me", expired, _always)
    # Live workers: w2 and me; target ceil(10/2) = 5, all of them from the dead worker.
    assert len(decided.take) == 5
    assert {lease.owner for lease in decided.take} == {"dead"}


def test_expired_before_free_longest_expired_first() -> None:
    free = _owned("f", None, 3)
    e_recent, e_old, e_middle = _lease("e1", "x"), _lease("e2", "y"), _lease("e3", "x")
    expired = {e_recent.key: 30.0, e_old.key: 10.0, e_middle.key: 20.0}
    leases = [free[0], e_recent, free[1], e_old, free[2], e_middle]
    decided = plan(leases, "me", expired, _always)
    # Alone: takes all 6, the expired first (longest-expired first), then the free in any order.
    assert _shards(decided.take)[:3] == ["e2", "e3", "e1"]
    assert sorted(_shards(decided.take)[3:]) == ["f0", "f1", "f2"]
    # Holding 3 with a live worker holding 3: target ceil(12/2) = 6, room for 3: the expired.
    decided = plan([*leases, *_owned("me", "me", 3), *_owned("w", "w", 3)], "me", expired, _always)
    assert _shards(decided.take) == ["e2", "e3", "e1"]
    # Holding 5, target ceil(14/2) = 7: room for the two longest-expired.
    decided = plan([*leases, *_owned("me", "me", 5), *_owned("w", "w", 3)], "me", expired, _always)
    assert _shards(decided.take) == ["e2", "e3"]


def test_own_lease_marked_expired_is_retaken_first() -> None:
    # The coordinator marks its own leases without a reader as expired since 0.0.
    mine = _lease("mine", "me")
    other = _lease("old", "dead")
    free = _lease("free", None)
    expired = {mine.key: 0.0, other.key: 5.0}
    decided = plan([free, other, mine], "me", expired, _always)
    assert _shards(decided.take) == ["mine", "old", "free"]


def test_finished_leases_are_ignored() -> None:
    finished = [
        _lease(f"done{i}", owner, checkpoint=SHARD_END)
        for i, owner in enumerate(["w2"] * 4 + [None] * 2 + ["me"] * 2)
    ]
    open_w2 = _owned("w", "w2", 2)
    free = _owned("f", None, 4)
    decided = plan([*finished, *open_w2, *free], "me", {}, _always)
    # Counted: 6 unfinished leases, 2 workers: target 3. (Counting the 8 finished: 7.)
    assert len(decided.take) == 3
    assert all(not lease.finished for lease in decided.take)


def test_a_worker_holding_only_finished_leases_is_not_a_live_worker() -> None:
    finished = [_lease(f"done{i}", "w2", checkpoint=SHARD_END) for i in range(5)]
    free = _owned("f", None, 4)
    decided = plan([*finished, *free], "me", {}, _always)
    assert sorted(_shards(decided.take)) == _shards(free)  # alone: target 4


def test_leases_that_are_not_ready_are_neither_taken_nor_counted() -> None:
    blocked = [_lease(f"c{i}", None, parents=(f"p{i}",)) for i in range(4)]
    free = _owned("f", None, 4)
    w2 = _owned("w", "w2", 2)
    decided = plan([*blocked, *free, *w2], "me", {}, _ready_unless(blocked))
    # Counted: 4 free + 2 held = 6, 2 workers: target 3. (Counting the blocked ones: 5.)
    taken = _shards(decided.take)
    assert len(taken) == len(set(taken)) == 3
    assert set(taken) <= set(_shards(free))


def test_only_not_ready_leases_free_means_nothing_to_take() -> None:
    blocked = [_lease(f"c{i}", None, parents=("p",)) for i in range(5)]
    assert plan(blocked, "me", {}, _ready_unless(blocked)) == Plan()


def test_expired_lease_that_is_not_ready_is_not_taken() -> None:
    blocked = _lease("c", "dead", parents=("p",))
    ok = _lease("ok", "dead")
    expired = {blocked.key: 1.0, ok.key: 2.0}
    decided = plan([blocked, ok], "me", expired, _ready_unless([blocked]))
    assert _shards(decided.take) == ["ok"]
    assert decided.steal is None


# plan: stealing


def test_no_steal_while_something_is_available() -> None:
    leases = [*_owned("w", "w2", 10), _lease("free", None)]
    decided = plan(leases, "me", {}, _always)
    assert _shards(decided.take) == ["free"]
    assert decided.steal is None


def test_steal_is_one_lease_from_the_overloaded_worker() -> None:
    leases = _owned("w", "w2", 10)
    decided = plan(leases, "me", {}, _always, random.Random(1))
    assert decided.take == []
    assert decided.steal is not None
    assert decided.steal.owner == "w2"
    assert decided.steal in leases


def test_steal_comes_from_the_most_loaded_worker() -> None:
    leases = [*_owned("a", "w2", 6), *_owned("b", "w3", 3), *_owned("c", "w4", 5)]
    owners = set()
    for seed in range(30):
        decided = plan(leases, "me", {}, _always, random.Random(seed))
        assert decided.steal is not None
        owners.add(decided.steal.owner)
    assert owners == {"w2"}


def test_steal_picks_among_the_victims_leases_at_random() -> None:
    leases = _owned("w", "w2", 10)
    stolen = {plan(leases, "me", {}, _always, random.Random(s)).steal for s in range(40)}
    assert len(stolen) > 1  # not always the same lease: concurrent stealers rarely collide


def test_never_steals_an_expired_or_not_ready_lease() -> None:
    held = _owned("w", "w2", 6)
    expired = {held[0].key: 1.0}
    # held[0] is expired (and not ready, so it is not available either); the rest not ready
    # except held[5].
    ready = _ready_unless(held[:5])
    for seed in range(20):
        decided = plan(held, "me", expired, ready, random.Random(seed))
        assert decided.take == []
        assert decided.steal is not None
        assert decided.steal.shard_id == "w5"


def test_no_steal_when_the_busiest_has_no_ready_lease() -> None:
    held = _owned("w", "w2", 6)
    # w2, above its share, gives leases up at its next cycle: "me" looks again soon.
    assert plan(held, "me", {}, _ready_unless(held)) == Plan(releases_expected=True)


@pytest.mark.parametrize(
    ("others", "mine", "expected"),
    [
        ([6], 0, True),  # target 3: w0 gives 3 up for me
        ([4, 4], 1, True),  # target 3: both above it
        ([3, 3], 2, False),  # target 3: nobody above it
        ([3], 3, False),  # at target: nothing to wait for
        ([5], 5, False),  # target 5: balanced
    ],
)
def test_releases_are_expected_while_others_hold_more_than_their_share(
    others: list[int], mine: int, expected: bool
) -> None:
    leases = _owned("m", "me", mine)
    for n, count in enumerate(others):
        leases += _owned(f"o{n}-", f"w{n}", count)
    workers = {"me", *(f"w{n}" for n in range(len(others)))}
    decided = plan(leases, "me", {}, _always, random.Random(1), workers)
    assert decided.releases_expected is expected


@pytest.mark.parametrize(
    ("others", "mine", "steals"),
    [
        ([5], 1, True),  # target 3; busiest 5 > 3
        ([2], 0, True),  # target 1; busiest 2 > 1
        ([4, 4], 0, True),  # target 3; busiest 4 > 3
        ([3, 3], 1, True),  # target 3; busiest == target and mine 1 < target - 1
        ([3, 3], 0, True),  # target 2; busiest 3 > 2
        ([4, 4], 2, True),  # target ceil(10/3) = 4; busiest == target, mine 2 < 3
        ([3, 3], 2, False),  # target 3; busiest == target, mine == target - 1: balanced
        ([3, 2], 2, False),  # target 3; balanced
        ([4, 4], 3, False),  # target 4; busiest == target, mine == target - 1
        ([1], 0, False),  # one lease, two workers: moving it would not help
        ([2, 2, 2], 1, False),  # target 2; busiest == target, mine == target - 1
        ([3, 3, 3], 1, True),  # target ceil(10/4) = 3; mine 1 < 2
        ([3], 3, False),  # at target: nothing to do
    ],
)
def test_steal_conditions(others: list[int], mine: int, steals: bool) -> None:
    leases = _owned("m", "me", mine)
    for i, n in enumerate(others):
        leases += _owned(f"w{i}-", f"w{i}", n)
    decided = plan(leases, "me", {}, _always, random.Random(0))
    assert decided.take == []
    assert (decided.steal is not None) is steals
    if decided.steal is not None:
        assert decided.steal.owner == f"w{others.index(max(others))}"


def test_no_steal_when_every_other_worker_is_below_target() -> None:
    # A dead worker's leases are expired but cannot be taken yet (not ready): they still count,
    # so target is ceil(7/3) = 3 and nobody live is above it.
    dead = [_lease(f"d{i}", "dead", parents=("p",)) for i in range(3)]
    leases = [*dead, *_owned("a", "w2", 2), *_owned("b", "w3", 2)]
    expired = {lease.key: 1.0 for lease in dead}
    assert plan(leases, "me", expired, _ready_unless(dead)) == Plan()


def _balanced_loads(n: int, workers: int, rng: random.Random) -> list[int]:
    loads = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    rng.shuffle(loads)
    return loads


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=0, max_value=2**32),
)
def test_balanced_state_is_stable_nobody_steals(n: int, workers: int, seed: int) -> None:
    """Balanced: nobody takes, steals or releases, whether the workers are known only by the
    leases they hold or also by their heartbeats (which adds those holding none)."""
    rng = random.Random(seed)
    loads = _balanced_loads(n, workers, rng)
    leases = [lease for w, load in enumerate(loads) for lease in _owned(f"w{w}-", f"w{w}", load)]
    everyone = [f"w{w}" for w in range(workers)]
    for w in range(workers):
        assert plan(leases, f"w{w}", {}, _always, rng) == Plan()
        assert plan(leases, f"w{w}", {}, _always, rng, workers=everyone) == Plan()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=0, max_value=2**32),
)
def test_repeated_planning_converges_to_balance_and_then_stops(
    loads: list[int], free: int, seed: int
) -> None:
    """Every worker plans in turn and applies its plan; the loads end within one of each other.

    Workers that hold nothing are invisible to the others (they are not in anyone's count), so
    the model lets every worker plan every round, as the real ones do.
    """
    rng = random.Random(seed)
    owner: dict[str, str | None] = {f"s{i}": None for i in range(free)}
    for w, load in enumerate(loads):
        owner.update({f"w{w}-{i}": f"w{w}" for i in range(load)})
    workers = [f"w{w}" for w in range(len(loads))]
    n = len(owner)
    moves = 0
    rounds_without_change = 0
    for _ in range(4 * n + 10):
        changed = False
        order = workers[:]
        rng.shuffle(order)
        for me in order:
            leases = [_lease(s, o) for s, o in owner.items()]
            decided = plan(leases, me, {}, _always, rng)
            for lease in [*decided.take, *([decided.steal] if decided.steal else [])]:
                owner[lease.shard_id] = me
                changed = True
                moves += 1
        rounds_without_change = 0 if changed else rounds_without_change + 1
        if rounds_without_change >= 2:
            break
    assert rounds_without_change >= 2, "the planner kept moving leases"
    counts = Counter(o for o in owner.values())
    assert counts[None] == 0, "free leases left behind"
    held = [counts[w] for w in workers]
    assert max(held) - min(held) <= 1, f"not balanced: {held}"
    assert sum(held) == n


# plan: workers known by their heartbeats, and graceful release


@pytest.mark.parametrize(
    ("workers", "expected_take"),
    [
        ((), 12),  # alone as far as it knows: target 12
        (("a",), 6),  # ceil(12/2)
        (("a", "b"), 4),  # ceil(12/3)
        (("a", "b", "c", "d", "e"), 2),  # ceil(12/6)
        (("me", "a", "a", "b"), 4),  # itself and duplicates count once: ceil(12/3)
    ],
)
def test_heartbeat_only_workers_count_in_the_target(
    workers: tuple[str, ...], expected_take: int
) -> None:
    free = _owned("f", None, 12)
    decided = plan(free, "me", {}, _always, random.Random(0), workers=workers)
    assert len(decided.take) == expected_take
    assert decided.release == 0
    assert decided.steal is None


def test_a_heartbeat_worker_that_also_holds_leases_counts_once() -> None:
    leases = [*_owned("w", "w2", 4), *_owned("f", None, 8)]
    # Owners of live leases: {w2}; heartbeats: {w2, me}; target ceil(12/2) = 6, not ceil(12/3).
    decided = plan(leases, "me", {}, _always, random.Random(0), workers=iter(["w2", "me"]))
    assert len(decided.take) == 6


def test_an_owner_whose_leases_expired_counts_while_its_heartbeat_is_fresh() -> None:
    # Its leases stood still for a failover (say its renewals stall) but it still beats.
    stalled = _owned("s", "stalled", 4)
    expired = {lease.key: 1.0 for lease in stalled}
    leases = [*stalled, *_owned("f", None, 4)]
    assert len(plan(leases, "me", expired, _always).take) == 8  # alone: target 8
    decided = plan(leases, "me", expired, _always, random.Random(0), workers=["stalled"])
    assert len(decided.take) == 4  # target ceil(8/2)
    assert {lease.owner for lease in decided.take} == {"stalled"}  # expired before free


@pytest.mark.parametrize(
    ("mine", "others", "workers", "expected_release"),
    [
        (10, {}, ("new",), 5),  # target ceil(10/2) = 5
        (1_200, {}, ("w1", "w2", "w3"), 900),  # target 300: the 1 -> 4 join
        (300, {"w1": 300, "w2": 300, "w3": 300}, tuple(f"n{i}" for i in range(6)), 180),
        (12, {"w2": 4}, ("w3",), 6),  # target ceil(16/3) = 6
        (7, {"w2": 3}, ("w2",), 2),  # target 5: w2 holds fewer (no newcomer needed)
        (6, {"w2": 4}, (), 1),  # target 5: an owner below target counts without a heartbeat
        (5, {"w2": 5}, ("new",), 1),  # target ceil(10/3) = 4
        (4, {"w2": 4}, ("new", "w2"), 1),  # target ceil(8/3) = 3
    ],
)
def test_releases_what_it_holds_above_target_when_someone_holds_less(
    mine: int, others: dict[str, int], workers: tuple[str, ...], expected_release: int
) -> None:
    leases = _owned("m", "me", mine)
    for worker, n in others.items():
        leases += _owned(f"{worker}-", worker, n)
    everyone = {"me", *others, *workers}
    target = math.ceil(len(leases) / len(everyone))
    assert expected_release == mine - target  # the table above is the rule
    decided = plan(leases, "me", {}, _always, random.Random(0), workers=workers)
    # A release plan does nothing else: the worker gives leases up, it takes and steals nothing.
    assert decided == _released(expected_release)


def test_release_with_free_leases_around_stops_at_target() -> None:
    # 10 held, 5 free, one newcomer: target ceil(15/2) = 8. The newcomer takes the 5 free ones
    # and the 2 released, and ends one short of target, as the rounding allows.
    leases = [*_owned("m", "me", 10), *_owned("f", None, 5)]
    assert plan(leases, "me", {}, _always, workers=("new",)) == _released(2)


def test_finished_and_not_ready_leases_do_not_make_a_worker_release() -> None:
    held = _owned("m", "me", 3)
    finished = [_lease(f"done{i}", "me", checkpoint=SHARD_END) for i in range(6)]
    blocked = [_lease(f"c{i}", None, parents=("p",)) for i in range(6)]
    # Counted: my 3 open leases only; with a newcomer, target ceil(3/2) = 2: release 1.
    decided = plan([*held, *finished, *blocked], "me", {}, _ready_unless(blocked), workers=["n"])
    assert decided == _released(1)


@pytest.mark.parametrize(
    ("mine", "others", "workers", "expected"),
    [
        (4, {"w2": 4, "w3": 4}, ("w2", "w3"), "nothing"),  # everyone at target 4
        (4, {"w2": 4, "w3": 2}, ("w2", "w3"), "nothing"),  # target 4: w3 below, I am not above
        (3, {"w2": 4}, ("new",), "nothing"),  # target ceil(7/3) = 3: w2 is above, not me
        (2, {"w2": 6}, ("new",), "steal"),  # target ceil(8/3) = 3: below, nothing free
        (1, {"w2": 3}, ("w2", "new"), "take"),  # plus 2 free: target ceil(6/3) = 2
        (0, {}, ("a", "b"), "nothing"),  # nothing at all
    ],
)
def test_no_release_at_or_below_target(
    mine: int, others: dict[str, int], workers: tuple[str, ...], expected: str
) -> None:
    leases = _owned("m", "me", mine)
    for worker, n in others.items():
        leases += _owned(f"{worker}-", worker, n)
    if expected == "take":
        leases += _owned("f", None, 2)
    decided = plan(leases, "me", {}, _always, random.Random(0), workers=workers)
    assert decided.release == 0
    assert (decided.steal is not None) is (expected == "steal")
    assert bool(decided.take) is (expected == "take")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=4),
    st.integers(min_value=0, max_value=30),
)
def test_released_leases_always_have_takers(loads: list[int], newcomers: int, free: int) -> None:
    """On any snapshot, with every worker known by its heartbeat: a worker releases exactly what
    it holds above target, only while another known worker holds less than target, and all the
    leases released on one snapshot, plus the free ones, fit in the room of the workers below
    target, so none is left behind for lack of a taker."""
    leases = [*_owned("f", None, free)]
    for w, load in enumerate(loads):
        leases += _owned(f"w{w}-", f"w{w}", load)
    known = [f"w{w}" for w in range(len(loads))] + [f"new{i}" for i in range(newcomers)]
    held = Counter(lease.owner for lease in leases)
    target = math.ceil(len(leases) / len(known))
    released = 0
    for me in known:
        decided = plan(leases, me, {}, _always, random.Random(0), workers=known)
        assert decided.release == max(0, held[me] - target)
        if decided.release:
            assert decided == _released(decided.release)
            assert any(held[w] < target for w in known if w != me)
        released += decided.release
    if all(held[w] >= target for w in known):
        assert released == 0
    room = sum(max(0, target - held[w]) for w in known)
    assert released + free <= room


# plan: random tie-breaking


def test_workers_with_different_rngs_reach_for_different_free_leases() -> None:
    free = _owned("f", None, 1_000)
    workers = [f"w{i}" for i in range(10)]  # target ceil(1000/10) = 100
    picks = {
        me: set(_shards(plan(free, me, {}, _always, random.Random(seed), workers).take))
        for seed, me in enumerate(workers)
    }
    assert all(len(p) == 100 for p in picks.values())
    # In listing order they would all pick f0..f99. At random, two picks of 100 out of 1,000
    # share about 10; all ten cover about 1000 * (1 - 0.9**10) = 651.
    assert len(picks["w0"] & picks["w1"]) < 30
    assert len(set().union(*picks.values())) > 550


def test_a_fixed_rng_gives_a_reproducible_choice() -> None:
    leases = [*_owned("f", None, 200), *_owned("w", "w2", 50)]
    first = plan(leases, "me", {}, _always, random.Random(42), workers=["w2", "w3"])
    again = plan(leases, "me", {}, _always, random.Random(42), workers=["w2", "w3"])
    assert len(first.take) == math.ceil(250 / 3)
    assert _shards(first.take) == _shards(again.take)
    other = plan(leases, "me", {}, _always, random.Random(43), workers=["w2", "w3"])
    assert _shards(other.take) != _shards(first.take)


def test_expired_leases_with_equal_age_are_taken_in_random_order_but_before_free_ones() -> None:
    dead = _owned("d", "dead", 30)
    expired = {lease.key: 5.0 for lease in dead}  # all seen still since the same moment
    leases = [*dead, *_owned("f", None, 30), *_owned("w", "w2", 10)]
    # Workers: me, w2 (and the dead one is not counted): target ceil(70/2) = 35, room 35.
    picks = []
    for seed in range(5):
        decided = plan(leases, "me", expired, _always, random.Random(seed), workers=["w2"])
        assert len(decided.take) == 35
        assert [lease.owner for lease in decided.take[:30]] == ["dead"] * 30
        assert {lease.owner for lease in decided.take[30:]} == {None}
        picks.append(_shards(decided.take))
    assert len({tuple(p[:30]) for p in picks}) == 5  # the expired ones in a different order
    assert len({tuple(sorted(p[30:])) for p in picks}) > 1  # and not always the same free ones


def _converge_with_heartbeats(
    owner: dict[str, str | None], workers: list[str], rng: random.Random, limit: int
) -> tuple[int, int]:
    """Every worker plans in turn on a fresh snapshot, knowing every worker by its heartbeat,
    and applies its plan, releases included (at once). Returns (rounds until nothing changes,
    rounds in which somebody released)."""
    releasing_rounds = 0
    for rounds in range(1, limit + 1):
        changed = released = False
        order = workers[:]
        rng.shuffle(order)
        for me in order:
            leases = [_lease(s, o) for s, o in owner.items()]
            decided = plan(leases, me, {}, _always, rng, workers=workers)
            mine = [s for s, o in owner.items() if o == me]
            for shard in rng.sample(mine, decided.release):
                owner[shard] = None
                changed = released = True
            for lease in [*decided.take, *([decided.steal] if decided.steal else [])]:
                owner[lease.shard_id] = me
                changed = True
        releasing_rounds += released
        if not changed:
            return rounds - 1, releasing_rounds
    pytest.fail(f"still moving after {limit} rounds: {Counter(owner.values())}")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=4),
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=0, max_value=2**32),
)
def test_with_heartbeats_and_release_balance_comes_in_a_few_rounds(
    loads: list[int], newcomers: int, free: int, seed: int
) -> None:
    """Workers holding nothing are known by their heartbeats: the loaded ones release at once
    and the newcomers fill up, so balance does not take one steal per lease. What is left is
    the rounding: the last to fill up can be short by up to workers - 1 and steals that back one
    lease per round (there is no release at target)."""
    rng = random.Random(seed)
    owner: dict[str, str | None] = {f"s{i}": None for i in range(free)}
    for w, load in enumerate(loads):
        owner.update({f"w{w}-{i}": f"w{w}" for i in range(load)})
    workers = [f"w{w}" for w in range(len(loads))] + [f"new{i}" for i in range(newcomers)]
    n = len(owner)
    shortfall = len(workers) * math.ceil(n / len(workers)) - n if n else 0
    rounds, releasing = _converge_with_heartbeats(owner, workers, rng, limit=4 * n + 10)
    counts = Counter(owner.values())
    assert counts[None] == 0, "free leases left behind"
    held = [counts[w] for w in workers]
    assert max(held) - min(held) <= 1, f"not balanced: {held}"
    assert releasing <= 1, "released in more than one round: release overshot or oscillated"
    assert rounds <= 2 + max(0, shortfall - 1), (rounds, shortfall, loads, newcomers, free)


# plan: deployments sharing the lease table (issue 13), balancing per group of streams

S1, S2, S3 = (ARN.replace("table/t/", f"table/t{i}/") for i in (1, 2, 3))


def _of(stream: str, prefix: str, owner: str | None, n: int) -> list[Lease]:
    return [Lease(stream, f"{prefix}{i}", "t", owner=owner, counter=1) for i in range(n)]


def _beats(**streams: Iterable[str]) -> list[WorkerBeat]:
    return [WorkerBeat(name, 1, frozenset(read)) for name, read in streams.items()]


def _count(leases: Iterable[Lease]) -> Counter[str]:
    return Counter(lease.stream_arn for lease in leases)


def test_live_workers_lists_for_each_stream_the_workers_that_read_it() -> None:
    beats = _beats(a=[S1, S2], b=[S1, S2], z=[S2, S3], gone=[S1], other=[S3])
    stale = {worker_key("gone"): 1.0}
    assert live_workers(beats, stale, [S1, S2]) == {S1: {"a", "b"}, S2: {"a", "b", "z"}}
    assert live_workers(beats, stale, [S3]) == {S3: {"z", "other"}}
    assert live_workers([], {}, [S1]) == {S1: set()}


def test_a_worker_that_cannot_read_a_stream_does_not_lower_the_share_of_those_that_can() -> None:
    """The issue's example: a and b read s1 + s2, z (another deployment) reads s2 + s3. For a,
    z counts toward s2 only: a aims for ceil(6/2) = 3 of s1 and ceil(6/3) = 2 of s2 (before the
    fix: ceil(12/3) = 4 in all, at random, so 2 of s1's 6 were left for nobody)."""
    beats = _beats(a=[S1, S2], b=[S1, S2], z=[S2, S3])
    leases = [*_of(S1, "x", None, 6), *_of(S2, "y", None, 6)]
    for seed in range(20):
        workers = live_workers(beats, {}, [S1, S2])
        decided = plan(leases, "a", {}, _always, random.Random(seed), workers=workers)
        assert _count(decided.take) == {S1: 3, S2: 2}
    # b, planning after a took its share, takes the rest of s1.
    taken = {lease.key for lease in plan(leases, "a", {}, _always, workers=workers).take}
    after = [replace(lease, owner="a") if lease.key in taken else lease for lease in leases]
    decided = plan(after, "b", {}, _always, workers=live_workers(beats, {}, [S1, S2]))
    assert _count(decided.take) == {S1: 3, S2: 2}


def test_a_worker_whose_table_failed_counts_only_for_the_streams_it_still_reads() -> None:
    """f's table for s2 failed: its heartbeat lists s1 alone (`Coordinator._heartbeat`). a, the
    only one reading s2, takes all of it besides half of s1."""
    beats = _beats(a=[S1, S2], f=[S1])
    leases = [*_of(S1, "x", "f", 1), *_of(S1, "y", None, 3), *_of(S2, "z", None, 8)]
    decided = plan(leases, "a", {}, _always, workers=live_workers(beats, {}, [S1, S2]))
    assert _count(decided.take) == {S1: 2, S2: 8}


def test_streams_with_the_same_readers_are_balanced_together() -> None:
    """a and b read five one-shard tables, small0..small4; z (another deployment) reads small4
    and t3. a holds all five. Balanced table by table, a would keep them all (1 each = the share of
    one shard among two) and b would idle; balanced over everything a reads, a would give up
    3 (ceil(5/3) = 2 with z counted, which cannot take the first four). It gives up 2 of the
    four that only a and b read: target ceil(4/2) = 2, and keeps the fifth (ceil(1/3) = 1)."""
    small = [ARN.replace("table/t/", f"table/small{i}/") for i in range(5)]
    beats = _beats(a=small, b=small, z=[small[4], S3])
    leases = [lease for stream in small for lease in _of(stream, "s", "a", 1)]
    decided = plan(leases, "a", {}, _always, workers=live_workers(beats, {}, small))
    assert decided == Plan(release=2, release_from={frozenset(small[:4]): 2})
    # b takes what a gives up, from the same group, and nothing of the fifth.
    freed = [
        replace(lease, owner=None) if lease.stream_arn in small[:2] else lease for lease in leases
    ]
    decided = plan(freed, "b", {}, _always, workers=live_workers(beats, {}, small))
    assert sorted(lease.stream_arn for lease in decided.take) == sorted(small[:2])


def test_one_steal_per_cycle_in_all_from_the_group_furthest_below_target() -> None:
    """Nothing free in s1 (x holds 6, target 3 for me: 3 short) nor in s2 (y holds 4, target
    2: 2 short): one steal, from x. In s3 one lease is free: taken in the same cycle."""
    beats = _beats(me=[S1, S2, S3], x=[S1], y=[S2], w=[S3])
    leases = [*_of(S1, "a", "x", 6), *_of(S2, "b", "y", 4), *_of(S3, "c", None, 1)]
    for seed in range(20):
        workers = live_workers(beats, {}, [S1, S2, S3])
        decided = plan(leases, "me", {}, _always, random.Random(seed), workers=workers)
        assert _shards(decided.take) == ["c0"]
        assert decided.steal is not None
        assert decided.steal.owner == "x"
        assert decided.release == 0


def test_a_release_in_one_group_does_not_stop_a_take_in_another() -> None:
    beats = _beats(me=[S1, S2], new=[S1], z=[S2])
    leases = [*_of(S1, "a", "me", 6), *_of(S2, "b", None, 4)]
    decided = plan(leases, "me", {}, _always, workers=live_workers(beats, {}, [S1, S2]))
    assert decided.release_from == {frozenset({S1}): 3}
    assert decided.release == 3
    assert _count(decided.take) == {S2: 2}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=4),
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=15), st.integers(min_value=1, max_value=3)),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=0, max_value=2**32),
)
def test_deployments_sharing_the_table_own_every_lease_and_balance_each_group(
    sizes: list[int], deployments: list[tuple[int, int]], seed: int
) -> None:
    """Deployments with any stream sets (bit masks over the streams) and 1-3 workers each,
    starting from a random ownership by workers that read the lease's stream: every worker
    plans in turn with the leases of its own streams and the heartbeats of all, and applies its
    plan. It ends with every lease of a stream somebody reads owned by one of its readers (no
    lease left behind), each group of streams with the same readers balanced within one, and no
    more moves; within 2 rounds plus the rounding steals (one per round in all)."""
    rng = random.Random(seed)
    streams = [ARN.replace("table/t/", f"table/t{i}/") for i in range(len(sizes))]
    reads: dict[str, frozenset[str]] = {}
    for d, (mask, count) in enumerate(deployments):
        read = frozenset(s for i, s in enumerate(streams) if mask >> i & 1)
        for w in range(count):
            reads[f"d{d}w{w}"] = read
    readers = {s: sorted(w for w, read in reads.items() if s in read) for s in streams}
    owner: dict[tuple[str, str], str | None] = {
        (s, f"s{i}"): rng.choice([None, *readers[s]])
        for s, n in zip(streams, sizes, strict=True)
        for i in range(n)
    }
    groups: dict[frozenset[str], list[str]] = {}
    for s in streams:
        if readers[s]:
            groups.setdefault(frozenset(readers[s]), []).append(s)
    shortfalls = 0
    for names, members in groups.items():
        n = sum(size for s, size in zip(streams, sizes, strict=True) if s in members)
        shortfalls += max(0, len(names) * math.ceil(n / len(names)) - n - 1) if n else 0
    rounds = _settle(owner, reads, rng, limit=4 * len(owner) + 10)
    for (s, shard), o in owner.items():
        assert o in readers[s] or not readers[s], f"{shard} of {s}: {o}, readers {readers[s]}"
    for names, members in groups.items():
        held = Counter(o for (s, _), o in owner.items() if s in members)
        loads = [held[w] for w in names]
        assert max(loads) - min(loads) <= 1, (members, loads)
    assert rounds <= 2 + shortfalls, (rounds, shortfalls)


def _settle(
    owner: dict[tuple[str, str], str | None],
    reads: dict[str, frozenset[str]],
    rng: random.Random,
    limit: int,
) -> int:
    """Every worker plans in turn with the leases of the streams it reads and the heartbeats of
    all (each listing the streams its worker reads), and applies its plan, releases included (at
    once, among the leases of the streams the plan names). Returns the rounds until nothing
    changes."""
    beats = [WorkerBeat(w, 1, read) for w, read in reads.items()]
    for rounds in range(limit):
        changed = False
        order = list(reads)
        rng.shuffle(order)
        for me in order:
            leases = [Lease(s, k, "t", owner=o) for (s, k), o in owner.items() if s in reads[me]]
            decided = plan(leases, me, {}, _always, rng, workers=live_workers(beats, {}, reads[me]))
            assert decided.release == sum(decided.release_from.values())
            for members, count in decided.release_from.items():
                mine = [key for key, o in owner.items() if o == me and key[0] in members]
                for key in rng.sample(mine, count):
                    owner[key] = None
                    changed = True
            for lease in [*decided.take, *([decided.steal] if decided.steal else [])]:
                owner[lease.stream_arn, lease.shard_id] = me
                changed = True
        if not changed:
            return rounds
    pytest.fail(f"still moving after {limit} rounds: {Counter(owner.values())}")


def _beat(
    worker: str, counter: int = 1, protocol: int = 2, streams: tuple[str, ...] = ()
) -> WorkerBeat:
    return WorkerBeat(worker, counter, frozenset(streams or (ARN,)), None, protocol)


@pytest.mark.parametrize(
    ("beat", "stale", "by_counter", "expired"),
    [
        (_beat("w"), False, False, False),  # heartbeat moving: alive, whatever its counter says
        (_beat("w"), False, True, False),  # idle lease, no renewals: still alive
        (_beat("w"), True, False, True),  # heartbeat still for a failover time: expired
        (_beat("w", protocol=1), False, True, True),  # an older worker: by the lease's counter
        (_beat("w", protocol=1), False, False, False),
        (_beat("w", streams=("other",)), False, True, True),  # no longer reads it: by counter
        (None, False, True, True),  # no heartbeat (left, or never had one): by counter
        (None, False, False, False),
    ],
)
def test_a_lease_lives_by_its_owners_heartbeat_when_the_owner_says_so(
    beat: WorkerBeat | None, stale: bool, by_counter: bool, expired: bool
) -> None:
    lease = _lease("s1", "w")
    beats = [beat] if beat is not None else []
    stale_beats = {beat.key: 5.0} if beat is not None and stale else {}
    counters = {lease.key: 7.0} if by_counter else {}
    assert (lease.key in lease_expiry([lease], counters, beats, stale_beats)) is expired


def test_leases_are_renewed_while_a_live_worker_of_an_older_version_reads() -> None:
    old, new = _beat("old", protocol=1), _beat("new")
    assert older_worker_reads([old, new], {}, "me")
    assert not older_worker_reads([old, new], {old.key: 1.0}, "me"), "the old one is gone"
    assert not older_worker_reads([new], {}, "me")
    assert not older_worker_reads([_beat("me", protocol=1)], {}, "me"), "not counting itself"
