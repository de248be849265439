"""The README's Python examples, by name: each ```python block starts with `# example: NAME`, so
that a test can find the block it runs, and a block no test runs is noticed."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
_NAME = re.compile(r"# example: ([a-z][a-z0-9-]*)")


def python_blocks() -> dict[str, str]:
    """Every ```python block of the README, by the name its first line gives it."""
    named: dict[str, str] = {}
    for block in _BLOCK.findall(README.read_text(encoding="utf-8")):
        first = block.split("\n", 1)[0]
        found = _NAME.fullmatch(first)
        if found is None:
            raise AssertionError(
                f"a README python block starts with {first!r}, not '# example: NAME': "
                "name it, and run it in tests/unit/test_readme.py (or say there which test does)"
            )
        if found[1] in named:
            raise AssertionError(f"two README python blocks are named {found[1]!r}")
        named[found[1]] = block
    return named


def hook_spec() -> str:
    """The hook example's `package.module:function`, as its own comment names it in tables.yaml."""
    found = re.search(r"transform: (\S+)", python_blocks()["hook"])
    if found is None:
        raise AssertionError(
            "the README's hook example names no `transform: package.module:function`"
        )
    return found[1]
