"""Prometheus metrics of one streamsync instance.

Each instance has its own registry (no global state), so a host service embedding streamsync can
pass its own registry, and tests can run several instances side by side. Names follow the
Prometheus conventions: `streamsync_` prefix, `_total` counters, base units (`_seconds`, `_bytes`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1,
    2,
    5,
    10,
    30,
    60,
    300,
)
SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
BYTES_BUCKETS = (1e3, 1e4, 1e5, 5e5, 1e6, 5e6, 1e7, 5e7)


class IteratorAges(Collector):
    """How far behind each shard's reader is: now minus the creation time of the last record
    it read, or 0 once a poll came back empty (caught up). Asked of each reader when scraped,
    so an idle-but-stuck reader shows a growing age; plus the maximum per table."""

    def __init__(self) -> None:
        self._readers: dict[tuple[str, str], Callable[[float], float]] = {}

    def watch(self, table: str, shard: str, age: Callable[[float], float]) -> None:
        """`age(now)`: the reader's iterator age, in seconds."""
        self._readers[(table, shard)] = age

    def forget(self, table: str, shard: str) -> None:
        self._readers.pop((table, shard), None)

    def collect(self) -> Iterator[Metric]:
        per_shard = GaugeMetricFamily(
            "streamsync_iterator_age_seconds",
            "Now minus the creation time of the last record read from the shard (0: caught up).",
            labels=["table", "shard"],
        )
        per_table = GaugeMetricFamily(
            "streamsync_iterator_age_max_seconds",
            "The largest iterator age among the table's shards this worker reads.",
            labels=["table"],
        )
        worst: dict[str, float] = {}
        now = time.time()
        for (table, shard), reader in list(self._readers.items()):
            age = reader(now)
            per_shard.add_metric([table, shard], age)
            worst[table] = max(worst.get(table, 0.0), age)
        for table, age in worst.items():
            per_table.add_metric([table], age)
        yield per_shard
        yield per_table


TABLE_RETRIES = ("GetShardIterator", "GetRecords", "bulk request", "tombstone check")
"""The retried operations of a running worker that are counted per table, at 0 from start-up."""


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.records_read = Counter(
            "streamsync_records_read", "Stream records read.", ["table"], registry=r
        )
        self.documents_indexed = Counter(
            "streamsync_documents_indexed",
            "Index actions acknowledged by Elasticsearch (not those refused as stale).",
            ["table"],
            registry=r,
        )
        self.documents_deleted = Counter(
            "streamsync_documents_deleted",
            "Delete actions acknowledged by Elasticsearch.",
            ["table"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamsync_dead_letters",
            "Records or actions that could not be indexed and went to dead letters.",
            ["table"],
            registry=r,
        )
        self.documents_stale = Counter(
            "streamsync_documents_stale",
            "Index or delete actions the cluster refused as older than the document's version "
            "(an older image arriving after a newer one): done, nothing written.",
            ["table"],
            registry=r,
        )
        self.dead_letters_refused = Counter(
            "streamsync_dead_letters_refused",
            "Dead letters the dead-letter index refused: kept in the dead-letter file if there "
            "is one, else only in an ERROR log line.",
            ["table"],
            registry=r,
        )
        self.records_lost = Counter(
            "streamsync_trimmed_shards",
            "Times a shard's unread records had been trimmed from the stream (records lost).",
            ["table"],
            registry=r,
        )
        self.retries = Counter(
            "streamsync_retries",
            "Retries of failed calls (throttling, server errors, unreachable services).",
            ["operation", "table"],
            registry=r,
        )
        self.get_records_calls = Counter(
            "streamsync_get_records_calls", "GetRecords calls.", ["table"], registry=r
        )
        self.shard_seconds = Counter(
            "streamsync_shard_read_seconds",
            "Time shards were read, summed over the shards (the shard-hours GetRecords is paid "
            "over).",
            ["table"],
            registry=r,
        )
        self.get_records_per_shard_hour = Gauge(
            "streamsync_get_records_per_shard_hour",
            "GetRecords calls per shard-hour read, since this worker started (what a quiet "
            "shard costs: 3,600 / polling.pickup_seconds at most).",
            ["table"],
            registry=r,
        )
        self._polls: dict[str, tuple[int, float]] = {}  # table -> (calls, shard-seconds)
        self.empty_polls = Counter(
            "streamsync_empty_polls",
            "GetRecords calls that returned no records.",
            ["table"],
            registry=r,
        )
        self.bulk_seconds = Histogram(
            "streamsync_bulk_request_seconds",
            "Time from sending a bulk request to its response.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bulk_actions = Histogram(
            "streamsync_bulk_request_actions",
            "Actions per bulk request.",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.bulk_bytes = Histogram(
            "streamsync_bulk_request_bytes",
            "Bytes per bulk request body.",
            buckets=BYTES_BUCKETS,
            registry=r,
        )
        self.lag = Histogram(
            "streamsync_end_to_end_lag_seconds",
            "From a change's creation in DynamoDB to its acknowledgement by Elasticsearch.",
            ["table"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Gauge(
            "streamsync_queue_actions",
            "Actions waiting for, or in, a bulk request.",
            registry=r,
        )
        self.ready = Gauge(
            "streamsync_ready",
            "1 while this instance is ready (/readyz answers 200), else 0: starting, leases not "
            "renewing, bulk requests failing, a table stopped, an initial load under way.",
            registry=r,
        )
        self.leases_held = Gauge(
            "streamsync_leases_held", "Shard leases this worker holds.", registry=r
        )
        self.heartbeat_failures = Counter(
            "streamsync_heartbeat_failures",
            "Heartbeats of this worker that failed (its leases live by them: failing for a "
            "failover time, they stop reading and others take them).",
            registry=r,
        )
        self.leases_taken = Counter(
            "streamsync_leases_taken", "Shard leases this worker took.", registry=r
        )
        self.task_failures = Counter(
            "streamsync_task_failures",
            "Background tasks that ended with an error or unexpectedly, or met an error only a "
            "restart fixes (then /healthz fails); shard readers that failed (their leases are "
            "taken again).",
            ["task"],
            registry=r,
        )
        self.shards = Gauge(
            "streamsync_shards",
            "Shards DescribeStream lists, by state.",
            ["table", "state"],
            registry=r,
        )
        self.iterator_ages = IteratorAges()
        r.register(self.iterator_ages)

    def start_at_zero(self, tables: Iterable[str]) -> None:
        """Every per-table counter exists, at 0, from start-up: an alert on `increase()` or
        `rate()` sees nothing until a series exists, so the first dead letter or trimmed shard
        would go unnoticed."""
        counters = (
            self.records_read,
            self.documents_indexed,
            self.documents_deleted,
            self.dead_letters,
            self.documents_stale,
            self.dead_letters_refused,
            self.records_lost,
            self.get_records_calls,
            self.shard_seconds,
            self.empty_polls,
        )
        for table in tables:
            for counter in counters:
                counter.labels(table)
            for operation in TABLE_RETRIES:
                self.retries.labels(operation, table)

    def polled(self, table: str, since_last: float) -> None:
        """One GetRecords call of a shard of `table`, `since_last` seconds after the shard's
        previous one (or since its reader started)."""
        self.get_records_calls.labels(table).inc()
        self.shard_seconds.labels(table).inc(since_last)
        calls, seconds = self._polls.get(table, (0, 0.0))
        calls, seconds = calls + 1, seconds + since_last
        self._polls[table] = (calls, seconds)
        if seconds > 0:
            self.get_records_per_shard_hour.labels(table).set(calls * 3600 / seconds)

    def readiness(self, reasons: Callable[[], list[str]]) -> None:
        """`streamsync_ready` follows `reasons()` (why not ready; empty: ready) when scraped: an
        alert sees what /readyz says even where no orchestrator acts on the probe."""
        self.ready.set_function(lambda: 0.0 if reasons() else 1.0)

    def queue_depth(self, depth: Callable[[], float]) -> None:
        self.queue.set_function(depth)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), for summaries and tests."""
        return self.registry.get_sample_value(name, labels) or 0.0
