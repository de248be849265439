"""Imports point down only (docs/architecture.md): a layer never imports one above it, so pure
cores stay free of I/O and each layer can be read, and tested, without those above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "streamsync"

LEVELS: dict[str, int] = {
    **dict.fromkeys(
        (
            "errors",
            "config",
            "observability",
            "awsjson",
            "assumerole",
            "sigv4",
            "retry",
            "supervise",
            "clock",
            "terminal",
        ),
        0,
    ),
    "transform": 1,
    "leases": 2,
    "sink": 3,
    "source": 4,
    "coordinator": 5,
    **dict.fromkeys(
        (
            "status",
            "backfill",
            "verify",
            "replay",
            "deadletters",
            "checks",
            "index_fit",
            "engine",
            "streaming",
            "commands",
            "reindex",
            "testing",
        ),
        6,
    ),
    "app": 7,
    **dict.fromkeys(("cli", "__init__", "__main__"), 8),
}


def part_of(dotted: str) -> str:
    """The layer a `streamsync.x.y` module belongs to: its first component."""
    return dotted.split(".")[1] if "." in dotted else "__init__"


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "streamsync":  # a module of the package, or a name it exports
                names.update(
                    f"streamsync.{a.name}" if a.name in LEVELS else "streamsync" for a in node.names
                )
            elif node.module.startswith("streamsync."):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("streamsync."))
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    unknown = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES} - set(LEVELS)
    assert not unknown, f"give these a level in LEVELS and docs/architecture.md: {unknown}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    upward = sorted(name for name in imports(path) if LEVELS[part_of(name)] > LEVELS[layer])
    assert not upward, f"{layer} (level {LEVELS[layer]}) imports from above: {upward}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from streamsync.sink.bulk import BulkIndexer\nimport streamsync.leases\n")
    assert imports(module) == {"streamsync.sink.bulk", "streamsync.leases"}
    assert LEVELS[part_of("streamsync.sink.bulk")] > LEVELS["transform"]
