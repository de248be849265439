"""A missing prerequisite stops the setup scripts with one line naming it and how to get it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT, timeout=60
    )


@pytest.fixture
def path_without_maven(tmp_path: Path) -> str:
    """A PATH holding every command of this machine except mvn."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for exe in Path(directory).iterdir():
            target = bin_dir / exe.name
            if exe.name != "mvn" and not target.exists():
                target.symlink_to(exe)
    return str(bin_dir)


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("streamsync: ")
    for needle in needles:
        assert needle in last


def test_missing_maven_is_named(tmp_path: Path, path_without_maven: str) -> None:
    result = run(
        ["scripts/elasticsearch.sh", "fetch"],
        {"PATH": path_without_maven, "M2_REPO": str(tmp_path / "empty-m2")},
    )
    assert_one_clear_line(result, "'mvn' is required", "apt install maven")


def test_a_jdk_that_is_not_there_is_named(tmp_path: Path) -> None:
    result = run(
        ["scripts/elasticsearch.sh", "start", "prereq-check", "0"],
        {"ES_JAVA_HOME": str(tmp_path / "no-jdk")},
    )
    assert_one_clear_line(result, "ES_JAVA_HOME", "has no bin/java")


def test_an_old_python_is_named(tmp_path: Path) -> None:
    old_python = tmp_path / "python3.9"
    old_python.write_text("#!/bin/sh\nexit 1\n")
    old_python.chmod(0o755)
    result = run(["scripts/setup-venv.sh"], {"PYTHON": str(old_python)})
    assert_one_clear_line(result, "Python 3.11 or newer is required")


def test_a_missing_python_is_named() -> None:
    result = run(["scripts/setup-venv.sh"], {"PYTHON": "python3-that-does-not-exist"})
    assert_one_clear_line(result, "python3-that-does-not-exist", "apt install python3")
