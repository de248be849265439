"""docs/guarantees.md names, for each promise, the tests that prove it: every test it names
must exist, or the document promises something nothing checks any more."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "guarantees.md"
# `test_x.py::test_y` (integration unless a path says otherwise), `::test_z` (same file as the
# previous one), and `tests/unit/test_x.py` alone.
REFERENCE = re.compile(r"`(?P<file>(?:tests/\w+/)?test_\w+\.py)?(?:::(?P<test>\w+))?")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_the_guarantees_name_exists() -> None:
    named: list[tuple[Path, str | None]] = []
    for line in DOC.read_text().splitlines():
        current: Path | None = None
        for found in REFERENCE.finditer(line):
            if found["file"]:
                name = found["file"]
                current = ROOT / name if "/" in name else ROOT / "tests" / "integration" / name
            if current is not None and (found["file"] or found["test"]):
                named.append((current, found["test"]))
    assert len(named) > 40
    missing = [
        f"{path.relative_to(ROOT)}::{test}" if test else str(path.relative_to(ROOT))
        for path, test in named
        if not path.exists() or (test is not None and test not in _tests_in(path))
    ]
    assert missing == []
