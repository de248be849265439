"""A fast DynamoDB Streams source for benchmarks: serves pre-generated records over HTTP.

moto serializes GetRecords at about 1,600 records/s, far below what streamsync and Elasticsearch
can do, so throughput would measure moto. This server answers DescribeStream, GetShardIterator
and GetRecords (and DescribeTable for its table) from records generated in memory, joining
pre-encoded JSON, and forwards every other DynamoDB call (the lease table) to a moto server. In
live mode it appends records at a steady rate, stamped with their creation time in
milliseconds, so end-to-end latency can be measured.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

ACCOUNT = "123456789012"
FIRST_SEQUENCE = 10**20


@dataclass
class Shard:
    shard_id: str
    records: list[bytes] = field(default_factory=list)
    sequence_numbers: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


def order_image(rng: random.Random, key: str) -> dict[str, Any]:
    """A realistic item: about 600 bytes, strings, numbers, a set, a map and a list of maps."""
    return {
        "pk": {"S": key},
        "customer": {"S": f"customer-{rng.randrange(100_000):06d}"},
        "status": {"S": rng.choice(["new", "paid", "shipped", "delivered"])},
        "total": {"N": f"{rng.randrange(100, 100_000) / 100:.2f}"},
        "quantity": {"N": str(rng.randrange(1, 20))},
        "created": {"S": "2026-11-27T12:34:56.789Z"},
        "gift": {"BOOL": rng.random() < 0.1},
        "tags": {"SS": sorted({rng.choice(["eco", "sale", "fragile", "new"]) for _ in range(2)})},
        "address": {
            "M": {
                "street": {"S": f"{rng.randrange(1, 999)} Long Street"},
                "city": {"S": rng.choice(["Lisbon", "Oslo", "Quito", "Perth"])},
                "zip": {"S": f"{rng.randrange(10_000, 99_999)}"},
            }
        },
        "lines": {
            "L": [
                {
                    "M": {
                        "sku": {"S": f"SKU-{rng.randrange(10_000):05d}"},
                        "qty": {"N": str(rng.randrange(1, 5))},
                        "price": {"N": f"{rng.randrange(100, 10_000) / 100:.2f}"},
                    }
                }
                for _ in range(3)
            ]
        },
    }


def stream_record(key: str, image: dict[str, Any], sequence: int, created: float) -> bytes:
    return orjson.dumps(
        {
            "eventID": f"{sequence:x}",
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": round(created, 3),
                "Keys": {"pk": image["pk"]},
                "NewImage": image,
                "SequenceNumber": str(sequence),
                "SizeBytes": 600,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
    )


class ReplaySource:
    def __init__(self, table: str, shards: int, moto_url: str, seed: int = 1) -> None:
        self.table = table
        self.label = "2026-11-27T00:00:00.000"
        self.stream_arn = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{table}/stream/{self.label}"
        self.shards = [Shard(f"shardId-{i:020d}-{i:08x}") for i in range(shards)]
        self._by_id = {s.shard_id: s for s in self.shards}
        self._moto_url = moto_url
        self._rng = random.Random(seed)
        self._next = FIRST_SEQUENCE
        self._keys = 0
        self.created: dict[str, float] = {}  # key -> creation time, in live mode
        self._http: aiohttp.ClientSession | None = None
        self.get_records_calls = 0
        self.picked_up: dict[str, float] = {}  # key -> when first served, for remembered keys
        # The lease table's bill: the calls forwarded to it, and what its scans read.
        self.lease_calls: Counter[str] = Counter()
        self.lease_writes: Counter[str] = Counter()  # by item: "lease", "worker", "roster"
        self.scan_read_units = 0.0
        # One whole scan of the table, eventually consistent: what a KCL worker's scan costs.
        self.full_scan_price = 0.0
        self._pricing = 0.0
        self.glance_read_units = 0.0  # BatchGetItem (the roster and heartbeats)

    # --- data ---------------------------------------------------------------------------
    def add(self, count: int, created: float | None = None, remember: bool = False) -> None:
        """Appends `count` INSERT records with new keys, spread over the shards."""
        for _ in range(count):
            self._keys += 1
            key = f"order-{self._keys:09d}"
            shard = self.shards[self._keys % len(self.shards)]
            stamp = time.time() if created is None else created
            self._next += 1
            shard.records.append(stream_record(key, order_image(self._rng, key), self._next, stamp))
            shard.sequence_numbers.append(self._next)
            shard.keys.append(key)
            if remember:
                self.created[key] = stamp

    def documents(self) -> list[tuple[str, dict[str, Any]]]:
        """Every record as the (id, plain JSON document) a plain bulk load would send."""
        out = []
        for shard in self.shards:
            for raw in shard.records:
                image = orjson.loads(raw)["dynamodb"]["NewImage"]
                out.append((image["pk"]["S"], _plain(image)))
        return out

    async def live(self, rate: float, duration: float) -> None:
        """Appends records at `rate` per second for `duration` seconds, stamped with now."""
        started = time.monotonic()
        written = 0
        while (elapsed := time.monotonic() - started) < duration:
            due = int(elapsed * rate) - written
            if due > 0:
                self.add(due, remember=True)
                written += due
            await asyncio.sleep(0.005)

    # --- the HTTP API -------------------------------------------------------------------
    def app(self) -> web.Application:
        application = web.Application(client_max_size=64 * 1024 * 1024)
        application.router.add_post("/", self._handle)
        application.on_cleanup.append(self._close)
        return application

    async def _close(self, _: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = request.headers.get("X-Amz-Target", "")
        body = await request.read()
        action = target.rpartition(".")[2]
        if target.startswith("DynamoDBStreams"):
            payload = orjson.loads(body)
            if action == "GetRecords":
                return self._get_records(payload)
            if action == "GetShardIterator":
                return self._get_shard_iterator(payload)
            if action == "DescribeStream":
                return self._json(self._describe_stream(payload))
        elif action == "DescribeTable" and orjson.loads(body).get("TableName") == self.table:
            return self._json(self._describe_table())
        return await self._forward(request, body)

    @staticmethod
    def _json(data: Any) -> web.Response:
        return web.Response(body=orjson.dumps(data), content_type="application/x-amz-json-1.0")

    def _describe_table(self) -> dict[str, Any]:
        return {
            "Table": {
                "TableName": self.table,
                "TableStatus": "ACTIVE",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "ItemCount": self._keys,
                "StreamSpecification": {
                    "StreamEnabled": True,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
                "LatestStreamArn": self.stream_arn,
                "LatestStreamLabel": self.label,
            }
        }

    def _describe_stream(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One page of shards, as DynamoDB Streams pages them: `Limit` (at most and by
        default 100) after `ExclusiveStartShardId`, and the last one's id while more follow."""
        start = payload.get("ExclusiveStartShardId")
        first = self.shards.index(self._by_id[start]) + 1 if start else 0
        page = self.shards[first : first + min(int(payload.get("Limit", 100)), 100)]
        more = first + len(page) < len(self.shards)
        return {
            "StreamDescription": {
                "StreamArn": self.stream_arn,
                "StreamLabel": self.label,
                "StreamStatus": "ENABLED",
                "StreamViewType": "NEW_AND_OLD_IMAGES",
                "TableName": self.table,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "Shards": [
                    {
                        "ShardId": s.shard_id,
                        "SequenceNumberRange": {"StartingSequenceNumber": str(FIRST_SEQUENCE)},
                    }
                    for s in page
                ],
                **({"LastEvaluatedShardId": page[-1].shard_id} if more else {}),
            }
        }

    def _get_shard_iterator(self, payload: dict[str, Any]) -> web.Response:
        shard = self._by_id[payload["ShardId"]]
        kind = payload["ShardIteratorType"]
        if kind == "TRIM_HORIZON":
            position = 0
        elif kind == "LATEST":
            position = len(shard.records)
        else:
            sequence = int(payload["SequenceNumber"])
            position = next(
                (i for i, s in enumerate(shard.sequence_numbers) if s >= sequence),
                len(shard.records),
            )
            if kind == "AFTER_SEQUENCE_NUMBER" and position < len(shard.records):
                position += shard.sequence_numbers[position] == sequence
        return self._json({"ShardIterator": f"{shard.shard_id}:{position}"})

    def _get_records(self, payload: dict[str, Any]) -> web.Response:
        self.get_records_calls += 1
        shard_id, _, position_text = payload["ShardIterator"].rpartition(":")
        shard = self._by_id[shard_id]
        position = int(position_text)
        end = min(position + int(payload.get("Limit", 1000)), len(shard.records))
        for key in shard.keys[position:end]:
            if key in self.created and key not in self.picked_up:
                self.picked_up[key] = time.time()
        body = (
            b'{"Records":['
            + b",".join(shard.records[position:end])
            + b'],"NextShardIterator":"'
            + f"{shard_id}:{end}".encode()
            + b'"}'
        )
        return web.Response(body=body, content_type="application/x-amz-json-1.0")

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        body = _moto_expected(body)
        skip = ("host", "content-length")  # the body may be rewritten (_moto_expected)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        action = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        self.lease_calls[action] += 1
        if action in ("UpdateItem", "PutItem", "DeleteItem"):
            key = orjson.loads(body).get("Key") or orjson.loads(body).get("Item") or {}
            written = key.get("leaseKey", {}).get("S", "")
            kind = written.partition("|")[0]
            self.lease_writes[kind if kind in ("worker", "roster") else "lease"] += 1
        async with self._http.post(self._moto_url, data=body, headers=headers) as answer:
            data = await answer.read()
            if action == "Scan" and answer.status == 200:
                page, asked = orjson.loads(data), orjson.loads(body)
                consistent = bool(asked.get("ConsistentRead"))
                self.scan_read_units += scan_read_units(page, consistent)
                if "ExclusiveStartKey" not in asked:
                    self._pricing = 0.0
                self._pricing += scan_read_units(page, consistent=False)
                if "LastEvaluatedKey" not in page:
                    self.full_scan_price = self._pricing
            if action == "BatchGetItem" and answer.status == 200:
                self.glance_read_units += batch_get_read_units(orjson.loads(data))
            return web.Response(
                body=data,
                status=answer.status,
                content_type=answer.content_type,
            )


def _moto_expected(body: bytes) -> bytes:
    """A legacy condition written as `Value` with a `ComparisonOperator` (the KCL adapter 1.x's
    checkpoint: {"checkpoint": {"Value": {"S": "SHARD_END"}, "ComparisonOperator": "NE"}}),
    which DynamoDB evaluates as that operator on that value, rewritten with `AttributeValueList`:
    moto fails the original form's check whatever the item holds (moto 5.x)."""
    if b'"ComparisonOperator"' not in body or b'"Expected"' not in body:
        return body
    request = orjson.loads(body)
    for condition in request.get("Expected", {}).values():
        if "Value" in condition and "ComparisonOperator" in condition:
            condition["AttributeValueList"] = [condition.pop("Value")]
    return orjson.dumps(request)


def scan_read_units(page: dict[str, Any], consistent: bool) -> float:
    """What DynamoDB bills for one Scan page: the items' sizes summed, in 4 KB units rounded
    up, halved for eventually consistent reads."""
    units = math.ceil(sum(item_size(item) for item in page.get("Items", [])) / 4096)
    return float(max(units, 1)) if consistent else max(units, 1) / 2


def batch_get_read_units(answer: dict[str, Any]) -> float:
    """Strongly consistent: each item read, rounded up to 4 KB, one unit at least; a key not
    found costs one too (DynamoDB bills the read), but a glance asks only for items that are
    there unless a worker just left, so only the items found are counted."""
    items = [item for table in answer.get("Responses", {}).values() for item in table]
    return float(sum(max(1, math.ceil(item_size(item) / 4096)) for item in items))


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values (numbers about one
    byte per two digits, plus one)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((tag, inner),) = value.items()
    if tag == "S":
        return len(inner.encode())
    if tag == "N":
        return len(inner.lstrip("-").replace(".", "")) // 2 + 2
    if tag in ("SS", "NS"):
        return sum(_value_size({tag[0]: one}) for one in inner)
    if tag == "M":
        return 3 + item_size(inner)
    if tag == "L":
        return 3 + sum(1 + _value_size(one) for one in inner)
    return 1  # BOOL, NULL


def _plain(value: Any) -> Any:
    """DynamoDB JSON to plain JSON the simple way (numbers as floats), for the ceiling load."""
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "S":
            return inner
        if tag == "N":
            return float(inner) if "." in inner else int(inner)
        if tag == "BOOL":
            return inner
        if tag == "SS":
            return list(inner)
        if tag == "M":
            return {k: _plain(v) for k, v in inner.items()}
        if tag == "L":
            return [_plain(v) for v in inner]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
