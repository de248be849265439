"""The test suite's Elasticsearch node: its URL, version, and control over its process."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "elasticsearch.sh"


def es_url() -> str:
    url = os.environ.get("STREAMSYNC_TEST_ES_URL")
    if not url:
        raise RuntimeError(
            "STREAMSYNC_TEST_ES_URL is not set: run the suite with `make test`, which starts a "
            "real Elasticsearch node for it (or start one with scripts/elasticsearch.sh and "
            "export its URL)"
        )
    return url


def es_version(url: str) -> str:
    with urllib.request.urlopen(
        f"{url}/_nodes/_local?filter_path=nodes.*.version", timeout=10
    ) as r:
        nodes = json.load(r)["nodes"]
    return str(next(iter(nodes.values()))["version"])


class EsNode:
    """Stops and restarts the test node (same port, same data), for outage tests."""

    def __init__(self, name: str) -> None:
        self.name = name

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop", self.name], check=True, capture_output=True)

    def start(self, port: int) -> None:
        subprocess.run(
            [str(SCRIPT), "start", self.name, str(port)], check=True, capture_output=True
        )
