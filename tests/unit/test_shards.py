"""Shard lineage: which shards get leases, which may be read, where their version clock starts."""

from __future__ import annotations

import pytest

from streamsync.leases.model import LATEST, SHARD_END, TRIM_HORIZON, Lease
from streamsync.source.client import Shard
from streamsync.source.shards import (
    leases_for_new_shards,
    ready_to_read,
    records_may_be_lost,
    shard_created_at,
    starting_version,
)

ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
TABLE = "orders"


def _shard(shard_id: str, parent: str | None = None, closed: bool = False) -> Shard:
    return Shard(shard_id, parent, 100, 200 if closed else None)


def _lease(
    shard_id: str,
    parents: tuple[str, ...] = (),
    checkpoint: str = TRIM_HORIZON,
    version: int = 0,
) -> Lease:
    return Lease(ARN, shard_id, TABLE, parents, checkpoint=checkpoint, checkpoint_version=version)


NOW = 1_790_000_000.0


def _by_shard(*leases: Lease) -> dict[str, Lease]:
    return {lease.shard_id: lease for lease in leases}


# leases_for_new_shards


def test_first_sight_trim_horizon_starts_every_shard_at_the_start() -> None:
    shards = [_shard("a", closed=True), _shard("b", "a"), _shard("c")]
    created = leases_for_new_shards(TABLE, ARN, shards, {}, TRIM_HORIZON, NOW)
    assert [lease.shard_id for lease in created] == ["a", "b", "c"]
    assert {lease.checkpoint for lease in created} == {TRIM_HORIZON}
    for lease in created:
        assert lease.stream_arn == ARN
        assert lease.table == TABLE
        assert lease.owner is None
        assert lease.counter == 0
        assert lease.checkpoint_version == 0


def test_first_sight_latest_open_at_latest_closed_count_as_read() -> None:
    shards = [_shard("old", closed=True), _shard("new", "old"), _shard("other")]
    created = {
        lease.shard_id: lease
        for lease in leases_for_new_shards(TABLE, ARN, shards, {}, LATEST, NOW)
    }
    assert created["old"].checkpoint == SHARD_END
    assert created["old"].finished
    # The start is a moment, not a position: whoever reads later skips what came before it.
    for open_shard in (created["new"], created["other"]):
        assert (open_shard.checkpoint, open_shard.start_after) == (TRIM_HORIZON, NOW)


def test_later_sight_new_shards_start_at_trim_horizon_even_with_latest() -> None:
    existing = _by_shard(_lease("a", checkpoint="12345"))
    shards = [_shard("a", closed=True), _shard("b", "a"), _shard("c", "a", closed=True)]
    created = leases_for_new_shards(TABLE, ARN, shards, existing, LATEST, NOW)
    assert [(lease.shard_id, lease.checkpoint) for lease in created] == [
        ("b", TRIM_HORIZON),
        ("c", TRIM_HORIZON),  # closed, but it was never read: it is not SHARD_END
    ]


def test_parents_are_recorded() -> None:
    shards = [_shard("root"), _shard("child", "root"), _shard("orphan", "expired-parent")]
    created = {
        lease.shard_id: lease
        for lease in leases_for_new_shards(TABLE, ARN, shards, {}, TRIM_HORIZON, NOW)
    }
    assert created["root"].parent_shard_ids == ()
    assert created["child"].parent_shard_ids == ("root",)
    assert created["orphan"].parent_shard_ids == ("expired-parent",)


def test_existing_shards_are_skipped() -> None:
    existing = _by_shard(_lease("a"), _lease("b", ("a",)))
    shards = [_shard("a"), _shard("b", "a"), _shard("c", "b")]
    created = leases_for_new_shards(TABLE, ARN, shards, existing, TRIM_HORIZON, NOW)
    assert [lease.shard_id for lease in created] == ["c"]


def test_nothing_new_creates_nothing() -> None:
    existing = _by_shard(_lease("a"))
    assert leases_for_new_shards(TABLE, ARN, [_shard("a")], existing, LATEST, NOW) == []
    assert leases_for_new_shards(TABLE, ARN, [], {}, TRIM_HORIZON, NOW) == []


def test_leases_come_parents_first_whatever_the_listing_order() -> None:
    shards = [_shard("grandchild", "child"), _shard("child", "root"), _shard("root")]
    created = [
        lease.shard_id for lease in leases_for_new_shards(TABLE, ARN, shards, {}, TRIM_HORIZON, NOW)
    ]
    assert created.index("root") < created.index("child") < created.index("grandchild")


# ready_to_read


def test_finished_lease_is_not_ready() -> None:
    lease = _lease("a", checkpoint=SHARD_END)
    assert not ready_to_read(lease, _by_shard(lease), {"a"})


def test_lease_without_parents_is_ready() -> None:
    lease = _lease("a", checkpoint="42")
    assert ready_to_read(lease, _by_shard(lease), {"a"})


def test_unfinished_parent_holds_the_child_back() -> None:
    parent = _lease("p", checkpoint="42")
    child = _lease("c", ("p",))
    assert not ready_to_read(child, _by_shard(parent, child), {"p", "c"})
    # Even once the parent is gone from the listing: its lease still says it is unread.
    assert not ready_to_read(child, _by_shard(parent, child), {"c"})


def test_parent_listed_without_a_lease_yet_holds_the_child_back() -> None:
    child = _lease("c", ("p",))
    assert not ready_to_read(child, _by_shard(child), {"p", "c"})


def test_parent_gone_from_leases_and_listing_does_not_hold_back() -> None:
    child = _lease("c", ("p",))
    assert ready_to_read(child, _by_shard(child), {"c"})


def test_finished_parents_release_the_child() -> None:
    a = _lease("a", checkpoint=SHARD_END)
    b = _lease("b", checkpoint=SHARD_END)
    child = _lease("c", ("a", "b"))
    assert ready_to_read(child, _by_shard(a, b, child), {"a", "b", "c"})


def test_every_parent_must_be_finished() -> None:
    a = _lease("a", checkpoint=SHARD_END)
    b = _lease("b", checkpoint="7")
    child = _lease("c", ("a", "b"))
    assert not ready_to_read(child, _by_shard(a, b, child), {"a", "b", "c"})
    # One finished, one gone entirely: ready.
    assert ready_to_read(child, _by_shard(a, child), {"a", "c"})
    # One finished, one listed but without a lease yet: not ready.
    assert not ready_to_read(child, _by_shard(a, child), {"a", "b", "c"})


def test_readiness_depends_only_on_parents_not_on_grandparents() -> None:
    grandparent = _lease("g", checkpoint="1")  # unfinished, but its child already finished
    parent = _lease("p", ("g",), checkpoint=SHARD_END)
    child = _lease("c", ("p",))
    assert ready_to_read(child, _by_shard(grandparent, parent, child), {"g", "p", "c"})


# starting_version


def test_checkpoint_version_wins_over_parents() -> None:
    parent = _lease("p", checkpoint=SHARD_END, version=900)
    child = _lease("c", ("p",), checkpoint="5", version=500)
    assert starting_version(child, _by_shard(parent, child)) == 500


def test_without_checkpoint_version_starts_from_the_highest_parent() -> None:
    a = _lease("a", checkpoint=SHARD_END, version=300)
    b = _lease("b", checkpoint=SHARD_END, version=700)
    child = _lease("c", ("a", "b", "gone"))
    assert starting_version(child, _by_shard(a, b, child)) == 700


def test_without_checkpoint_or_known_parents_starts_at_zero() -> None:
    assert starting_version(_lease("c"), {}) == 0
    assert starting_version(_lease("c", ("gone",)), {}) == 0


def test_what_must_not_be_lost_is_recorded_in_each_new_lease() -> None:
    """Found with the stream: what is written from now on; found later (a split's child): all
    since the shard's creation, which its id carries in milliseconds."""
    child_id = "shardId-00000001592367572726-07776efd"
    first = leases_for_new_shards(TABLE, ARN, [_shard("root")], {}, TRIM_HORIZON, NOW)
    later = leases_for_new_shards(
        TABLE, ARN, [_shard(child_id, "root")], _by_shard(*first), TRIM_HORIZON, NOW
    )
    assert first[0].wanted_since == NOW
    assert later[0].wanted_since == 1592367572.726
    assert shard_created_at(child_id) == 1592367572.726
    assert shard_created_at("shardId-not-a-time") is None


@pytest.mark.parametrize(
    ("wanted_since", "start_after", "may_be_lost"),
    [
        (NOW - 3600, None, False),  # an hour old: nothing trimmed yet
        (NOW - 25 * 3600, None, True),  # the retention passed what was wanted
        (NOW - 25 * 3600, NOW - 3600, False),  # a LATEST start: nothing before it was wanted
        (None, None, False),  # an older lease that does not say: nothing known to be lost
    ],
)
def test_records_may_be_lost_once_the_retention_passed_what_was_wanted(
    wanted_since: float | None, start_after: float | None, may_be_lost: bool
) -> None:
    lease = Lease(ARN, "s", TABLE, wanted_since=wanted_since, start_after=start_after)
    assert records_may_be_lost(lease, NOW) is may_be_lost


def test_a_version_floor_written_after_a_loss_is_where_the_clock_restarts() -> None:
    parent = _lease("p", checkpoint=SHARD_END, version=50)
    child = Lease(ARN, "c", TABLE, ("p",), version_floor=70)
    assert starting_version(child, _by_shard(parent, child)) == 70
    resumed = Lease(ARN, "c", TABLE, checkpoint="123", checkpoint_version=60, version_floor=70)
    assert starting_version(resumed, {}) == 70
