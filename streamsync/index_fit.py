"""Whether a table's items fit the index that already exists for them, judged on a sample.

An existing index keeps its mapping (streamsync never alters it), so an item it refuses becomes a
dead letter, and with a strict mapping or a key field of the wrong type that is every item.
`validate` reads the first SAMPLE_ITEMS items of each table whose index exists (one Scan page),
makes them into documents with the table's own transform, and reports each field the index's
mapping would refuse (streamsync.sink.mapping_check) once, with how many sampled items hold it
and one of their ids. An item the transform fails on is left out (that is a dead letter of
another kind, not the mapping's), and so are documents a hook sends to another index. A clean
sample is no proof: rarer shapes may still be refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from streamsync.awsjson import AwsError
from streamsync.config import TableConfig
from streamsync.engine import Engine
from streamsync.sink.cluster import written_rules
from streamsync.sink.engine import SearchError
from streamsync.sink.mapping_check import Clash, clashes
from streamsync.source.client import TableStream
from streamsync.transform.actions import Hook, RecordTransformer, TransformError
from streamsync.transform.records import scanned_record

log = logging.getLogger("streamsync")

SAMPLE_ITEMS = 100
SOURCE = "validate"  # the "shard" of sampled items, should a hook look


@dataclass(frozen=True)
class Sampled:
    """A table whose stream and transform are usable, so its items can be sampled."""

    position: int
    config: TableConfig
    stream: TableStream
    hook: Hook | None


async def misfits(engine: Engine, tables: list[Sampled]) -> list[str]:
    """One line per field of a table's sampled items that its existing index would refuse. A
    sample that cannot be read (no dynamodb:Scan, a mapping the cluster does not show) is a
    warning: `run` needs neither, so it is no reason to fail `validate`."""
    found: list[str] = []
    for table in tables:
        try:
            if await engine.search.index_exists(table.config.index):
                found.extend(await _table_misfits(engine, table))
        except (AwsError, SearchError) as error:
            log.warning(
                "items not checked against the index",
                extra={
                    "table": table.config.table,
                    "index": table.config.index,
                    "error": str(error),
                },
            )
    return found


async def _table_misfits(engine: Engine, table: Sampled) -> list[str]:
    config, stream = table.config, table.stream
    items = await engine.api.sample_items(config.table, SAMPLE_ITEMS)
    transformer = RecordTransformer(config, stream.hash_key, stream.range_key, table.hook)
    key_names = [stream.hash_key] + ([stream.range_key] if stream.range_key else [])
    documents: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        record = scanned_record(item, {k: item[k] for k in key_names if k in item}, time.time())
        try:
            actions = await transformer.actions(record, SOURCE, 0)
        except TransformError:
            continue
        documents.extend(
            (action.doc_id, orjson.loads(action.source))
            for action in actions
            if action.op == "index" and action.index == config.index and action.source
        )
    lines: list[str] = []
    for rules in await written_rules(engine.search, config.index):
        found = clashes(rules, documents)
        keyed = sorted(found, key=lambda clash: clash.path not in key_names)
        lines.extend(_clash_line(table, len(items), clash, key_names) for clash in keyed)
    return lines


def _clash_line(table: Sampled, sampled: int, clash: Clash, key_names: list[str]) -> str:
    index = table.config.index
    where = index if clash.index == index else f"{index} (index {clash.index})"
    kind = "key attribute" if clash.path in key_names else "field"
    refused = (
        f"{clash.count} of the {sampled} sampled items of table {table.config.table} "
        f"(e.g. {clash.example_id}) would be refused"
    )
    if clash.strict:
        fix = "add it to the index's mapping"
        if "." not in clash.path:
            fix += f" or to tables[{table.position}].exclude_fields"
    else:
        fix = "give the index a mapping that takes it (a new index, then backfill)"
        if kind == "field":
            fix += ", or change the value in the table's transform"
    return f"index {where}: {kind} '{clash.path}' {clash.reason}; {refused}; {fix}"
