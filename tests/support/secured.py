"""The suite's secured Elasticsearch node: x-pack security, HTTPS with a CA made for the run,
and file-realm users: the administrator, a user with streamsync's documented role, and one that
may only look at the cluster. One node serves every test that needs it (tests/conftest.py)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml

from tests.support import nodes

WRITER_PASSWORD = "writer-" + secrets.token_urlsafe(12)
READER_PASSWORD = "reader-" + secrets.token_urlsafe(12)

ROLES = {
    # What the README lists under 'Secured clusters': streamsync's own role.
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
