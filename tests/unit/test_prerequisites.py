"""A missing prerequisite stops the setup scripts with one line naming it and how to get it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.nodes import opensearch_versions

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


@pytest.mark.parametrize("how", ["--version", "OPENSEARCH_VERSION"])
def test_an_opensearch_version_that_is_not_pinned_is_named(how: str) -> None:
    args = ["scripts/opensearch.sh", "start", "prereq-check", "0"]
    env: dict[str, str] = {}
    if how == "--version":
        args += ["--version", "1.0.0"]
    else:
        env["OPENSEARCH_VERSION"] = "1.0.0"

    result = run(args, env)

    assert_one_clear_line(result, "OpenSearch 1.0.0 is not pinned", *opensearch_versions())


def test_a_jdk_outside_the_range_opensearch_2_needs_is_named(tmp_path: Path) -> None:
    version = next((v for v in opensearch_versions() if v.startswith("2.")), None)
    if version is None:
        pytest.skip("no OpenSearch 2.x is pinned")
    jdk = tmp_path / "jdk-25"
    (jdk / "bin").mkdir(parents=True)
    (jdk / "bin" / "java").write_text("#!/bin/sh\nexit 1\n")
    (jdk / "bin" / "java").chmod(0o755)
    (jdk / "release").write_text('JAVA_VERSION="25.0.1"\n')

    result = run(
        ["scripts/opensearch.sh", "start", "prereq-check", "0", "--version", version],
        {"OPENSEARCH_JAVA_HOME": str(jdk)},
    )

    assert_one_clear_line(result, f"OpenSearch {version} needs a JDK 11 to 23", "Java 25")


def test_an_old_python_is_named(tmp_path: Path) -> None:
    old_python = tmp_path / "python3.9"
    old_python.write_text("#!/bin/sh\nexit 1\n")
    old_python.chmod(0o755)
    result = run(["scripts/setup-venv.sh"], {"PYTHON": str(old_python)})
    assert_one_clear_line(result, "Python 3.11 or newer is required")


def test_a_missing_python_is_named() -> None:
    result = run(["scripts/setup-venv.sh"], {"PYTHON": "python3-that-does-not-exist"})
    assert_one_clear_line(result, "python3-that-does-not-exist", "apt install python3")
