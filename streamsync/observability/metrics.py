"""Prometheus metrics of one streamsync instance.

Each instance has its own registry (no global state), so a host service embedding streamsync can
pass its own registry, and tests can run several instances side by side.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.records_read = Counter(
            "streamsync_records_read", "Stream records read.", ["table"], registry=r
        )
        self.documents_indexed = Counter(
            "streamsync_documents_indexed",
            "Index actions acknowledged by Elasticsearch (older images rejected as stale count).",
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
        self.records_lost = Counter(
            "streamsync_trimmed_shards",
            "Times a shard's unread records had been trimmed from the stream (records lost).",
            ["table"],
            registry=r,
        )
        self.get_records_calls = Counter(
            "streamsync_get_records_calls", "GetRecords calls.", ["table"], registry=r
        )
        self.empty_polls = Counter(
            "streamsync_empty_polls",
            "GetRecords calls that returned no records.",
            ["table"],
            registry=r,
        )
        self.retries = Counter(
            "streamsync_retries",
            "Retries of failed calls (throttling, server errors, unreachable services).",
            ["operation"],
            registry=r,
        )
        self.leases_held = Gauge(
            "streamsync_leases_held", "Shard leases this worker holds.", registry=r
        )
        self.leases_taken = Counter(
            "streamsync_leases_taken", "Shard leases this worker took.", registry=r
        )

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), for summaries and tests."""
        return self.registry.get_sample_value(name, labels) or 0.0
