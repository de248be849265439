"""Random writes to source tables: puts, updates and deletes with every DynamoDB attribute type.

Values include numbers a double cannot hold (big integers, 38-digit fractions), binary that is
not UTF-8, empty strings and maps, nested lists and maps, and keys containing the id separator.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

NUMBERS = [
    "0",
    "-7",
    "42",
    "9007199254740992",  # 2**53: still exact as a double
    "9007199254740993",  # 2**53 + 1: not
    "-123456789012345678901234567890",
    "3.5",
    "0.1",
    "-0.000001",
    "1E+3",
    "3.1415926535897932384626433832795028841",
]


@dataclass(frozen=True)
class TableShape:
    name: str
    hash_key: str = "pk"
    range_key: str | None = None  # a number attribute when set


def random_value(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    kinds = ["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS"]
    if depth < 3:
        kinds += ["L", "M"]
    kind = rng.choice(kinds)
    if kind == "S":
        return {"S": rng.choice(["", "plain", "ünïcödé ✓", "a|b\\c", "x" * rng.randint(1, 50)])}
    if kind == "N":
        return {"N": rng.choice(NUMBERS)}
    if kind == "B":
        return {"B": bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))}
    if kind == "BOOL":
        return {"BOOL": rng.random() < 0.5}
    if kind == "NULL":
        return {"NULL": True}
    if kind == "SS":
        return {"SS": sorted({f"s{rng.randint(0, 9)}" for _ in range(rng.randint(1, 4))})}
    if kind == "NS":
        return {"NS": sorted({rng.choice(NUMBERS[:7]) for _ in range(rng.randint(1, 3))})}
    if kind == "BS":
        return {"BS": list({bytes([rng.randrange(256), i]) for i in range(rng.randint(1, 3))})}
    if kind == "L":
        return {"L": [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]}
    return {"M": {f"f{i}": random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}}


def random_item(rng: random.Random, shape: TableShape, key: dict[str, Any]) -> dict[str, Any]:
    item = dict(key)
    for i in range(rng.randint(1, 6)):
        item[f"a{i}"] = random_value(rng)
    return item


def key_of(shape: TableShape, hash_value: str, range_value: int | None) -> dict[str, Any]:
    key: dict[str, Any] = {shape.hash_key: {"S": hash_value}}
    if shape.range_key is not None:
        key[shape.range_key] = {"N": str(range_value)}
    return key


class Workload:
    """Writes random operations over a fixed key space, so keys are updated and deleted often."""

    def __init__(self, ddb: Any, shape: TableShape, keys: int, seed: int) -> None:
        self._ddb = ddb
        self.shape = shape
        self._rng = random.Random(seed)
        self._keys = [
            key_of(shape, f"key|{i % 97}\\{i}", i % 5 if shape.range_key else None)
            for i in range(keys)
        ]
        self.operations = 0

    async def populate(self) -> None:
        for key in self._keys:
            await self._ddb.put_item(
                TableName=self.shape.name, Item=random_item(self._rng, self.shape, key)
            )
            self.operations += 1

    async def run(self, operations: int, concurrency: int = 4) -> None:
        remaining = [operations]

        async def writer() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await self.one()

        await asyncio.gather(*(writer() for _ in range(concurrency)))

    async def one(self) -> None:
        rng = self._rng
        key = rng.choice(self._keys)
        roll = rng.random()
        table = self.shape.name
        if roll < 0.5:
            await self._ddb.put_item(TableName=table, Item=random_item(rng, self.shape, key))
        elif roll < 0.8:
            await self._ddb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET #a = :v, #n = :n",
                ExpressionAttributeNames={"#a": f"a{rng.randint(0, 5)}", "#n": "touched"},
                ExpressionAttributeValues={":v": random_value(rng), ":n": {"N": str(roll)[:8]}},
            )
        else:
            await self._ddb.delete_item(TableName=table, Key=key)
        self.operations += 1


def expected_id(shape: TableShape, item: dict[str, Any]) -> str:
    """The documented _id, computed independently of streamsync: hash, or escaped hash|range."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|")

    hash_value = item[shape.hash_key]["S"]
    if shape.range_key is None:
        return str(hash_value)
    return f"{escape(hash_value)}|{escape(item[shape.range_key]['N'])}"


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Runs `work` while the block runs, and cancels it when the block ends."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def writing(workload: Workload, every: float) -> contextlib.AbstractAsyncContextManager[None]:
    """Keeps `workload` writing one change every `every` seconds while the block runs, so the
    stream has records to carry through whatever the block does to the workers."""

    async def forever() -> None:
        while True:
            await workload.one()
            await asyncio.sleep(every)

    return in_background(forever())
