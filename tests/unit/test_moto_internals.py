"""The moto internals that tests/support/streams_sim.py replaces are still the ones it expects.

If moto changes them, these fail with a clear message instead of the simulator misbehaving.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import StreamRecord, Table
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler


def test_moto_is_the_pinned_version() -> None:
    assert version("moto") == "5.2.5", "streams_sim patches moto 5.2.5 internals; re-check them"


def test_writes_reach_the_stream_only_through_stream_shard_add() -> None:
    table_source = inspect.getsource(Table)
    backend_source = inspect.getsource(DynamoDBBackend.update_item)
    assert table_source.count("self.stream_shard.add(") == 2  # put_item and delete_item
    assert "table.stream_shard.add(" in backend_source


def test_stream_model_hooks_keep_their_signatures() -> None:
    assert list(inspect.signature(Table.set_stream_specification).parameters) == [
        "self",
        "streams",
    ]
    assert list(inspect.signature(StreamRecord.__init__).parameters) == [
        "self",
        "table",
        "stream_type",
        "event_name",
        "old",
        "new",
        "seq",
    ]
    assert list(inspect.signature(DynamoDBBackend.delete_table).parameters) == ["self", "name"]
    for handler in ("describe_stream", "get_shard_iterator", "get_records"):
        assert callable(getattr(DynamoDBStreamsHandler, handler))
