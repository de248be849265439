"""`streamsync dlq list | show | delete`, and superseded letters in `dlq replay`, as processes
against the Elasticsearch node and moto: letters made by the running pipeline (a mapping
conflict, an oversized document, a deleted item), kept in the index and the file."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamsync.app import StreamSync
from streamsync.errors import StreamsyncError
from streamsync.sink.letterfilter import LetterFilter
from tests.integration.test_safety import dead_letter_lines, put, tombstones_of
from tests.support import aws
from tests.support.nodes import ROOT
from tests.support.pipeline import STREAMSYNC, config_document, config_from, eventually, running
from tests.support.search import Probe, Target

DAY = 86400


async def dlq(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`streamsync dlq ARGS --config CONFIG`, run to its end."""
    return await asyncio.to_thread(
        subprocess.run,
        [STREAMSYNC, "dlq", *args, "--config", str(config), "--log-format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )


async def listed(config: Path, *filters: str) -> list[dict[str, Any]]:
    """`dlq list FILTERS --json`: the letters, oldest first."""
    done = await dlq(config, "list", *filters, "--json")
    assert done.returncode == 0, done.stderr
    entries: list[dict[str, Any]] = orjson.loads(done.stdout)
    return entries


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


async def age_letter(probe: Probe, index: str, file: Path, doc_id: str, seconds: float) -> None:
    """Makes the letter of `doc_id` `seconds` older, in both places it is kept (as if it had
    been stored then)."""
    for letter_id, letter in (await probe.documents(index)).items():
        if letter["doc_id"] == doc_id:
            letter["time"] -= seconds
            await probe.put(index, letter_id, letter, refresh="true")
    lines = dead_letter_lines(file)
    for letter in lines:
        if letter["doc_id"] == doc_id:
            letter["time"] -= seconds
    file.write_bytes(b"".join(orjson.dumps(letter) + b"\n" for letter in lines))


@pytest.mark.slow  # a minute on a busy machine: four processes, two tables streamed
async def test_list_show_and_delete_choose_letters_by_id_table_error_and_age(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
) -> None:
    """Three letters, each kept in the index and the file: a mapping conflict three days old
    and an oversized document of one table, a mapping conflict of another. Each filter
    chooses the right ones; show prints a letter whole; delete removes every copy of what it
    chose, and nothing without a filter or --all."""
    first, second = aws.unique_name("letters"), aws.unique_name("others")
    for table in (first, second):
        await aws.create_stream_table(clients.dynamodb, table)
    letters_index, letters_file = f"{index_name}-dead", tmp_path / "dead.jsonl"
    mappings = {"properties": {"qty": {"type": "long"}}}
    document = config_document(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": first,
                "index": index_name,
                "index_mappings": mappings,
                "max_document_bytes": 2000,
            },
            {"table": second, "index": f"{index_name}-2", "index_mappings": mappings},
        ],
        dead_letters={"index": letters_index, "file": str(letters_file)},
    )
    config = write_config(tmp_path / "tables.yaml", document)
    async with running(config_from(document)):
        await put(clients.dynamodb, first, "old", qty="not a number")
        await put(clients.dynamodb, first, "huge", qty=1, text="x" * 5000)
        await put(clients.dynamodb, second, "other", qty="not a number")

        async def all_stored() -> bool:
            return len(dead_letter_lines(letters_file)) == 3 and (
                await probe.count(letters_index) == 3
            )

        await eventually(all_stored)
    await age_letter(probe, letters_index, letters_file, "old", 3 * DAY)
    async with StreamSync(config_from(document)) as sync:
        everything = await sync.dead_letters()
        chosen = {
            name: [entry.letter.doc_id or entry.letter.item_keys["pk"]["S"] for entry in found]
            for name, found in [
                ("table", await sync.dead_letters(None, LetterFilter(tables=frozenset({second})))),
                ("error", await sync.dead_letters(None, LetterFilter(error="MAX_DOCUMENT_BYTES"))),
                (
                    "both",
                    await sync.dead_letters(
                        None, LetterFilter(error="parsing", tables=frozenset({first}))
                    ),
                ),
                ("4 days", await sync.dead_letters(None, LetterFilter(older_than=4 * DAY))),
            ]
        }
        with pytest.raises(StreamsyncError, match="no dead letter 0000"):
            await sync.dead_letter("0000")
    assert chosen == {
        "table": ["other"],
        "error": ["huge"],
        "both": ["old"],
        "4 days": [],
    }
    [old_one] = await listed(config, "--older-than", "2d")
    assert old_one["age_seconds"] > 3 * DAY
    assert (old_one["doc_id"], old_one["stored_in"], old_one["superseded"]) == (
        "old",
        ["file", "index"],
        False,
    )
    in_index = await probe.documents(letters_index)
    in_file = dead_letter_lines(letters_file)
    by_id = {}
    for entry in everything:
        by_id[entry.letter.doc_id or entry.letter.item_keys["pk"]["S"]] = entry.name
        assert (entry.stored_in, len(entry.copies)) == (["file", "index"], 2)
        assert entry.name in in_index, "its id in the index"
        assert entry.letter.to_json() in in_file
        assert entry.superseded_cell == "no"
    assert list(by_id) == ["old", "huge", "other"], "oldest first"

    text = await dlq(config, "list")
    header, *rows = text.stdout.splitlines()
    assert header.split() == [
        "id",
        "table",
        "document",
        "age",
        "reason",
        "superseded",
        "stored",
        "in",
    ]
    expected = [
        (by_id["old"], first, f"{index_name}/old", "document_parsing_exception"),
        (by_id["huge"], first, "-", "transform_error"),
        (by_id["other"], second, f"{index_name}-2/other", "document_parsing_exception"),
    ]
    assert len(rows) == len(expected)
    for row, (name, table, doc, reason) in zip(rows, expected, strict=True):
        cells = row.split()
        assert cells[:3] == [name[:12], table, doc]
        assert cells[-4:] == [reason, "no", "file,", "index"]
    assert rows[0].split()[3:5] == ["3d", "0h"], "its age"

    short = by_id["huge"][:12]
    shown = await dlq(config, "show", short)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert ["id:", by_id["huge"]] in [line.split() for line in lines]
    assert ["table:", first] in [line.split() for line in lines]
    assert "max_document_bytes (2000)" in shown.stdout
    assert '"S": "' + "x" * 5000 + '"' in shown.stdout, "the record, whole"
    assert '  "dynamodb": {' in lines, "indented"

    old = await dlq(config, "delete", "--older-than", "2d")
    assert old.returncode == 0, old.stderr
    assert old.stdout.splitlines() == [
        f"deleted {by_id['old'][:12]} ({first}, {index_name}/old, "
        "document_parsing_exception) from file and index",
        "deleted 1 dead letter(s)",
    ]
    async with StreamSync(config_from(document)) as sync:
        [huge] = await sync.delete_dead_letters([short], LetterFilter())
    assert huge.name == by_id["huge"]
    assert [line["doc_id"] for line in dead_letter_lines(letters_file)] == ["other"]
    assert [d["doc_id"] for d in (await probe.documents(letters_index)).values()] == ["other"]

    # The file alone: the same letters, read and deleted there only.
    file_only = config_from(
        {**document, "dead_letters": {"index": None, "file": str(letters_file)}}
    )
    async with StreamSync(file_only) as sync:
        [entry] = await sync.dead_letters()
        assert (entry.name, entry.stored_in) == (by_id["other"], ["file"])
        [cleared] = await sync.delete_dead_letters([], LetterFilter())
        assert cleared.name == by_id["other"]
    assert letters_file.read_bytes() == b""
    assert await probe.count(letters_index) == 1, "a file-only configuration leaves the index"


async def test_a_replay_reports_superseded_letters_apart_and_clears_them(
    clients: aws.Clients,
    moto_endpoint: str,
    target: Target,
    probe: Probe,
    index_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`x` was refused (a mapping conflict), then indexed at a newer version, then changed to
    a document too large: the first letter is superseded, the second is not. `gone` was
    refused, then deleted. A replay must report the superseded ones apart and remove them,
    not count them as still failing (the first one's item, as it is now, still cannot be
    transformed, so without this it would fail for as long as the second one does); once `x`
    is indexed again, the second is superseded too, and the replay exits 0."""
    table = aws.unique_name("superseded")
    await aws.create_stream_table(clients.dynamodb, table)
    letters_index, letters_file = f"{index_name}-dead", tmp_path / "dead.jsonl"
    document = config_document(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [
            {
                "table": table,
                "index": index_name,
                "index_mappings": {"properties": {"qty": {"type": "long"}}},
                "max_document_bytes": 2000,
            }
        ],
        dead_letters={"index": letters_index, "file": str(letters_file)},
    )
    config = write_config(tmp_path / "tables.yaml", document)

    async def stored(count: int) -> None:
        async def all_there() -> bool:
            return len(dead_letter_lines(letters_file)) == count and (
                await probe.count(letters_index) == count
            )

        await eventually(all_there)

    async def indexed_with(qty: int) -> None:
        async def there() -> bool:
            found = await probe.get(index_name, "x")
            return found is not None and found["_source"]["qty"] == qty

        await eventually(there)

    # One change at a time: changes of one document in one bulk request are sent newest only.
    async with running(config_from(document)):
        await put(clients.dynamodb, table, "x", qty="not a number")
        await stored(1)
        await put(clients.dynamodb, table, "x", qty=1)
        await indexed_with(1)
        await put(clients.dynamodb, table, "x", qty=2, text="x" * 5000)
        await stored(2)
        await put(clients.dynamodb, table, "gone", qty="not a number")
        await stored(3)
        await clients.dynamodb.delete_item(TableName=table, Key={"pk": {"S": "gone"}})

        async def tombstone_stored() -> bool:
            return len(await tombstones_of(probe, index_name, "gone")) == 1

        await eventually(tombstone_stored)
    indexed = await probe.get(index_name, "x")
    assert indexed is not None

    async with StreamSync(config_from(document)) as sync:
        letters = await sync.dead_letters()
        superseded = await sync.dead_letters(None, LetterFilter(superseded=True))
    entries = {(entry.letter.doc_id, entry.letter.reason): entry for entry in letters}
    conflict = entries["x", "document_parsing_exception"]
    too_large = entries[None, "transform_error"]
    deleted = entries["gone", "document_parsing_exception"]
    assert conflict.superseded == (
        f"{index_name}/x indexed at version {indexed['_version']} "
        f"(the letter's: {conflict.letter.version})"
    )
    assert (too_large.superseded, too_large.superseded_cell) == (None, "no")
    assert deleted.superseded is not None
    assert deleted.superseded.startswith(f"{index_name}/gone deleted at version ")
    assert [entry.name for entry in superseded] == [conflict.name, deleted.name]

    dry = await dlq(config, "replay", "--dry-run")
    summary, checked = dry.stdout.splitlines()
    assert summary == (
        "dead letters: 6; would replay: 0; still failing: 2; superseded (a newer version is "
        "indexed): 4; skipped (table not configured): 0; would expire (older than "
        "retention_days): 0"
    ), dry.stderr
    assert checked.startswith(
        "dry run: of 6 stored dead letters, 0 are of tables not configured and 0 past "
        "retention_days; of the other 6, 4 are superseded (the cluster holds their "
        "documents, indexed or deleted, at a version at least theirs); for the remaining 2, "
        "each item was read from its table and put through the current transform: 0 would "
        "be replayed, 2 would still fail"
    ), checked
    assert "The cluster was not asked to index anything" in checked
    assert len(dead_letter_lines(letters_file)) == 3, "a dry run removes nothing"

    caplog.set_level(logging.INFO, logger="streamsync.deadletters")
    async with StreamSync(config_from(document)) as sync:
        report = await sync.replay_dead_letters(dry_run=False)
    assert (report.total, report.replayed, report.still_failing, report.superseded) == (6, 0, 2, 4)
    said = sorted(
        (record.getMessage().split(":")[0], str(getattr(record, "id", None)))
        for record in caplog.records
        if record.getMessage().startswith("dead letter ")
    )
    assert said == [
        ("dead letter still failing", "None"),
        ("dead letter still failing", "None"),
        ("dead letter superseded", "gone"),
        ("dead letter superseded", "gone"),
        ("dead letter superseded", "x"),
        ("dead letter superseded", "x"),
    ]
    assert [line["reason"] for line in dead_letter_lines(letters_file)] == ["transform_error"]
    assert await probe.count(letters_index) == 1

    await put(clients.dynamodb, table, "x", qty=3)
    async with running(config_from(document)):
        await indexed_with(3)
    async with StreamSync(config_from(document)) as sync:
        kept = await sync.replay_dead_letters(dry_run=False, keep_superseded=True)
    assert (kept.still_failing, kept.superseded) == (0, 2)
    assert "superseded (a newer version is indexed): 2 kept;" in kept.summary(dry_run=False)
    assert await probe.count(letters_index) == 1

    cleared = await dlq(config, "replay")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.startswith(
        "dead letters: 2; replayed: 0; still failing: 0; superseded (a newer version is "
        "indexed): 2 removed;"
    ), cleared.stdout
    assert dead_letter_lines(letters_file) == []
    assert await probe.count(letters_index) == 0
    after = await probe.get(index_name, "x")
    assert after is not None
    assert after["_source"]["qty"] == 3, "a superseded letter is not replayed"
