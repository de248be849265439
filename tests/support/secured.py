"""The suite's secured Elasticsearch node: x-pack security, HTTPS with a CA made for the run,
and file-realm users: the administrator, a user with streamsync's documented role, and one that
may only look at the cluster. One node serves every test that needs it (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from streamsync.config import parse_config
from streamsync.sink.cluster import cluster_problems, connect
from tests.support import nodes
from tests.support.search import Target

WRITER_PASSWORD = "writer-" + secrets.token_urlsafe(12)
READER_PASSWORD = "reader-" + secrets.token_urlsafe(12)

ROLES = {
    # streamsync's role (deploy/elasticsearch-role.json) on any index name, for tests that use
    # fresh ones; tests/integration/test_permissions.py proves the shipped role itself.
    "streamsync_writer": {
        "cluster": ["monitor", "manage_index_templates"],
        "indices": [
            {
                "names": ["*"],
                "privileges": [
                    "create_index",
                    "view_index_metadata",
                    "read",
                    "write",
                    "maintenance",
                ],
            },
            {"names": ["streamsync-tombstones-*"], "privileges": ["delete_index"]},
        ],
    },
    # Can log in and see the cluster, but not touch an index.
    "monitor_only": {"cluster": ["monitor"]},
}


def node_name() -> str:
    return f"{os.environ.get('STREAMSYNC_TEST_ES_NODE', 'test')}-secured"


def start(certs: Path) -> nodes.NodeInfo:
    """Writes the certificates, roles and users into `certs` and starts the node."""
    nodes.make_test_certs(certs, [])
    (certs / "roles.yml").write_text(yaml.safe_dump(ROLES))
    (certs / "users").write_text(
        f"streamsync:{WRITER_PASSWORD}:streamsync_writer\nreader:{READER_PASSWORD}:monitor_only\n"
    )
    return nodes.start_node("elasticsearch-secure", node_name(), cert_dir=certs)


def stop() -> None:
    nodes.stop_node("elasticsearch-secure", node_name())


def target_for(secured: tuple[nodes.NodeInfo, Path], **section: Any) -> Target:
    """The secured node as a target whose configuration section holds `section` (streamsync's
    login and TLS options); the probe logs in as the administrator."""
    node, certs = secured
    admin = (nodes.ADMIN_USER, nodes.admin_password(certs))
    return Target("elasticsearch", node.version, node.url, section, str(certs / "ca.pem"), admin)


def config_for(target: Target, tables: list[dict[str, Any]] | None = None) -> Any:
    document = {
        "aws": {"region": "us-east-1"},
        **target.section(),
        "tables": tables or [{"table": "orders", "index": "orders"}],
    }
    return parse_config(json.dumps(document), "test", environ={})


async def problems_with(target: Target) -> list[str]:
    """What `validate` says of the cluster for a configuration of table `orders` into index
    `orders` (dead letters in the default index)."""
    config = config_for(target)
    engine = connect(config, None)
    try:
        return await cluster_problems(engine, config)
    finally:
        await engine.close()
