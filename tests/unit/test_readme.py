"""The README's Python examples run, and the transform hook contract it states holds.

Every ```python block of the README is named by its first line (`# example: NAME`) and is either
run here or named below as run by another test: a new block nobody runs fails
`test_every_python_block_of_the_readme_is_run_by_a_test`. The hook example is installed as the
module its first lines name and loaded the way `run` loads it; the contract's claims (what a hook
gets, what each return value writes, REMOVE, `ttl_expirations`) are checked on the real
`RecordTransformer`, with the README's hook and with small hooks of each kind.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamsync import ChangeRecord, StreamsyncError, TableConfig, parse_config
from streamsync.transform.actions import Action, Hook, RecordTransformer, TransformError, load_hook
from streamsync.transform.records import parse_record
from tests.support.readme import hook_spec, python_blocks

# Blocks run by tests elsewhere, and which (they need the real services).
RUN_ELSEWHERE = {"embedding": "tests/integration/test_readme_examples.py"}
RUN_HERE = {"hook"}

TTL = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
VERSION = 12345


def test_every_python_block_of_the_readme_is_run_by_a_test() -> None:
    assert set(python_blocks()) == RUN_HERE | set(RUN_ELSEWHERE)
    root = Path(__file__).resolve().parents[2]
    for name, test in RUN_ELSEWHERE.items():
        assert f'python_blocks()["{name}"]' in (root / test).read_text(), (name, test)


def test_the_embedding_example_is_a_whole_program_not_a_fragment() -> None:
    """It used to have `async with` outside a function and names it never defined; running it
    for real needs the services (tests/integration/test_readme_examples.py)."""
    source = python_blocks()["embedding"]
    compile(source, "README.md (example: embedding)", "exec")
    assert "asyncio.run(main())" in source


# ---- the hook example --------------------------------------------------------------------------


@pytest.fixture
def hook_folder(tmp_path: Path) -> Path:
    """A folder holding the README's hook as the module it says it is (my_hooks/orders.py)."""
    module = hook_spec().partition(":")[0]
    path = tmp_path.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True)
    path.write_text(python_blocks()["hook"])
    return tmp_path


@pytest.fixture
def readme_hook(hook_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    """The README's hook, loaded as `run` loads it, with its folder on the path (PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(hook_folder))
    module = hook_spec().partition(":")[0]
    yield load_hook(hook_spec(), "tables[0].transform")
    for name in [module, module.partition(".")[0]]:  # so that no later test imports it by chance
        sys.modules.pop(name, None)


def test_a_hook_module_off_the_path_is_refused_naming_pythonpath(hook_folder: Path) -> None:
    with pytest.raises(StreamsyncError) as refused:
        load_hook(hook_spec(), "tables[0].transform")
    assert str(refused.value).startswith("tables[0].transform: cannot import module 'my_hooks")
    assert "PYTHONPATH" in str(refused.value)


def table(**settings: Any) -> TableConfig:
    document = {
        "aws": {"region": "us-east-1"},
        "elasticsearch": {"hosts": ["http://127.0.0.1:9"]},
        "tables": [{"table": "orders", "index": "orders", **settings}],
    }
    return parse_config(yaml.safe_dump(document)).tables[0]


def change(
    event: str,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A stream record of the order o-1, as GetRecords gives it."""
    images = {"NewImage": new, "OldImage": old}
    return {
        "eventName": event,
        "dynamodb": {
            "Keys": {"order_id": {"S": "o-1"}},
            "SequenceNumber": "4200",
            "ApproximateCreationDateTime": 1767225600.0,
            **{name: image for name, image in images.items() if image is not None},
        },
        **extra,
    }


ORDER = {
    "order_id": {"S": "o-1"},
    "status": {"S": "placed"},
    "quantity": {"N": "3"},
    "price": {"N": "2.5"},
    "note": {"S": "ring twice"},
}
DRAFT = {**ORDER, "status": {"S": "draft"}}


class Spy:
    """Wraps a hook, keeping every ChangeRecord it was given."""

    def __init__(self, hook: Hook) -> None:
        self.hook = hook
        self.seen: list[ChangeRecord] = []

    def __call__(self, record: ChangeRecord) -> Any:
        self.seen.append(record)
        return self.hook(record)


async def transformed(
    hook: Callable[[ChangeRecord], Any], raw: dict[str, Any], **settings: Any
) -> list[Action]:
    transformer = RecordTransformer(table(**settings), "order_id", None, hook)
    return await transformer.actions(parse_record(raw), "shard-1", VERSION)


def written(actions: list[Action]) -> list[tuple[str, str, str, Any]]:
    return [
        (a.op, a.index, a.doc_id, None if a.source is None else orjson.loads(a.source))
        for a in actions
    ]


async def test_the_readme_hook_indexes_an_order_with_its_total(readme_hook: Hook) -> None:
    spy = Spy(readme_hook)
    actions = await transformed(spy, change("INSERT", ORDER), exclude_fields=["note"])
    document = {"order_id": "o-1", "status": "placed", "quantity": 3, "price": 2.5, "total": 7.5}
    assert written(actions) == [("index", "orders", "o-1", document)]
    assert [a.version for a in actions] == [VERSION]
    [seen] = spy.seen
    assert (seen.table, seen.event_name, seen.keys) == ("orders", "INSERT", {"order_id": "o-1"})
    assert (seen.doc_id, seen.index, seen.sequence_number) == ("o-1", "orders", 4200)
    assert (seen.approximate_creation_time, seen.ttl_expiry) == (1767225600.0, False)
    assert seen.old_image is None  # an INSERT has no before
    assert "note" not in (seen.new_image or {})  # exclude_fields shaped the image it got


async def test_the_readme_hook_deletes_an_order_gone_back_to_draft(readme_hook: Hook) -> None:
    spy = Spy(readme_hook)
    actions = await transformed(spy, change("MODIFY", DRAFT, ORDER), exclude_fields=["note"])
    assert written(actions) == [("delete", "orders", "o-1", None)]
    [seen] = spy.seen
    assert (seen.old_image or {}).get("note") == "ring twice", "old_image: every attribute"


async def test_on_remove_the_readme_hook_gets_no_new_image_and_deletes(readme_hook: Hook) -> None:
    spy = Spy(readme_hook)
    actions = await transformed(spy, change("REMOVE", old=ORDER))
    assert written(actions) == [("delete", "orders", "o-1", None)]
    [seen] = spy.seen
    assert seen.new_image is None
    assert (seen.old_image or {}).get("status") == "placed"


async def test_the_readme_hook_keeps_orders_expired_by_time_to_live(readme_hook: Hook) -> None:
    spy = Spy(readme_hook)
    actions = await transformed(spy, change("REMOVE", old=ORDER, userIdentity=TTL))
    assert actions == []
    assert [seen.ttl_expiry for seen in spy.seen] == [True]


async def test_ttl_expirations_ignore_applies_before_the_hook(readme_hook: Hook) -> None:
    """Before, `ignore` was read only without a hook: with one it silently did nothing."""
    spy = Spy(lambda record: [{"op": "delete"}])
    expired = change("REMOVE", old=ORDER, userIdentity=TTL)
    assert await transformed(spy, expired, ttl_expirations="ignore") == []
    assert spy.seen == [], "the hook is not called for an expiry the table ignores"
    deleted = change("REMOVE", old=ORDER)
    assert written(await transformed(spy, deleted, ttl_expirations="ignore")) == [
        ("delete", "orders", "o-1", None)
    ]
    assert written(await transformed(spy, expired)) == [("delete", "orders", "o-1", None)]


# ---- the contract's return values, for every event ---------------------------------------------

EVENTS = [
    pytest.param(change("INSERT", ORDER), id="INSERT"),
    pytest.param(change("MODIFY", ORDER, DRAFT), id="MODIFY"),
    pytest.param(change("REMOVE", old=ORDER), id="REMOVE"),
]


@pytest.mark.parametrize("raw", EVENTS)
async def test_none_writes_nothing(raw: dict[str, Any]) -> None:
    assert await transformed(lambda record: None, raw) == []


@pytest.mark.parametrize("raw", EVENTS)
async def test_a_dict_is_indexed_as_is_under_the_default_id(raw: dict[str, Any]) -> None:
    document = {"note": "kept, whatever exclude_fields says", "n": 1}
    actions = await transformed(lambda record: document, raw, exclude_fields=["note"])
    assert written(actions) == [("index", "orders", "o-1", document)]


@pytest.mark.parametrize("raw", EVENTS)
async def test_a_list_of_actions_writes_each_where_it_says(raw: dict[str, Any]) -> None:
    returned = [
        {"op": "index", "document": {"a": 1}},
        {"op": "index", "index": "orders-by-day", "id": "2026-01-01", "document": {"b": 2}},
        {"op": "delete", "index": "old-orders"},
        {"op": "delete", "id": "o-0"},
    ]
    actions = await transformed(lambda record: returned, raw)
    assert written(actions) == [
        ("index", "orders", "o-1", {"a": 1}),
        ("index", "orders-by-day", "2026-01-01", {"b": 2}),
        ("delete", "old-orders", "o-1", None),
        ("delete", "orders", "o-0", None),
    ]
    assert {a.version for a in actions} == {VERSION}, "every action carries the change's version"
    assert await transformed(lambda record: [], raw) == []


@pytest.mark.parametrize("raw", EVENTS)
async def test_an_async_hook_is_awaited(raw: dict[str, Any]) -> None:
    async def hook(record: ChangeRecord) -> Any:
        return [{"op": "delete"}]

    assert written(await transformed(hook, raw)) == [("delete", "orders", "o-1", None)]


def explodes(record: ChangeRecord) -> Any:
    raise KeyError("price")


@pytest.mark.parametrize(
    ("hook", "error"),
    [
        (explodes, "KeyError: 'price'"),
        (lambda record: "a string", "the transform hook returned str"),
        (lambda record: [{"op": "upsert"}], "the transform hook returned the action"),
        (lambda record: [{"op": "index"}], "needs a 'document'"),
    ],
)
async def test_anything_else_or_an_exception_is_a_transform_error(hook: Hook, error: str) -> None:
    """A TransformError is what the shard reader turns into a dead letter."""
    with pytest.raises(TransformError, match=re.escape(error)):
        await transformed(hook, change("INSERT", ORDER))


async def test_max_document_bytes_applies_to_what_the_hook_returns() -> None:
    with pytest.raises(TransformError, match="more than max_document_bytes"):
        await transformed(lambda record: {"x": "y" * 100}, change("INSERT"), max_document_bytes=50)
