"""What an embedding gets wrong first: calling a command before `async with` built the engine."""

from __future__ import annotations

import pytest
import yaml

from streamsync import StreamSync, parse_config
from streamsync.config import Config


def config_of(*tables: str) -> Config:
    """Tables indexed under their own names, on a cluster never reached."""
    return parse_config(
        yaml.safe_dump(
            {
                "aws": {"region": "us-east-1"},
                "elasticsearch": {"hosts": ["http://127.0.0.1:9"]},
                "tables": [{"table": table, "index": table} for table in tables],
            }
        )
    )


async def test_a_command_outside_async_with_says_how_to_use_streamsync() -> None:
    config = config_of("orders")
    sync = StreamSync(config, serve_http=False)
    with pytest.raises(RuntimeError, match=r"async with StreamSync\(config\) as sync"):
        await sync.status()
    with pytest.raises(RuntimeError, match=r"async with StreamSync\(config\) as sync"):
        await sync.check()


def test_every_per_table_counter_exists_at_zero_from_the_start() -> None:
    """An alert on `increase(streamsync_dead_letters_total[10m]) > 0` sees nothing while the
    series is missing: the first dead letter of a table would create it at 1 and never fire."""
    config = config_of("orders", "customers")
    registry = StreamSync(config, serve_http=False).metrics.registry
    for table in ("orders", "customers"):
        for name in ("dead_letters", "trimmed_shards", "records_read", "documents_indexed"):
            sample = registry.get_sample_value(f"streamsync_{name}_total", {"table": table})
            assert sample == 0.0, (name, table)
        labels = {"operation": "bulk request", "table": table}
        assert registry.get_sample_value("streamsync_retries_total", labels) == 0.0


def test_the_ready_gauge_says_what_readyz_says() -> None:
    """Not ready while starting (/readyz answers 503 "starting"): an alert on
    `streamsync_ready == 0` sees a worker that never gets going, not only one that stops."""
    config = config_of("orders")
    sync = StreamSync(config, serve_http=False)
    assert sync.readiness() == ["starting"]
    assert sync.metrics.registry.get_sample_value("streamsync_ready") == 0.0
