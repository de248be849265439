"""The deployment material as the tests read it: the compose file, and what the image's ENV sets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def image_environment() -> dict[str, str]:
    """The variables the image's ENV sets (deploy/Dockerfile, its runtime stage)."""
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = dockerfile.rsplit("\nFROM ", 1)[1]
    found: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", runtime, re.M):
        found.update(pair.split("=", 1) for pair in line.split())
    return found


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    return loaded
