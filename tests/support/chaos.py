"""Helpers for the chaos test: a random writer with poison keys, `streamsync run` worker processes,
and a check of indexes against tables that tells poison items (mapping conflicts, which must end in
the dead letters) from the rest (which must end equal to the table).

Poison is decided by key, not by write: about 1% of the keys always carry `qty` as a non-numeric
string, every other key always carries a numeric `qty`, and the target indexes map `qty` as
`long`, so every image of a poison item is rejected by Elasticsearch and no other image is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.pipeline import comparable, expected_document, scan_table
from tests.support.search import Probe
from tests.support.workload import TableShape, expected_id, key_of, random_value

STREAMSYNC = str(Path(sys.executable).parent / "streamsync")
POISON_EVERY = 100  # one key in a hundred is poison
TARGET_MAPPINGS: dict[str, Any] = {
    # Random attributes stay unindexed (their types clash); qty is the field poison breaks.
    "dynamic": False,
    "properties": {"qty": {"type": "long"}},
}


class PoisonWorkload:
    """Random puts, updates and deletes over a fixed key space; poison keys write `qty` as text."""

    def __init__(self, ddb: Any, shape: TableShape, keys: int, seed: int) -> None:
        self._ddb = ddb
        self.shape = shape
        self._rng = random.Random(seed)
        self.keys: list[dict[str, Any]] = []
        self.poison_ids: set[str] = set()
        for i in range(keys):
            if shape.range_key is None:
                key = key_of(shape, f"item|{i}\\{i % 7}", None)
            else:
                key = key_of(shape, f"user|{i // 5}\\{i % 3}", i % 5)
            self.keys.append(key)
            if i % POISON_EVERY == POISON_EVERY // 2:
                self.poison_ids.add(expected_id(shape, key))
        self.operations = 0
        self.by_kind: dict[str, int] = defaultdict(int)

    def ids(self) -> set[str]:
        return {expected_id(self.shape, key) for key in self.keys}

    def _qty(self, key: dict[str, Any]) -> dict[str, Any]:
        if expected_id(self.shape, key) in self.poison_ids:
            return {"S": f"lots-{self._rng.randint(0, 99)}"}  # a mapping conflict with long
        return {"N": str(self._rng.randint(0, 10**9))}

    async def one(self) -> None:
        rng = self._rng
        key = rng.choice(self.keys)
        roll = rng.random()
        table = self.shape.name
        if roll < 0.5:
            item = dict(key)
            for i in range(rng.randint(1, 5)):
                item[f"a{i}"] = random_value(rng)
            item["qty"] = self._qty(key)
            await self._ddb.put_item(TableName=table, Item=item)
            kind = "put"
        elif roll < 0.8:
            # An update of an absent key creates the item: it gets a qty of its key's kind too.
            await self._ddb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET #a = :v, #t = :t, #q = :q",
                ExpressionAttributeNames={
                    "#a": f"a{rng.randint(0, 5)}",
                    "#t": "touched",
                    "#q": "qty",
                },
                ExpressionAttributeValues={
                    ":v": random_value(rng),
                    ":t": {"N": str(rng.randint(0, 10**6))},
                    ":q": self._qty(key),
                },
            )
            kind = "update"
        else:
            await self._ddb.delete_item(TableName=table, Key=key)
            kind = "delete"
        self.operations += 1
        self.by_kind[kind] += 1


class Worker:
    """A `streamsync run` process with its own WORKER id and AWS access key; JSON logs in a file."""

    def __init__(self, name: str, config: Path, logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        self._log_file = self.log.open("w")
        self.popen = subprocess.Popen(
            [STREAMSYNC, "run", "--config", str(config), "--log-format", "json"],
            stdout=self._log_file,
            stderr=self._log_file,
            env={**os.environ, "AWS_ACCESS_KEY_ID": name, "WORKER": name},
        )

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by kill -9
        return events

    def logged(self, message: str) -> int:
        return sum(1 for event in self.events() if event.get("message") == message)

    async def wait_logged(self, message: str, within: float) -> None:
        async with asyncio.timeout(within):
            while not self.logged(message):
                assert self.popen.poll() is None, f"{self.name} exited: {self.log.read_text()}"
                await asyncio.sleep(0.2)

    def stop(self, signum: int, within: float = 90) -> int:
        self.popen.send_signal(signum)
        try:
            return self.popen.wait(timeout=within)
        finally:
            self._log_file.close()

    def kill_if_running(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._log_file.close()


def _normal(value: dict[str, Any]) -> Any:
    """A DynamoDB attribute value in one form whether it came from boto (binary as bytes) or off
    the wire (binary as base64), with sets sorted."""
    ((tag, inner),) = value.items()

    def b64(raw: Any) -> str:
        return base64.b64encode(raw).decode() if isinstance(raw, bytes | bytearray) else str(raw)

    if tag == "B":
        return {"B": b64(inner)}
    if tag == "BS":
        return {"BS": sorted(b64(v) for v in inner)}
    if tag in ("SS", "NS"):
        return {tag: sorted(inner)}
    if tag == "L":
        return {"L": [_normal(v) for v in inner]}
    if tag == "M":
        return {"M": {k: _normal(v) for k, v in inner.items()}}
    return {tag: inner}


def same_image(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: _normal(v) for k, v in a.items()} == {k: _normal(v) for k, v in b.items()}


DeadLetterImages = dict[tuple[str, str], list[dict[str, Any]]]  # (index, doc id) -> NewImages


async def dead_letters_in_index(probe: Probe, index: str) -> DeadLetterImages:
    found: DeadLetterImages = defaultdict(list)
    for letter in (await probe.documents(index)).values():  # empty while the index is missing
        image = letter.get("record", {}).get("dynamodb", {}).get("NewImage")
        found[(str(letter.get("index")), str(letter.get("doc_id")))].append(image)
    return found


def dead_letters_in_file(path: Path) -> DeadLetterImages:
    found: DeadLetterImages = defaultdict(list)
    if not path.exists():
        return found
    # The last piece is empty, or a line still being written.
    for line in path.read_text().split("\n")[:-1]:
        letter = json.loads(line)
        image = letter.get("record", {}).get("dynamodb", {}).get("NewImage")
        found[(str(letter.get("index")), str(letter.get("doc_id")))].append(image)
    return found


@dataclass
class Verdict:
    """An index against its table (or several), split by poison."""

    non_poison_present: int = 0
    non_poison_equal: int = 0
    absent: int = 0  # keys of the key space not in the table (deleted)
    deleted_absent: int = 0  # ... and not in the index
    poison_present: int = 0
    poison_dead_lettered: int = 0  # the item's current image is a dead letter (index and file)
    stale: list[str] = field(default_factory=list)  # documents that differ from the table
    problems: list[str] = field(default_factory=list)  # everything that is not as it must be

    def add(self, other: Verdict) -> None:
        for name in (
            "non_poison_present",
            "non_poison_equal",
            "absent",
            "deleted_absent",
            "poison_present",
            "poison_dead_lettered",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.stale += other.stale
        self.problems += other.problems

    @property
    def converged(self) -> bool:
        return not self.problems


async def verdict(
    ddb: Any,
    probe: Probe,
    workload: PoisonWorkload,
    index: str,
    letters_index: DeadLetterImages,
    letters_file: DeadLetterImages,
) -> Verdict:
    shape = workload.shape
    result = Verdict()
    documents = await probe.documents(index)
    items = {expected_id(shape, item): item for item in await scan_table(ddb, shape.name)}
    for doc_id, item in items.items():
        document = documents.get(doc_id)
        if doc_id in workload.poison_ids:
            result.poison_present += 1
            if document is not None:
                result.stale.append(f"{index}/{doc_id}: a poison item was indexed: {document}")
            in_index = any(
                image is not None and same_image(image, item)
                for image in letters_index.get((index, doc_id), [])
            )
            in_file = any(
                image is not None and same_image(image, item)
                for image in letters_file.get((index, doc_id), [])
            )
            if in_index and in_file:
                result.poison_dead_lettered += 1
            else:
                result.problems.append(
                    f"{index}/{doc_id}: poison item's current image not in the dead letters "
                    f"(index: {in_index}, file: {in_file})"
                )
            continue
        result.non_poison_present += 1
        expected = expected_document(item)
        if document is None:
            result.problems.append(f"{index}/{doc_id}: missing")
        elif comparable(document, item) != comparable(expected, item):
            result.stale.append(f"{index}/{doc_id}: {document} != {expected}")
        else:
            result.non_poison_equal += 1
    for doc_id in workload.ids() - items.keys():
        result.absent += 1
        if doc_id in documents:
            result.stale.append(f"{index}/{doc_id}: deleted from the table, still indexed")
        else:
            result.deleted_absent += 1
    result.stale.extend(
        f"{index}/{doc_id}: not of the key space" for doc_id in documents.keys() - workload.ids()
    )
    result.problems += result.stale
    return result
