from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from streamsync import __version__
from streamsync.cli import build_parser
from streamsync.observability.logs import configure_logging


def test_version_from_the_console_script() -> None:
    script = Path(sys.executable).parent / "streamsync"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"streamsync {__version__}"


def test_log_levels_are_taken_in_either_case_and_configure_logging() -> None:
    """`--log-level debug` used to crash at start (`ValueError: Unknown level: 'debug'`)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        for given, expected in (("debug", logging.DEBUG), ("Warning", logging.WARNING)):
            args = build_parser().parse_args(["run", "--config", "t.yaml", "--log-level", given])
            configure_logging("json", args.log_level)
            assert root.level == expected
    finally:
        root.handlers[:], root.level = handlers, level


def test_an_unknown_log_level_is_one_line_naming_the_choices() -> None:
    script = Path(sys.executable).parent / "streamsync"
    result = subprocess.run(
        [script, "run", "--config", "t.yaml", "--log-level", "loud"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert (
        "invalid choice: 'LOUD' (choose from 'DEBUG', 'INFO', 'WARNING', 'ERROR')" in result.stderr
    )


def test_reindex_takes_one_table_and_optionally_the_new_index_name() -> None:
    args = build_parser().parse_args(["reindex", "--config", "t.yaml", "--table", "orders"])
    assert (args.table, args.index) == ("orders", None)
    args = build_parser().parse_args(
        ["reindex", "--config", "t.yaml", "--table", "orders", "--index", "orders-v2"]
    )
    assert args.index == "orders-v2"
