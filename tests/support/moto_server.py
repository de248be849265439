"""moto's DynamoDB + Streams server, in-process on 127.0.0.1, serialized and fault-injecting.

In-process (not a `moto_server` subprocess) because tests reach into moto's backend to split shards,
trim and expire iterators (`streams_sim`). Every request runs under one lock: moto serves requests
in threads and takes no lock of its own, so concurrent conditional writes (lease contention) are
not atomic without it; moto is bound by the GIL anyway, so throughput is unchanged.

Faults are injected in front of moto, per API action and optionally per table: AWS error codes
(throttling, LimitExceededException, HTTP 500), and delays, which stall a caller the way a slow
network or a paused process would. The injector also counts every request it sees.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from tests.support import streams_sim

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class Fault:
    action: str  # API action, e.g. "GetRecords" or "PutItem"
    table: str | None  # None: any table
    code: str | None  # AWS error code to answer with; None: pass the request on (after the delay)
    status: int
    message: str
    delay: float
    remaining: int  # how many matching requests it still applies to


def _table_of(body: dict[str, Any]) -> str | None:
    """The table a DynamoDB or Streams request is about, from whichever field names it."""
    if isinstance(body.get("TableName"), str):
        return str(body["TableName"])
    for field in ("StreamArn", "ShardIterator"):
        value = body.get(field)
        if isinstance(value, str) and ":table/" in value:
            return value.split(":table/", 1)[1].split("/", 1)[0]
    items = body.get("RequestItems")
    if isinstance(items, dict) and len(items) == 1:
        return str(next(iter(items)))
    return None


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.calls: Counter[tuple[str, str | None]] = Counter()

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
    ) -> Fault:
        fault = Fault(action, table, code, status, message, delay, times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.calls.clear()

    def count(self, action: str, table: str | None = None) -> int:
        with self._lock:
            return sum(n for (a, t), n in self.calls.items() if a == action and table in (None, t))

    def _take(self, action: str, table: str | None) -> Fault | None:
        with self._lock:
            self.calls[(action, table)] += 1
            for fault in self._faults:
                if fault.action == action and fault.table in (None, table) and fault.remaining:
                    fault.remaining -= 1
                    return fault
        return None

    def middleware(self, app: WsgiApp, lock: threading.Lock) -> WsgiApp:
        def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(raw)
            action = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            fault = self._take(action, _table_of(body) if isinstance(body, dict) else None)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.code is not None:
                payload = json.dumps({"__type": fault.code, "message": fault.message}).encode()
                start_response(
                    f"{fault.status} {HTTPStatus(fault.status).phrase}",
                    [
                        ("Content-Type", "application/x-amz-json-1.0"),
                        ("Content-Length", str(len(payload))),
                    ],
                )
                return [payload]
            with lock:
                return list(app(environ, start_response))

        return serve


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

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
