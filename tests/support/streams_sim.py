"""DynamoDB Streams behaviour that moto lacks, added through moto's in-process backend.

moto 5.2.5 models one never-closing shard per stream, keeps every record for ever, never expires an
iterator and ignores DescribeStream paging. Real streams split and roll over shards (children name
their parent), trim records after 24 h, expire iterators after 15 minutes and page DescribeStream.
This module swaps moto's per-table stream model for `SimStream`, which has all of that, and serves
DescribeStream, GetShardIterator and GetRecords from it over moto's real HTTP endpoint, so the code
under test sees these behaviours through aiobotocore exactly as it would on AWS.

Tests change the topology in-process while clients read over the wire::

    sim = stream_of("orders")
    left, right = sim.split(sim.open_shards()[0].shard_id, 2)

Sequence numbers are sparse, grow per shard, and gain a digit at the first split, so code that
compares them as strings or assumes they are dense fails here as it would on AWS.

Call `install()` (idempotent) before the server handles requests. It patches moto internals, which
is why moto is pinned exactly; `tests/unit/test_moto_internals.py` fails first if they change.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.table import StreamRecord, StreamShard, Table
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

HASH_SPACE = 2**128
FIRST_SEQUENCE_NUMBER = 9 * 10**20  # 21 digits, like the shortest real ones
GET_RECORDS_MAX = 1000
GET_RECORDS_MAX_BYTES = 1024 * 1024
DESCRIBE_STREAM_MAX = 100
ITERATOR_TTL_SECONDS = 15 * 60
ITERATORS_KEPT = 200_000  # older iterators are forgotten and answer ExpiredIteratorException

# One lock for every stream model and iterator: moto serves each request in its own thread.
SIM_LOCK = threading.RLock()


def _error(code: str, message: str) -> JsonRESTError:
    return JsonRESTError(code, message)


def _key_hash(key_value: dict[str, Any]) -> int:
    digest = hashlib.md5(json.dumps(key_value, sort_keys=True).encode(), usedforsecurity=False)
    return int.from_bytes(digest.digest(), "big")


@dataclass
class SimShard:
    shard_id: str
    parent_id: str | None
    hash_low: int  # inclusive
    hash_high: int  # exclusive
    starting_sequence_number: int
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    trimmed_through: int | None = None  # highest sequence number removed by trimming
    ending_sequence_number: int | None = None
    dropped: bool = False  # gone from DescribeStream, as shards are 24 h after they close

    @property
    def closed(self) -> bool:
        return self.ending_sequence_number is not None

    def to_json(self) -> dict[str, Any]:
        seq_range = {"StartingSequenceNumber": str(self.starting_sequence_number)}
        if self.ending_sequence_number is not None:
            seq_range["EndingSequenceNumber"] = str(self.ending_sequence_number)
        shard: dict[str, Any] = {"ShardId": self.shard_id, "SequenceNumberRange": seq_range}
        if self.parent_id is not None:
            shard["ParentShardId"] = self.parent_id
        return shard

    def first_retained_position(self) -> int:
        if self.records:
            return self.records[0][0]
        if self.trimmed_through is not None:
            return self.trimmed_through + 1
        return self.starting_sequence_number

    def end_position(self) -> int:
        """The position just past the newest record."""
        return self.records[-1][0] + 1 if self.records else self.first_retained_position()


@dataclass
class SimIterator:
    stream: SimStream
    shard_id: str
    position: int  # the next record returned has a sequence number >= position
    created: float


class SimStream:
    """The stream of one table: shards with lineage, retention and iterator expiry.

    Stands in for moto's `Table.stream_shard`; moto's write paths call `add(old, new)`.
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self.created_on = datetime.now(UTC)
        self._random = random.Random(table.name)
        self._next_seq = FIRST_SEQUENCE_NUMBER
        self.shards: list[SimShard] = []
        self.iterator_ttl = float(ITERATOR_TTL_SECONDS)
        self._iterators_valid_after = 0.0
        self._new_shard(parent_id=None, hash_low=0, hash_high=HASH_SPACE)

    # --- topology -------------------------------------------------------------------------
    def _new_shard(
        self, parent_id: str | None, hash_low: int, hash_high: int, age: float = 0.0
    ) -> SimShard:
        # Like DynamoDB's, a shard id carries its creation time in milliseconds.
        shard_id = f"shardId-{int((time.time() - age) * 1000):020d}-{uuid.uuid4().hex[:8]}"
        shard = SimShard(shard_id, parent_id, hash_low, hash_high, self._next_seq)
        self.shards.append(shard)
        return shard

    def shard(self, shard_id: str) -> SimShard:
        for shard in self.shards:
            if shard.shard_id == shard_id:
                return shard
        raise KeyError(shard_id)

    def open_shards(self) -> list[SimShard]:
        with SIM_LOCK:
            return [s for s in self.shards if not s.closed and not s.dropped]

    def listed_shards(self) -> list[SimShard]:
        return [s for s in self.shards if not s.dropped]

    def split(self, shard_id: str, parts: int = 2, age: float = 0.0) -> list[str]:
        """Closes an open shard and opens `parts` children that divide its key-hash range.

        Later writes of a key go to the child whose range holds it, as on AWS, so per-key order
        holds across parent and child only for readers that finish the parent first. `age`
        back-dates the children's creation (in their ids) by that many seconds, to stand for a
        split that happened long ago: a test cannot wait for the 24 h retention to pass.
        """
        with SIM_LOCK:
            parent = self.shard(shard_id)
            if parent.closed:
                raise ValueError(f"{shard_id} is already closed")
            parent.ending_sequence_number = (
                parent.records[-1][0] if parent.records else parent.starting_sequence_number
            )
            # Children number their records above everything before them; the first split also
            # makes the numbers one digit longer, as real ones grow from 21 towards 40 digits.
            self._next_seq += 10 ** (len(str(self._next_seq)) - 1)
            width = parent.hash_high - parent.hash_low
            bounds = [parent.hash_low + width * i // parts for i in range(parts)]
            bounds.append(parent.hash_high)
            children = [
                self._new_shard(parent.shard_id, bounds[i], bounds[i + 1], age)
                for i in range(parts)
            ]
            return [c.shard_id for c in children]

    def rollover(self, shard_id: str) -> str:
        """Closes a shard and opens one child with the same key range (the ~4-hourly roll)."""
        return self.split(shard_id, 1)[0]

    def trim(self, shard_id: str, count: int) -> None:
        """Drops the oldest `count` records of a shard, as retention does after 24 h."""
        with SIM_LOCK:
            shard = self.shard(shard_id)
            removed, shard.records = shard.records[:count], shard.records[count:]
            if removed:
                shard.trimmed_through = removed[-1][0]

    def drop(self, shard_id: str) -> None:
        """Removes a closed shard from DescribeStream, as AWS does once its records expired;
        its children keep naming it as their parent."""
        with SIM_LOCK:
            shard = self.shard(shard_id)
            if not shard.closed:
                raise ValueError(f"{shard_id} is open; only closed shards leave the stream")
            shard.dropped = True
            shard.records = []

    def close_all(self) -> None:
        """Closes every open shard, as deleting the table does (the stream stays readable)."""
        with SIM_LOCK:
            for shard in self.open_shards():
                shard.ending_sequence_number = (
                    shard.records[-1][0] if shard.records else shard.starting_sequence_number
                )

    def inject_raw(self, shard_id: str, record: dict[str, Any]) -> int:
        """Appends a record as given, bypassing moto's writes: for malformed records a real
        stream should never carry but a consumer must survive. Its SequenceNumber is assigned
        here unless the record has one (or deliberately lacks the field: pass "omit")."""
        with SIM_LOCK:
            shard = self.shard(shard_id)
            seq = self._next_seq
            self._next_seq += 7
            change = record.setdefault("dynamodb", {})
            if change.get("SequenceNumber") == "omit":
                del change["SequenceNumber"]
            else:
                change.setdefault("SequenceNumber", str(seq))
            change.setdefault("SizeBytes", 100)
            change.setdefault("ApproximateCreationDateTime", datetime.now(UTC))
            shard.records.append((seq, record))
            return seq

    def expire_iterators(self) -> None:
        """Makes every iterator handed out so far answer ExpiredIteratorException."""
        with SIM_LOCK:
            self._iterators_valid_after = time.monotonic()

    # --- moto's write path -------------------------------------------------------------------
    def add(self, old: Any, new: Any) -> None:
        with SIM_LOCK:
            view_type = self.table.stream_specification["StreamViewType"]  # type: ignore[index]
            event_name = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
            key_hash = _key_hash((old if old is not None else new).hash_key.to_json())
            shard = next(s for s in self.open_shards() if s.hash_low <= key_hash < s.hash_high)
            seq = self._next_seq
            self._next_seq = seq + self._random.randint(1, 97)
            record = StreamRecord(self.table, view_type, event_name, old, new, seq).to_json()
            shard.records.append((seq, record))

    # --- the read API --------------------------------------------------------------------
    def iterator_expired(self, iterator: SimIterator) -> bool:
        now = time.monotonic()
        return (
            iterator.created < self._iterators_valid_after
            or now - iterator.created > self.iterator_ttl
        )


_ITERATORS: OrderedDict[str, SimIterator] = OrderedDict()


def forget_iterators() -> None:
    _ITERATORS.clear()


def stream_of(
    table_name: str, account_id: str = "123456789012", region: str = "us-east-1"
) -> SimStream:
    """The simulated stream of a table created through the moto server."""
    table = dynamodb_backends[account_id][region].get_table(table_name)
    stream = table.stream_shard
    if not isinstance(stream, SimStream):
        raise LookupError(f"table {table_name} has no stream (or streams_sim was not installed)")
    return stream


def _stream_from_arn(handler: DynamoDBStreamsHandler, arn: str) -> SimStream:
    try:
        table_name = arn.split(":", 5)[5].split("/")[1]
    except IndexError:
        raise _error("ValidationException", f"Invalid StreamArn: {arn}") from None
    table = dynamodb_backends[handler.current_account][handler.region].get_table(table_name)
    if not isinstance(table.stream_shard, SimStream) or arn.split("/stream/")[-1] != str(
        table.latest_stream_label
    ):
        raise _error("ResourceNotFoundException", f"Requested resource not found: Stream: {arn}")
    return table.stream_shard


def _listed_shard(stream: SimStream, shard_id: str) -> SimShard:
    try:
        shard = stream.shard(shard_id)
    except KeyError:
        shard = None
    if shard is None or shard.dropped:
        raise _error(
            "ResourceNotFoundException",
            f"Requested resource not found: Shard does not exist: {shard_id}",
        )
    return shard


def _describe_stream(self: DynamoDBStreamsHandler) -> str:
    arn = self._get_param("StreamArn")
    limit = int(self._get_param("Limit") or DESCRIBE_STREAM_MAX)
    start_after = self._get_param("ExclusiveStartShardId")
    shard_filter = self._get_param("ShardFilter")
    if not 1 <= limit <= DESCRIBE_STREAM_MAX:
        raise _error("ValidationException", f"Limit must be between 1 and {DESCRIBE_STREAM_MAX}")
    with SIM_LOCK:
        stream = _stream_from_arn(self, arn)
        shards = stream.listed_shards()
        if shard_filter:
            if shard_filter.get("Type") != "CHILD_SHARDS":
                raise _error("ValidationException", "ShardFilter Type must be CHILD_SHARDS")
            shards = [s for s in shards if s.parent_id == shard_filter.get("ShardId")]
        if start_after is not None:
            ids = [s.shard_id for s in shards]
            shards = shards[ids.index(start_after) + 1 :] if start_after in ids else []
        page = shards[:limit]
        description: dict[str, Any] = {
            "StreamArn": arn,
            "StreamLabel": stream.table.latest_stream_label,
            "StreamStatus": "ENABLED",
            "StreamViewType": stream.table.stream_specification["StreamViewType"],  # type: ignore[index]
            "CreationRequestDateTime": stream.created_on.timestamp(),
            "TableName": stream.table.name,
            "KeySchema": stream.table.schema,
            "Shards": [s.to_json() for s in page],
        }
        if len(shards) > limit:
            description["LastEvaluatedShardId"] = page[-1].shard_id
    return json.dumps({"StreamDescription": description})


def _remember(iterator: SimIterator) -> str:
    token = f"{iterator.stream.table.table_arn}/stream/{iterator.stream.table.latest_stream_label}"
    token += f"|1|{uuid.uuid4().hex}{uuid.uuid4().hex}"
    _ITERATORS[token] = iterator
    while len(_ITERATORS) > ITERATORS_KEPT:
        _ITERATORS.popitem(last=False)
    return token


def _get_shard_iterator(self: DynamoDBStreamsHandler) -> str:
    arn = self._get_param("StreamArn")
    shard_id = self._get_param("ShardId")
    kind = self._get_param("ShardIteratorType")
    raw_seq = self._get_param("SequenceNumber")
    with SIM_LOCK:
        stream = _stream_from_arn(self, arn)
        shard = _listed_shard(stream, shard_id)
        if kind == "TRIM_HORIZON":
            position = shard.first_retained_position()
        elif kind == "LATEST":
            position = shard.end_position()
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            if raw_seq is None or not str(raw_seq).isdigit():
                raise _error("ValidationException", f"Invalid SequenceNumber: {raw_seq}")
            seq = int(raw_seq)
            beyond_end = shard.ending_sequence_number is not None and (
                seq > shard.ending_sequence_number
            )
            if seq < shard.starting_sequence_number or beyond_end:
                raise _error(
                    "ValidationException",
                    f"Invalid SequenceNumber {seq} for ShardId {shard_id}",
                )
            position = seq if kind == "AT_SEQUENCE_NUMBER" else seq + 1
            if shard.trimmed_through is not None and position <= shard.trimmed_through:
                raise _error(
                    "TrimmedDataAccessException",
                    f"The sequence number {seq} is beyond the trim horizon of {shard_id}",
                )
        else:
            raise _error("ValidationException", f"Invalid ShardIteratorType: {kind}")
        token = _remember(SimIterator(stream, shard_id, position, time.monotonic()))
    return json.dumps({"ShardIterator": token})


def _epoch(value: datetime | float) -> float:
    if isinstance(value, int | float):
        return round(float(value), 3)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp(), 3)


def _get_records(self: DynamoDBStreamsHandler) -> str:
    token = self._get_param("ShardIterator")
    limit = int(self._get_param("Limit") or GET_RECORDS_MAX)
    if not 1 <= limit <= GET_RECORDS_MAX:
        raise _error("ValidationException", f"Limit must be between 1 and {GET_RECORDS_MAX}")
    with SIM_LOCK:
        iterator = _ITERATORS.get(token)
        if iterator is None:
            raise _error("ValidationException", "Invalid ShardIterator")
        stream = iterator.stream
        if stream.iterator_expired(iterator):
            raise _error("ExpiredIteratorException", "Iterator expired")
        shard = stream.shard(iterator.shard_id)
        if shard.dropped or (
            shard.trimmed_through is not None and iterator.position <= shard.trimmed_through
        ):
            raise _error(
                "TrimmedDataAccessException",
                f"Records at {iterator.position} of {shard.shard_id} are beyond the trim horizon",
            )
        records: list[dict[str, Any]] = []
        size = 0
        next_position = iterator.position
        for seq, record in shard.records:
            if seq < iterator.position:
                continue
            if len(records) == limit or size + record["dynamodb"]["SizeBytes"] > (
                GET_RECORDS_MAX_BYTES
            ):
                break
            size += record["dynamodb"]["SizeBytes"]
            records.append(
                {
                    **record,
                    "dynamodb": {
                        **record["dynamodb"],
                        "ApproximateCreationDateTime": _epoch(
                            record["dynamodb"]["ApproximateCreationDateTime"]
                        ),
                    },
                }
            )
            next_position = seq + 1
        result: dict[str, Any] = {"Records": records}
        if not (shard.closed and next_position >= shard.end_position()):
            result["NextShardIterator"] = _remember(
                SimIterator(stream, shard.shard_id, next_position, time.monotonic())
            )
    return json.dumps(result, default=_base64)


def _base64(value: object) -> str:
    """moto keeps binary attributes as bytes; on the wire they are base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot encode {type(value).__name__}")


_original_set_stream_specification = Table.set_stream_specification
_original_delete_table = DynamoDBBackend.delete_table


def _delete_table(self: DynamoDBBackend, name: str) -> Table:
    """Deleting a table closes its stream's shards, as on AWS; they stay readable for a while
    (here: for as long as a reader holds an iterator), and DescribeStream no longer finds it."""
    table = _original_delete_table(self, name)
    if isinstance(table.stream_shard, SimStream):
        table.stream_shard.close_all()
    return table


def _set_stream_specification(self: Table, streams: dict[str, Any] | None) -> None:
    _original_set_stream_specification(self, streams)
    if isinstance(self.stream_shard, StreamShard):
        self.stream_shard = SimStream(self)  # type: ignore[assignment]


def install() -> None:
    """Routes moto's stream model and the three stream read calls through this module."""
    Table.set_stream_specification = _set_stream_specification  # type: ignore[method-assign]
    DynamoDBBackend.delete_table = _delete_table  # type: ignore[method-assign]
    DynamoDBStreamsHandler.describe_stream = _describe_stream  # type: ignore[assignment,method-assign]
    DynamoDBStreamsHandler.get_shard_iterator = _get_shard_iterator  # type: ignore[assignment,method-assign]
    DynamoDBStreamsHandler.get_records = _get_records  # type: ignore[assignment,method-assign]
