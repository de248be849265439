"""The pure parts of `streamsync reindex`: names, the one alias request, the consumer's own
configuration, when it has caught up, and what counts as drift under writes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from streamsync.config import Config
from streamsync.leases.model import SHARD_END, Lease, lease_key
from streamsync.reindex import (
    ReindexReport,
    builder_config,
    caught_up,
    concrete_index,
    lasting_drift,
    lease_table_name,
    new_index_name,
    swap_actions,
)
from streamsync.verify import Drifted, VerifyReport
from tests.support.pipeline import make_config

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"


def config_with(**table: object) -> Config:
    return make_config(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "leases",
        [{"table": "orders", "index": "orders-search", **table}],
        leases={"worker_id": "w1"},
    )


def test_the_new_index_is_named_after_the_alias_and_the_utc_time() -> None:
    paris = timezone(timedelta(hours=1))
    now = datetime(2026, 12, 2, 8, 5, 9, tzinfo=paris)
    assert new_index_name("orders-search", now) == "orders-search-20261202070509"


def test_each_table_reindexes_with_a_lease_table_of_its_own() -> None:
    assert lease_table_name("streamsync-leases", "orders") == "streamsync-leases-reindex-orders"
    assert len(lease_table_name("l" * 200, "t" * 200)) == 255, "DynamoDB's longest name"


def test_the_swap_is_one_request_removing_the_old_indices_and_adding_the_new() -> None:
    assert swap_actions("orders", ["orders-1", "orders-2"], "orders-3") == [
        {"remove": {"index": "orders-1", "alias": "orders"}},
        {"remove": {"index": "orders-2", "alias": "orders"}},
        {"add": {"index": "orders-3", "alias": "orders", "is_write_index": True}},
    ]
    assert swap_actions("orders", [], "orders-1") == [
        {"add": {"index": "orders-1", "alias": "orders", "is_write_index": True}}
    ], "a first build creates the alias"


def test_the_consumer_loads_the_table_into_the_new_index_with_leases_of_its_own() -> None:
    config = config_with(
        start_position="LATEST", index_mappings={"dynamic": False}, index_settings={"a": 1}
    )
    second = config.tables[0].model_copy(update={"table": "x", "index": "x"})
    other = config.model_copy(update={"tables": [*config.tables, second]})
    built = builder_config(other, other.tables[0], "orders-search-2")
    (table,) = built.tables
    assert (table.table, table.index) == ("orders", "orders-search-2")
    assert (table.initial_load, table.start_position) == ("scan", "TRIM_HORIZON")
    assert (table.index_mappings, table.index_settings) == ({"dynamic": False}, {"a": 1})
    assert built.leases.table == "leases-reindex-orders"
    assert built.leases.worker_id is None, "not the workers' own id"
    assert built.observability.listen is None
    assert other.tables[0].index == "orders-search", "the configuration itself is unchanged"


def lease(shard: str, checkpoint: str = "TRIM_HORIZON", parent: str | None = None) -> Lease:
    parents = (parent,) if parent else ()
    return Lease(ARN, shard, "orders", parent_shard_ids=parents, checkpoint=checkpoint)


def test_caught_up_when_every_shard_is_read_past_the_moment_or_finished() -> None:
    leases = [lease("a"), lease("b", parent="c"), lease("c", SHARD_END)]
    a, b = lease_key(ARN, "a"), lease_key(ARN, "b")
    assert caught_up(leases, {a: 12.0, b: 10.0}, since=10.0)
    assert not caught_up(leases[:1] + leases[2:], {a: 12.0}, since=10.0), "c's child not leased"
    assert not caught_up(leases, {a: 12.0, b: 9.9}, since=10.0), "b polled before the moment"
    assert not caught_up(leases, {a: 12.0, b: None}, since=10.0), "b not acknowledged yet"
    assert not caught_up(leases, {a: 12.0}, since=10.0), "b not read by this consumer"
    assert not caught_up([], {}, since=10.0), "no shard leased yet"


def drifted(item: dict[str, Any] | None) -> Drifted:
    return Drifted({"pk": {"S": "k"}}, item)


def test_drift_is_a_difference_that_stays_while_its_item_does_not_change() -> None:
    one, two = {"pk": {"S": "k"}, "v": {"N": "1"}}, {"pk": {"S": "k"}, "v": {"N": "2"}}
    before = {
        "same": drifted(one),
        "changed": drifted(one),
        "gone": drifted(None),
        "ok": drifted(one),
    }
    after = {"same": drifted(one), "changed": drifted(two), "gone": drifted(None)}
    assert lasting_drift(before, after) == {"same", "gone"}
    assert lasting_drift({}, after) == set(), "first seen: looked at again"


def test_a_concrete_index_is_refused_with_the_migration() -> None:
    config = config_with()
    line = concrete_index(config.tables[0], 0)
    assert "\n" not in line
    assert line.startswith("tables[0].index orders-search: is an index, not an alias")
    assert "leases.table" in line
    assert "Changing mappings" in line


def test_the_summary_says_where_the_alias_points_and_what_to_delete() -> None:
    verified = VerifyReport("orders", "orders-2", table_items=3, index_documents=3)
    swapped = ReindexReport("orders", "orders", "orders-2", ["orders-1"], verified, None, 2)
    assert swapped.swapped
    assert swapped.summary() == (
        "reindex orders: the alias orders now points to orders-2 (before: orders-1); verified "
        "3 items, 3 documents (2 changes still on their way when compared, equal since)\n"
        "the old index is kept: once satisfied, delete it (DELETE /orders-1)"
    )
    drift = VerifyReport("orders", "orders-2", extra=1)
    refused = ReindexReport("orders", "orders", "orders-2", ["orders-1"], verified, drift)
    assert not refused.swapped
    assert "the alias orders was left on orders-1" in refused.summary()
    assert "DELETE /orders-2" in refused.summary()
