"""Command line: `streamsync run | validate | backfill | verify | reindex | status | dlq ...
--config tables.yaml`.

Every failure a user can fix ends as one line per problem on stderr and a non-zero exit status
(2 for a bad configuration file, 1 for anything found while checking or running).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from streamsync import __version__
from streamsync.app import StreamSync
from streamsync.config import Config, load_config
from streamsync.deadletters import render_deleted, render_letter, render_list
from streamsync.errors import ConfigError, StreamsyncError
from streamsync.observability.logs import configure_logging
from streamsync.reindex import ReindexReport
from streamsync.replay import ReplayReport
from streamsync.sink.letterfilter import LetterFilter, parse_duration
from streamsync.status import render as render_status
from streamsync.verify import VerifyReport

log = logging.getLogger("streamsync")

EXIT_PROBLEMS = 1
EXIT_CONFIG = 2

T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamsync",
        description="Keep Elasticsearch indexes in sync with DynamoDB tables via DynamoDB Streams.",
    )
    parser.add_argument("--version", action="version", version=f"streamsync {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in (
        ("run", "stream changes from the configured tables into Elasticsearch until stopped"),
        (
            "validate",
            "check the configuration, the tables, their streams, the cluster and whether a "
            "sample of each table's items fits its existing index",
        ),
    ):
        _common(commands.add_parser(name, help=summary, description=summary))
    summary = "index the items the tables already hold (parallel Scan), resumable"
    backfill = _common(commands.add_parser("backfill", help=summary, description=summary))
    backfill.add_argument(
        "--table", action="append", help="only this table (repeatable; default: all)"
    )
    backfill.add_argument("--segments", type=int, default=4, help="parallel Scan segments")
    backfill.add_argument("--restart", action="store_true", help="start over, not resume")
    backfill.add_argument(
        "--rate-limit", type=float, default=None, help="items read per second, at most"
    )
    summary = "compare the tables with their indexes; exit 1 when they drifted apart"
    verify = _common(commands.add_parser("verify", help=summary, description=summary))
    verify.add_argument("--table", action="append", help="only this table (repeatable)")
    verify.add_argument("--repair", action="store_true", help="fix what differs")
    verify.add_argument("--json", action="store_true", help="one JSON document, for machines")
    summary = (
        "build a new index for a table with its current settings and mappings, beside the "
        "running workers, verify it, then move the table's alias to it"
    )
    reindex = _common(commands.add_parser("reindex", help=summary, description=summary))
    reindex.add_argument("--table", required=True, help="the DynamoDB table whose index to rebuild")
    reindex.add_argument(
        "--index", default=None, help="the new index's name (default: the alias and the UTC time)"
    )
    summary = "show the leases of the configured tables: shard, owner, state, checkpoint, lag"
    status = _common(commands.add_parser("status", help=summary, description=summary))
    status.add_argument("--json", action="store_true", help="one JSON document, for machines")
    dlq = commands.add_parser("dlq", help="dead letters").add_subparsers(
        dest="dlq_command", required=True, metavar="DLQ_COMMAND"
    )
    summary = "re-drive dead letters through the current transforms, once their cause is fixed"
    replay = _common(dlq.add_parser("replay", help=summary, description=summary))
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="read each item and run the transform; index nothing, remove nothing",
    )
    replay.add_argument(
        "--keep-superseded",
        action="store_true",
        help="leave the letters a newer indexed version superseded (default: remove them)",
    )
    summary = "one line per dead letter: id, table, document, age, reason, superseded"
    listing = _letter_filters(_common(dlq.add_parser("list", help=summary, description=summary)))
    listing.add_argument("--json", action="store_true", help="one JSON document, for machines")
    summary = "one dead letter in full: where it came from, its error and its record"
    show = _common(dlq.add_parser("show", help=summary, description=summary))
    show.add_argument("id", help="its id, or the beginning of it that `dlq list` shows")
    show.add_argument("--json", action="store_true", help="one JSON document, for machines")
    summary = "delete dead letters (every stored copy): by id, by filters, or --all"
    delete = _letter_filters(_common(dlq.add_parser("delete", help=summary, description=summary)))
    delete.add_argument("ids", nargs="*", metavar="ID", help="ids, or their beginnings")
    delete.add_argument("--all", action="store_true", help="every dead letter")
    delete.add_argument("--json", action="store_true", help="one JSON document, for machines")
    return parser


def _letter_filters(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    command.add_argument("--table", action="append", help="only this table's (repeatable)")
    command.add_argument(
        "--error", metavar="TEXT", help="only those whose reason or error contains TEXT (any case)"
    )
    command.add_argument(
        "--older-than",
        metavar="DURATION",
        type=_duration,
        help="only those stored longer ago than DURATION: 90s, 30m, 12h, 7d, 2w",
    )
    command.add_argument(
        "--superseded",
        action="store_true",
        help="only those whose document is indexed (or deleted) at a version at least theirs",
    )
    return command


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _chosen_by(args: argparse.Namespace) -> LetterFilter:
    return LetterFilter(
        tables=frozenset(args.table or ()),
        error=args.error,
        older_than=args.older_than,
        superseded=args.superseded,
    )


def _common(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    command.add_argument("--config", required=True, help="the tables.yaml file")
    command.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="text" if sys.stderr.isatty() else "json",
        help="json (default when not on a terminal) or text",
    )
    command.add_argument(
        "--log-level",
        type=str.upper,  # `debug` as well as `DEBUG`: logging itself knows only the latter
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="debug, info (default), warning or error",
    )
    return command


def _fail(lines: str, status: int) -> int:
    for line in lines.splitlines():
        print(f"streamsync: {line}", file=sys.stderr)
    return status


def _tune_gc() -> None:
    """A busy worker allocates a tree of dicts for every record (thousands a second) while it
    holds botocore's service models and the records in flight. With the default thresholds the
    cyclic collector scans all of that many times a second: a third of the worker's CPU in
    `make bench`. Records are freed by reference counting; the collector only has to find the
    rare cycles, so it may run far less often, and what exists after start-up need never be
    scanned again. Only the command does this: an embedding service owns its process's GC."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _run(config: Config) -> None:
    async with StreamSync(config) as sync:
        _tune_gc()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, sync.stop)
        await sync.run()


async def _validate(config: Config) -> list[str]:
    async with StreamSync(config) as sync:
        return await sync.check()


async def _backfill(config: Config, args: argparse.Namespace) -> dict[str, int]:
    async with StreamSync(config) as sync:
        _tune_gc()
        return await sync.backfill(args.table, args.segments, args.restart, args.rate_limit)


async def _verify(config: Config, args: argparse.Namespace) -> list[VerifyReport]:
    async with StreamSync(config) as sync:
        return await sync.verify(args.table, args.repair)


async def _reindex(config: Config, args: argparse.Namespace) -> ReindexReport:
    async with StreamSync(config) as sync:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, sync.stop)
        return await sync.reindex(args.table, args.index)


async def _status(config: Config) -> list[dict[str, Any]]:
    async with StreamSync(config) as sync:
        return await sync.status()


async def _using(config: Config, work: Callable[[StreamSync], Awaitable[T]]) -> T:
    async with StreamSync(config) as sync:
        return await work(sync)


def _dead_letters(config: Config, args: argparse.Namespace) -> int:
    if args.dlq_command == "replay":
        report: ReplayReport = asyncio.run(
            _using(
                config, lambda sync: sync.replay_dead_letters(args.dry_run, args.keep_superseded)
            )
        )
        print(report.summary(args.dry_run))
        if args.dry_run:
            print(report.checked())
        return EXIT_PROBLEMS if report.still_failing else 0
    if args.dlq_command == "show":
        entry = asyncio.run(_using(config, lambda sync: sync.dead_letter(args.id)))
        now = time.time()
        print(json.dumps(entry.as_json(now), indent=2) if args.json else render_letter(entry, now))
        return 0
    chosen = _chosen_by(args)
    if args.dlq_command == "list":
        entries = asyncio.run(_using(config, lambda sync: sync.dead_letters(None, chosen)))
    else:
        entries = asyncio.run(
            _using(config, lambda sync: sync.delete_dead_letters(args.ids, chosen))
        )
    now = time.time()
    if args.json:
        print(json.dumps([entry.as_json(now) for entry in entries], indent=2))
    elif args.dlq_command == "list":
        print(render_list(entries, now))
    else:
        print(render_deleted(entries))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "dlq" and args.dlq_command == "delete":
        narrowed = bool(args.ids) or _chosen_by(args).narrows
        if narrowed == args.all:
            parser.error(
                "dlq delete: name the letters by ID or filters (--table, --error, "
                "--older-than, --superseded), or give --all (not both)"
            )
    configure_logging(args.log_format, args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return _fail(str(error), EXIT_CONFIG)
    try:
        if args.command == "validate":
            problems = asyncio.run(_validate(config))
            if problems:
                return _fail("\n".join(problems), EXIT_PROBLEMS)
            print(f"{args.config}: ok ({len(config.tables)} table(s), cluster reachable)")
            return 0
        if args.command == "backfill":
            counts = asyncio.run(_backfill(config, args))
            for table, count in counts.items():
                print(f"backfill {table}: {count} items indexed")
            return 0
        if args.command == "verify":
            reports = asyncio.run(_verify(config, args))
            if args.json:
                print(json.dumps([{**vars(r), "drift": r.drift} for r in reports], indent=2))
            else:
                print("\n".join(report.summary() for report in reports))
            drifted = any(r.drift for r in reports)
            return EXIT_PROBLEMS if drifted and not args.repair else 0
        if args.command == "reindex":
            rebuilt = asyncio.run(_reindex(config, args))
            print(rebuilt.summary())
            return 0 if rebuilt.swapped else EXIT_PROBLEMS
        if args.command == "status":
            entries = asyncio.run(_status(config))
            print(json.dumps(entries, indent=2) if args.json else render_status(entries))
            return 0
        if args.command == "dlq":
            return _dead_letters(config, args)
        asyncio.run(_run(config))
    except StreamsyncError as error:
        return _fail(str(error), EXIT_PROBLEMS)
    return 0
