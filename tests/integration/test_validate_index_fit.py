"""`streamsync validate` against an index that already exists (issue 16, item 7): a sample of the
table's items, made into documents by the table's transform, is held against the index's
mapping, and each field the index would refuse is one line, before any item becomes a dead
letter. The `validate` process, moto's table and the real nodes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support import aws
from tests.support.moto_server import StreamsServer
from tests.support.pipeline import STREAMSYNC, config_document
from tests.support.search import Probe, Target, every_engine

ITEMS = 12  # every one holds pk (text) and n; the first three hold `extra` too


async def fill(clients: aws.Clients, table: str) -> None:
    for n in range(ITEMS):
        item: dict[str, Any] = {"pk": {"S": f"k{n:02d}"}, "n": {"N": str(n)}}
        if n < 3:
            item["extra"] = {"S": "more"}
        await clients.dynamodb.put_item(TableName=table, Item=item)


def validate(
    tmp_path: Path, moto_endpoint: str, target: Target, table: str, index: str, **options: Any
) -> tuple[int, list[str]]:
    """The exit status of `streamsync validate` and its lines on stderr but the search client's
    own request log (opensearch-py logs each request at info)."""
    document = config_document(
        moto_endpoint,
        target,
        aws.unique_name("leases"),
        [{"table": table, "index": index, **options}],
    )
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [STREAMSYNC, "validate", "--config", str(path)], capture_output=True, text=True, timeout=120
    )
    lines = result.stderr.splitlines()
    return result.returncode, [line for line in lines if '"logger":"opensearch"' not in line]


STRICT_WITH_NUMERIC_KEY = {
    "dynamic": "strict",
    "properties": {"pk": {"type": "long"}, "n": {"type": "long"}},
}
FITTING = {"dynamic": "strict", "properties": {"pk": {"type": "keyword"}, "n": {"type": "long"}}}


async def test_validate_names_each_field_the_existing_index_would_refuse(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    table = aws.unique_name("fit")
    await aws.create_stream_table(clients.dynamodb, table)
    await fill(clients, table)
    await probe.create_index(index_name, {"mappings": STRICT_WITH_NUMERIC_KEY})

    status, lines = validate(tmp_path, moto_endpoint, target, table, index_name)

    assert status == 1
    assert lines == [
        f"streamsync: index {index_name}: key attribute 'pk' is mapped as long but holds 'k00'; "
        f"{ITEMS} of the {ITEMS} sampled items of table {table} (e.g. k00) would be refused; "
        "give the index a mapping that takes it (a new index, then backfill)",
        f"streamsync: index {index_name}: field 'extra' is not in the mapping, which is "
        f"dynamic: strict; 3 of the {ITEMS} sampled items of table {table} (e.g. k00) would be "
        "refused; add it to the index's mapping or to tables[0].exclude_fields",
    ]
    assert await probe.count(index_name) == 0  # validate writes nothing


async def test_validate_accepts_an_index_the_transformed_items_fit(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The field the strict mapping lacks is excluded by the table's configuration, so the
    documents (what the transform makes, not the raw items) fit."""
    table = aws.unique_name("fit")
    await aws.create_stream_table(clients.dynamodb, table)
    await fill(clients, table)
    await probe.create_index(index_name, {"mappings": FITTING})

    status, lines = validate(
        tmp_path, moto_endpoint, target, table, index_name, exclude_fields=["extra"]
    )

    assert (status, lines) == (0, [])


@every_engine
async def test_an_alias_is_judged_by_its_write_index(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, index_name: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The target is an alias over two indices: writes go to its write index, so that one's
    mapping is the one held against the items, and the line names it."""
    table = aws.unique_name("fit")
    await aws.create_stream_table(clients.dynamodb, table)
    await fill(clients, table)
    old, new = f"{index_name}-old", f"{index_name}-new"
    await probe.create_index(old, {"mappings": FITTING})
    await probe.create_index(new, {"mappings": STRICT_WITH_NUMERIC_KEY})
    alias = f"{index_name}-alias"
    await probe.request(
        "POST",
        "/_aliases",
        {
            "actions": [
                {"add": {"index": old, "alias": alias}},
                {"add": {"index": new, "alias": alias, "is_write_index": True}},
            ]
        },
    )

    status, lines = validate(
        tmp_path, moto_endpoint, target, table, alias, exclude_fields=["extra"]
    )

    assert status == 1
    assert lines == [
        f"streamsync: index {alias} (index {new}): key attribute 'pk' is mapped as long but "
        f"holds 'k00'; {ITEMS} of the {ITEMS} sampled items of table {table} (e.g. k00) would "
        "be refused; give the index a mapping that takes it (a new index, then backfill)"
    ]

    await probe.request(
        "POST",
        "/_aliases",
        {"actions": [{"add": {"index": old, "alias": alias, "is_write_index": True}},
                     {"add": {"index": new, "alias": alias, "is_write_index": False}}]},
    )  # fmt: skip
    assert validate(tmp_path, moto_endpoint, target, table, alias, exclude_fields=["extra"]) == (
        0,
        [],
    )


async def test_a_sample_that_cannot_be_read_is_a_warning_not_a_problem(
    clients: aws.Clients, streams_server: StreamsServer, moto_endpoint: str, target: Target,
    probe: Probe, index_name: str, tmp_path: Path,
) -> None:  # fmt: skip
    """`run` needs no dynamodb:Scan: a role without it still passes `validate`, told that its
    items were not checked."""
    table = aws.unique_name("fit")
    await aws.create_stream_table(clients.dynamodb, table)
    await fill(clients, table)
    await probe.create_index(index_name, {"mappings": STRICT_WITH_NUMERIC_KEY})
    streams_server.faults.inject("Scan", "AccessDeniedException", table=table)

    status, lines = validate(tmp_path, moto_endpoint, target, table, index_name)

    assert status == 0
    [warning] = lines
    assert "items not checked against the index" in warning
    assert table in warning
    assert "AccessDeniedException" in warning
