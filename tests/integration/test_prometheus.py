"""The alert rules and the dashboard against a real Prometheus (Debian's package, fetched on first
use by tests/support/prometheus.py): promtool checks the rules and runs their tests, and a
Prometheus server scrapes a running worker, evaluates the rules and answers the dashboard's
queries."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.support import aws
from tests.support.pipeline import eventually, make_config, pk, running, wait_until_equal
from tests.support.prometheus import (
    RULE_TESTS,
    RULES,
    Prometheus,
    dashboard_queries,
    promtool,
    rules,
)
from tests.support.search import Probe, Target


def test_promtool_checks_the_rules_and_runs_their_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rule_tests_catch_a_rule_that_no_longer_fires(tmp_path: Path) -> None:
    """The tests are not true of any rules: a trimmed shard alert that needs two trims fails."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    broken = RULES.read_text().replace(
        "increase(streamsync_trimmed_shards_total[1h])) > 0",
        "increase(streamsync_trimmed_shards_total[1h])) > 1",
    )
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0
    assert "StreamsyncTrimmedShard" in tested.stdout + tested.stderr


def as_query(expr: str, table: str) -> str:
    """A dashboard query as Grafana sends it, its variables filled in (`table`: letters, digits
    and dashes, a regular expression matching itself)."""
    assert re.fullmatch(r"[\w-]+", table)
    expr = expr.replace("$__rate_interval", "1m").replace("$job", "streamsync")
    return expr.replace("$table", table)


async def test_prometheus_scrapes_a_worker_and_loads_the_rules(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    """A worker streams two tables (one idle) to a real Elasticsearch; its target index refuses
    writes for a while (a write block: every item 403, retried). Prometheus, scraping it every
    second, shows the documents indexed per table, the idle table's counters at 0, the bulk
    retries under the real table's name and the StreamsyncWritesRetrying alert pending for it;
    every rule loads and evaluates without error and every dashboard query runs."""
    table, idle = aws.unique_name("scraped"), aws.unique_name("idle")
    for name in (table, idle):
        await aws.create_stream_table(clients.dynamodb, name)
    config = make_config(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index_name}, {"table": idle, "index": f"{index_name}-idle"}],
    )
    async with running(config) as sync:
        assert sync.http is not None
        assert sync.http.port is not None
        worker = f"127.0.0.1:{sync.http.port}"
        async with Prometheus(tmp_path, [worker], [RULES]) as prometheus:
            for i in range(5):
                await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})
            await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)
            blocked = {"index": {"blocks": {"write": True}}}
            await probe.request("PUT", f"/{index_name}/_settings", blocked)
            try:
                for i in range(5, 10):
                    await clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}})

                async def pending() -> bool:
                    alerts = (await prometheus.api("alerts"))["alerts"]
                    return any(
                        alert["labels"]["alertname"] == "StreamsyncWritesRetrying"
                        and alert["labels"].get("table") == table
                        for alert in alerts
                    )

                await eventually(pending, within=60)
            finally:
                unblocked = {"index": {"blocks": {"write": None}}}
                await probe.request("PUT", f"/{index_name}/_settings", unblocked)
            await wait_until_equal(clients.dynamodb, probe, table, index_name, pk)

            async def scraped_all() -> bool:
                indexed = await prometheus.query("streamsync_documents_indexed_total")
                return indexed.get((("table", table),)) == 10

            await eventually(scraped_all, within=30)
            for counter in ("records_read", "documents_indexed"):
                found = await prometheus.query(f"streamsync_{counter}_total")
                assert found == {(("table", table),): 10, (("table", idle),): 0}, counter
            for counter in ("dead_letters", "trimmed_shards", "documents_stale"):
                found = await prometheus.query(f"streamsync_{counter}_total")
                assert found == {(("table", table),): 0, (("table", idle),): 0}, counter
            retries = await prometheus.query('streamsync_retries_total{operation="bulk request"}')
            # Both tables' series exist (at 0 from start-up); only the blocked one retried.
            assert set(retries) == {
                (("operation", "bulk request"), ("table", table)),
                (("operation", "bulk request"), ("table", idle)),
            }
            assert retries[(("operation", "bulk request"), ("table", table))] >= 1
            assert retries[(("operation", "bulk request"), ("table", idle))] == 0
            assert await prometheus.query('up{job="streamsync"}') == {(): 1}
            assert await prometheus.query("streamsync_ready") == {(): 1}

            async def both_leases_scraped() -> bool:  # the gauge as of the last scrape, 1 s old
                return await prometheus.query("streamsync_leases_held") == {(): 2}

            await eventually(both_leases_scraped, within=30)

            async def evaluated() -> bool:
                groups = (await prometheus.api("rules"))["groups"]
                return all(
                    not rule["lastEvaluation"].startswith("0001")
                    for group in groups
                    for rule in group["rules"]
                )

            await eventually(evaluated, within=30)
            (group,) = (await prometheus.api("rules"))["groups"]
            assert [rule["name"] for rule in group["rules"]] == [r["alert"] for r in rules()]
            assert all(rule["health"] == "ok" for rule in group["rules"]), group["rules"]
            assert all(not rule.get("lastError") for rule in group["rules"])
            failed = []
            for where, expr in dashboard_queries():
                try:
                    answer = await prometheus.api("query", query=as_query(expr, table))
                except RuntimeError as error:
                    failed.append(f"{where}: {error}")
                    continue
                if where.startswith("panel 'Throughput"):
                    assert answer["result"], f"{where} shows the table"
            assert failed == []
