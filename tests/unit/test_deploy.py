"""The deployment material is valid: Kubernetes manifests against the API schemas (offline, from
the kubernetes-validate package), and the configuration, policy and image files agree with what
streamsync needs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streamsync.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def manifests() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / "kubernetes" / "streamsync.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


@pytest.mark.parametrize(
    "kind", ["ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget"]
)
def test_manifests_validate_against_the_kubernetes_schemas(kind: str) -> None:
    kubernetes_validate.validate(
        manifests()[kind], kubernetes_validate.latest_version(), strict=True
    )


def test_validation_catches_a_broken_manifest() -> None:
    broken = copy.deepcopy(manifests()["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_deployment_is_wired_for_streamsync() -> None:
    found = manifests()
    pod = found["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    config = parse_config(
        found["ConfigMap"]["data"]["tables.yaml"], environ={"STREAMSYNC_ES_API_KEY": "k"}
    )
    assert found["Deployment"]["spec"]["replicas"] >= 2
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert config.observability.listen == "0.0.0.0:9108"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9108"
    assert pod["spec"]["terminationGracePeriodSeconds"] > config.shutdown_grace_seconds
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]
    assert "eks.amazonaws.com/role-arn" in found["ServiceAccount"]["metadata"]["annotations"]
    assert (
        found["PodDisruptionBudget"]["spec"]["selector"] == found["Deployment"]["spec"]["selector"]
    )


def test_the_iam_policy_grants_what_streamsync_calls_and_no_wildcard_actions() -> None:
    policy = json.loads((DEPLOY / "iam-policy.json").read_text())
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert {
        "dynamodb:DescribeStream",
        "dynamodb:GetShardIterator",
        "dynamodb:GetRecords",
        "dynamodb:DescribeTable",
        "dynamodb:Scan",
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
    } <= actions
    assert not any("*" in action for action in actions)
    assert all(s["Resource"] != "*" for s in policy["Statement"])
    (leases,) = [s for s in policy["Statement"] if s["Resource"].endswith("/streamsync-leases")]
    assert {
        "dynamodb:Scan",
        "dynamodb:BatchGetItem",  # the taker's glance at the roster and heartbeats
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
    } <= set(leases["Action"])


def test_the_readme_shows_the_elasticsearch_role_as_shipped() -> None:
    """The role tests/integration/test_permissions.py proves is the one the README tells users
    to create."""
    readme = (DEPLOY.parent / "README.md").read_text()
    shown = re.search(r"^PUT /_security/role/streamsync\n(.*?)^```", readme, re.M | re.S)
    assert shown is not None
    assert json.loads(shown.group(1)) == json.loads(
        (DEPLOY / "elasticsearch-role.json").read_text()
    )


def test_the_image_runs_streamsync_as_a_non_root_user_with_a_health_check() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2, "multi-stage"
    assert re.search(r"^USER 10001$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile
    assert "/healthz" in dockerfile
    assert 'CMD ["streamsync", "run", "--config", "/etc/streamsync/tables.yaml"]' in dockerfile


def test_the_local_try_out_configuration_loads() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    assert set(compose["services"]) == {"elasticsearch", "dynamodb", "streamsync"}
    for service in compose["services"].values():
        assert all(port.startswith("127.0.0.1:") for port in service.get("ports", []))
    config = parse_config((DEPLOY / "local-tables.yaml").read_text())
    assert config.aws.endpoint_url == "http://dynamodb:5000"


def test_the_build_context_holds_only_what_the_image_copies() -> None:
    """Without a .dockerignore the context took .venv and .work (~700 MB after a demo)."""
    ignore = (DEPLOY.parent / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", "nothing by default"
    kept = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {
        name
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for name in line.split()[1:-1]
    }
    assert copied == kept
