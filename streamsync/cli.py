"""Command-line entry point: `streamsync ...`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from streamsync import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamsync",
        description="Keep Elasticsearch indexes in sync with DynamoDB tables via DynamoDB Streams.",
    )
    parser.add_argument("--version", action="version", version=f"streamsync {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
