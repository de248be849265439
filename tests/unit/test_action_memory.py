"""What a queued action costs in memory: up to `batching.queue_size` (10,000) of them wait at
once on a busy worker, so each should weigh about what its JSON does. Measured with tracemalloc
(allocations, not time): orjson's output is a bytes object of at least 4 KB whatever its length,
and kept as it came, a 350-byte document and its 800-byte record cost 8 KB an action."""

from __future__ import annotations

import tracemalloc

from streamsync.transform.actions import RecordTransformer
from streamsync.transform.records import parse_record
from tests.support.inmemory import config


def order(n: int) -> dict[str, object]:
    image = {
        "pk": {"S": f"order-{n}"},
        "customer": {"S": f"customer-{n % 97}"},
        "total": {"N": f"{n * 3.25:.2f}"},
        "tags": {"SS": ["gift", "express"]},
        "address": {"M": {"street": {"S": "1 Main Street"}, "city": {"S": "Springfield"}}},
        "lines": {"L": [{"M": {"sku": {"S": f"sku-{i}"}, "qty": {"N": str(i)}}} for i in range(3)]},
    }
    return {
        "eventID": f"event-{n}",
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "ApproximateCreationDateTime": 1700000000,
            "Keys": {"pk": image["pk"]},
            "NewImage": image,
            "SequenceNumber": str(1000 + n),
            "SizeBytes": 400,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


async def test_a_queued_action_weighs_about_what_its_json_does() -> None:
    transformer = RecordTransformer(config().tables[0], "pk", None, None)
    records = [parse_record(order(n)) for n in range(1000)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        actions = [a for n, r in enumerate(records) for a in await transformer.actions(r, "s", n)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    allocated = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    json_bytes = sum(len(a.source or b"") + len(a.origin.record) for a in actions)
    assert len(actions) == 1000
    assert allocated / len(actions) <= json_bytes / len(actions) + 400, "bytes plus small objects"
