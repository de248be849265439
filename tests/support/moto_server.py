"""moto's DynamoDB + Streams server, in-process on 127.0.0.1, serialized and fault-injecting.

It serves every service moto has at the same endpoint, STS included (AssumeRole answers with keys
moto then maps to the role's account, so a role in another account reads that account's tables).

In-process (not a `moto_server` subprocess) because tests reach into moto's backend to split shards,
trim and expire iterators (`streams_sim`). Every request runs under one lock: moto serves requests
in threads and takes no lock of its own, so concurrent conditional writes (lease contention) are
not atomic without it; moto is bound by the GIL anyway, so throughput is unchanged.

In front of moto sits a fault injector: AWS error codes (throttling, LimitExceededException,
HTTP 500) and delays (a stalled caller, as a slow network or a paused process would make it), per
API action, table, and optionally any predicate on the request. It also lets tests observe every
request (who sent it: the access key) and keep a history of a table's writes with the item as it
was before and after each one, taken under the lock, so they are exact.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from tests.support import streams_sim

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
_ACCESS_KEY = re.compile(r"Credential=([^/]+)/")
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Request:
    action: str  # e.g. "GetRecords", "PutItem" or "AssumeRole"
    table: str | None
    body: dict[str, Any]  # JSON body, or form fields (STS)
    access_key: str | None  # who sent it (processes can be told apart by their keys)
    time: float  # time.monotonic() when it arrived


@dataclass
class Fault:
    action: str
    table: str | None  # None: any table
    code: str | None  # AWS error code to answer with; None: pass the request on (after the delay)
    status: int
    message: str
    delay: float
    remaining: int  # how many matching requests it still applies to
    match: Callable[[Request], bool] | None = None


@dataclass(frozen=True)
class Write:
    """One write to a recorded table, with the item before and after it (DynamoDB JSON)."""

    request: Request
    status: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass
class _History:
    writes: list[Write] = field(default_factory=list)


def _table_of(body: dict[str, Any]) -> str | None:
    """The table a DynamoDB or Streams request is about, from whichever field names it."""
    if isinstance(body.get("TableName"), str):
        return str(body["TableName"])
    for name in ("StreamArn", "ShardIterator"):
        value = body.get(name)
        if isinstance(value, str) and ":table/" in value:
            return value.split(":table/", 1)[1].split("/", 1)[0]
    items = body.get("RequestItems")
    if isinstance(items, dict) and len(items) == 1:
        return str(next(iter(items)))
    return None


def _body_of(raw: bytes, query_protocol: bool) -> dict[str, Any]:
    """A request's parameters: its JSON body (DynamoDB, Streams), or its form (STS, whose
    query protocol names the action in the form's Action)."""
    if query_protocol:
        return dict(parse_qsl(raw.decode()))
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_answer(fault: Fault, query_protocol: bool) -> tuple[str, bytes]:
    """The refusal `fault` stands for, in the protocol the request came in."""
    assert fault.code is not None
    if not query_protocol:
        return "application/x-amz-json-1.0", json.dumps(
            {"__type": fault.code, "message": fault.message}
        ).encode()
    xml = (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{escape(fault.code)}</Code><Message>{escape(fault.message)}</Message>"
        "</Error><RequestId>injected</RequestId></ErrorResponse>"
    )
    return "text/xml", xml.encode()


def _item(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The stored item with the key in `key` (a Key map, or a whole item)."""
    backend = dynamodb_backends["123456789012"]["us-east-1"]
    moto_table = backend.get_table(table)
    hash_value = DynamoType(key[moto_table.hash_key_attr])
    range_value = DynamoType(key[moto_table.range_key_attr]) if moto_table.range_key_attr else None
    item = moto_table.get_item(hash_value, range_value)
    return dict(item.to_json()["Attributes"]) if item is not None else None


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.calls: Counter[tuple[str, str | None]] = Counter()
        self.observers: list[Callable[[Request], None]] = []
        self._histories: dict[str, _History] = {}

    def inject(
        self,
        action: str,
        code: str | None = None,
        *,
        status: int = 400,
        message: str = "injected by the test",
        table: str | None = None,
        times: int = 1,
        delay: float = 0.0,
        match: Callable[[Request], bool] | None = None,
    ) -> Fault:
        fault = Fault(action, table, code, status, message, delay, times, match)
        with self._lock:
            self._faults.append(fault)
        return fault

    def record_writes(self, table: str) -> list[Write]:
        """Starts keeping the history of `table`'s writes; returns the (growing) list."""
        with self._lock:
            history = self._histories.setdefault(table, _History())
        return history.writes

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.calls.clear()
            self.observers.clear()
            self._histories.clear()

    def count(self, action: str, table: str | None = None) -> int:
        with self._lock:
            return sum(n for (a, t), n in self.calls.items() if a == action and table in (None, t))

    def _take(self, request: Request) -> Fault | None:
        with self._lock:
            self.calls[(request.action, request.table)] += 1
            observers = list(self.observers)
            chosen = None
            for fault in self._faults:
                if (
                    fault.action == request.action
                    and fault.table in (None, request.table)
                    and fault.remaining
                    and (fault.match is None or fault.match(request))
                ):
                    fault.remaining -= 1
                    chosen = fault
                    break
        for observe in observers:
            observe(request)
        return chosen

    def middleware(self, app: WsgiApp, lock: threading.Lock) -> WsgiApp:
        def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(raw)
            query_protocol = environ.get("CONTENT_TYPE", "").startswith(FORM)
            body = _body_of(raw, query_protocol)
            key = _ACCESS_KEY.search(environ.get("HTTP_AUTHORIZATION", ""))
            request = Request(
                action=environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
                or str(body.get("Action", "")),
                table=_table_of(body),
                body=body,
                access_key=key.group(1) if key else None,
                time=time.monotonic(),
            )
            fault = self._take(request)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.code is not None:
                content_type, payload = _error_answer(fault, query_protocol)
                start_response(
                    f"{fault.status} {HTTPStatus(fault.status).phrase}",
                    [("Content-Type", content_type), ("Content-Length", str(len(payload)))],
                )
                return [payload]
            with lock:
                history = self._histories.get(request.table or "")
                if history is None or request.action not in WRITES:
                    return list(app(environ, start_response))
                return self._recorded(app, environ, start_response, request, history)

        return serve

    @staticmethod
    def _recorded(
        app: WsgiApp,
        environ: dict[str, Any],
        start_response: StartResponse,
        request: Request,
        history: _History,
    ) -> list[bytes]:
        assert request.table is not None
        key = request.body.get("Key") or request.body.get("Item", {})
        before = _item(request.table, key)
        status: list[int] = []

        def capture(status_line: str, headers: Any, *args: Any) -> Any:
            status.append(int(status_line.split(" ", 1)[0]))
            return start_response(status_line, headers, *args)

        response = list(app(environ, capture))
        history.writes.append(Write(request, status[0], before, _item(request.table, key)))
        return response


class StreamsServer:
    """Serves DynamoDB and DynamoDB Streams on 127.0.0.1 at a free port, until stopped."""

    def __init__(self) -> None:
        streams_sim.install()
        self.faults = FaultInjector()
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            "127.0.0.1",
            0,
            self.faults.middleware(app, self._lock),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.endpoint_url

    def forget_tables(self) -> None:
        """Drops every table (and stream iterator) the last test created. Tables are unique per
        test, so nothing later needs them; kept, they grew the test process's heap by the
        hundreds of thousands of objects over a suite run, and moto, which serves from that
        process, answered ever slower under its garbage collections."""
        with self._lock:
            for account in list(dynamodb_backends):  # tables in other accounts (roles) too
                dynamodb_backends[account]["us-east-1"].tables.clear()
            streams_sim.forget_iterators()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
