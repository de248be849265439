"""The Grafana dashboard and the alert rules stay true to what streamsync exposes: every metric
their PromQL names is one streamsync's registry has (a renamed metric would leave a panel empty
and an alert silent, with no error anywhere), and every alert has a promtool case where it fires
and one where it does not. promtool runs them, and a real Prometheus loads them while scraping a
worker, in tests/integration/test_prometheus.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from streamsync.observability.metrics import Metrics
from tests.support.prometheus import RULE_TESTS, dashboard_queries, rules

# What Prometheus itself adds for every target: whether its scrape worked.
SCRAPE_SERIES = {"up"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}


def exposed() -> set[str]:
    """The series names streamsync's registry exposes, labelled families included (those have
    no sample until a label value is used, so their names come from the family's type)."""
    metrics = Metrics()
    metrics.start_at_zero(["orders"])
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in SUFFIXES[family.type]
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside strings, label
    matchers, ranges and label lists, that are not functions or operators."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    found = re.findall(r"\b[A-Za-z_][A-Za-z0-9_:]*\b(?!\s*\()", expr)
    return {name for name in found if name.lower() not in KEYWORDS}


def test_the_name_parser_finds_the_metrics_of_an_expression_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (table, le) (rate(streamsync_end_to_end_lag_seconds_"
        'bucket{table=~"$table", job="x"}[5m]))) > 60 and on (job) up{job="x"} == bool 1'
    )
    assert metric_names(expr) == {"streamsync_end_to_end_lag_seconds_bucket", "up"}
    assert "streamsync_dead_letter_total" not in exposed(), "a misspelling would be caught"
    assert {"streamsync_dead_letters_total", "streamsync_ready"} <= exposed()


@pytest.mark.parametrize(("where", "expr"), list(dashboard_queries()))
def test_every_dashboard_query_names_only_exposed_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr}"
    assert names <= exposed() | SCRAPE_SERIES, f"{where}: {names - exposed()} not exposed"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_names_only_exposed_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    assert names <= exposed() | SCRAPE_SERIES, f"{names - exposed()} not exposed"


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    alerts = {rule["alert"] for rule in rules()}
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == alerts
    assert {case["alertname"] for case in cases if not case["exp_alerts"]} == alerts


def test_the_dashboard_covers_every_alert() -> None:
    """Each alert's metrics have a panel to look at once it fires."""
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    for rule in rules():
        assert metric_names(rule["expr"]) <= shown, rule["alert"]
