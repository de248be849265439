"""The deployment material is valid: Kubernetes manifests against the API schemas (offline, from
the kubernetes-validate package), and the configuration, policy and image files agree with what
streamsync needs."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streamsync.config import Config, parse_config
from streamsync.errors import ConfigError
from tests.support.deploy import DEPLOY, compose, image_environment


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of deploy/kubernetes/, by kind."""
    return {
        doc["kind"]: doc
        for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    }


def container_config() -> Config:
    """tables.yaml of the ConfigMap as the Deployment's container reads it: the image's ENV, the
    Deployment's env (its Secret's values)."""
    found = manifests()
    container = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    secret = found["Secret"]["stringData"]
    env = dict(image_environment())
    for variable in container["env"]:
        env[variable["name"]] = secret[variable["valueFrom"]["secretKeyRef"]["key"]]
    return parse_config(found["ConfigMap"]["data"]["tables.yaml"], environ=env)


@pytest.mark.parametrize(
    "kind",
    ["ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Secret"],
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
    config = container_config()
    assert found["Deployment"]["spec"]["replicas"] >= 2
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["spec"]["terminationGracePeriodSeconds"] > config.shutdown_grace_seconds
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]
    assert "eks.amazonaws.com/role-arn" in found["ServiceAccount"]["metadata"]["annotations"]
    assert (
        found["PodDisruptionBudget"]["spec"]["selector"] == found["Deployment"]["spec"]["selector"]
    )


def test_prometheus_scrapes_every_pod_through_the_service_monitor() -> None:
    """The ServiceMonitor selects the Service, whose named port is the container's metrics
    port; the job is the Service's name, the one the alert rules expect; not-ready pods stay
    listed, so their streamsync_ready 0 is seen."""
    found = manifests()
    service, deployment = found["Service"], found["Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    (monitor,) = yaml.safe_load_all((DEPLOY / "kubernetes" / "servicemonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    (container_port,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert container_port["containerPort"] == port["port"] == 9108
    assert service["spec"]["publishNotReadyAddresses"] is True
    rules = (DEPLOY / "prometheus" / "alerts.yaml").read_text()
    assert f'up{{job="{service["metadata"]["name"]}"}}' in rules


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
    services = compose()["services"]
    assert set(services) == {"elasticsearch", "dynamodb", "create-table", "streamsync"}
    for service in services.values():
        assert all(port.startswith("127.0.0.1:") for port in service.get("ports", []))
    config = parse_config((DEPLOY / "local-tables.yaml").read_text(), environ=image_environment())
    assert config.aws.endpoint_url == "http://dynamodb:5000"
    assert config.observability.listen == "0.0.0.0:9108"
    assert services["streamsync"]["ports"] == ["127.0.0.1:9108:9108"]


def test_the_try_out_creates_its_table_before_streamsync_starts_and_restarts_on_failure() -> None:
    """streamsync refuses to start on a missing table: the try-out used to leave creating it to
    the user, after streamsync had already exited."""
    services = compose()["services"]
    streamsync, create = services["streamsync"], services["create-table"]
    assert streamsync["depends_on"]["create-table"] == {
        "condition": "service_completed_successfully"
    }
    assert streamsync["depends_on"]["elasticsearch"] == {"condition": "service_healthy"}
    assert streamsync["restart"] in ("on-failure", "unless-stopped")
    assert create["restart"] == "no", "a one-shot: done once it created the table"
    assert create["depends_on"] == {"dynamodb": {"condition": "service_started"}}
    assert create["image"] == streamsync["image"], "no image to download beside streamsync's"
    assert create["build"] == streamsync["build"]
    [table] = parse_config((DEPLOY / "local-tables.yaml").read_text()).tables
    script = create["entrypoint"][-1]
    assert f'TableName="{table.table}"' in script
    assert "NEW_AND_OLD_IMAGES" in script


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


def test_the_probes_reach_the_address_the_container_listens_on() -> None:
    """The library listens on loopback by default, which kubelet's probes (and a scraper) cannot
    reach in a pod: the image makes 0.0.0.0:9108 the default, and the probes, the scrape
    annotation and the image's health check go to its port."""
    found = manifests()
    pod = found["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    listen = container_config().observability.listen
    assert listen is not None
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0"
    ports = {entry["name"]: entry["containerPort"] for entry in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        target = container[probe]["httpGet"]["port"]
        assert ports.get(target, target) == int(port), probe
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == port
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"http://127.0.0.1:{port}/healthz" in dockerfile.partition("HEALTHCHECK")[2]
    assert f"EXPOSE {port}" in dockerfile


def test_the_library_default_stays_on_loopback_outside_the_image() -> None:
    tables = manifests()["ConfigMap"]["data"]["tables.yaml"]
    assert parse_config(tables, environ={}).observability.listen == "127.0.0.1:9108"
    named = tables + "observability: {listen: 127.0.0.1:9000}\n"
    assert parse_config(named, environ=image_environment()).observability.listen == (
        "127.0.0.1:9000"
    ), "the file's own address wins over the image's"


def test_a_bad_listen_default_names_the_variable() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(
            manifests()["ConfigMap"]["data"]["tables.yaml"],
            "tables.yaml",
            environ={"STREAMSYNC_LISTEN": "9108"},
        )
    assert str(refused.value) == (
        "tables.yaml: observability.listen: STREAMSYNC_LISTEN=9108: must be host:port, like "
        "0.0.0.0:9108 (port 0: any free port)"
    )


def test_the_elasticsearch_credentials_come_from_the_secret() -> None:
    found = manifests()
    container = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    references = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert references, "the Deployment reads the credentials from a Secret"
    assert set(references) <= {
        "STREAMSYNC_ES_API_KEY",
        "STREAMSYNC_ES_USERNAME",
        "STREAMSYNC_ES_PASSWORD",
    }
    secret = found["Secret"]
    for reference in references.values():
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"]
    cluster = container_config().elasticsearch
    assert cluster is not None
    assert cluster.api_key is not None
    assert cluster.api_key.get_secret_value() == secret["stringData"]["api-key"]
    assert "api-key" not in found["ConfigMap"]["data"]["tables.yaml"]
