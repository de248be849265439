"""The HTTP endpoints an orchestrator and Prometheus use: /metrics, /healthz, /readyz.

/healthz answers whether the process is alive: its event loop not stalled, its engine running and
none of its background tasks failed in a way only a restart fixes (a probe that fails restarts
the pod); /readyz whether the worker does its job: leases renewing, the cluster taking bulk
requests, initial loads done (a failing one only reports, nothing restarts). Served by aiohttp on
the configured address, in the same loop as the engine, from before the initial loads on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamsync.errors import StreamsyncError

STALLED_AFTER_SECONDS = 10.0


class HealthServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Callable[[], list[str]],
        liveness: Callable[[], list[str]],
    ) -> None:
        """`readiness` and `liveness`: why the instance is not ready, or should be restarted
        (empty lists: all is well)."""
        self._registry = registry
        self._readiness = readiness
        self._liveness = liveness
        self._tick = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or "127.0.0.1", int(port))
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._ticker = asyncio.create_task(self._tick_forever())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._runner is not None:
            await self._runner.cleanup()

    async def _tick_forever(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(1)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        stalled = time.monotonic() - self._tick
        reasons = self._liveness()
        if reasons:
            return web.json_response({"ok": False, "reason": "; ".join(reasons)}, status=503)
        if stalled > STALLED_AFTER_SECONDS:
            reason = f"the event loop stalled for {stalled:.0f} s"
            return web.json_response({"ok": False, "reason": reason}, status=503)
        return web.json_response({"ok": True})

    async def _readyz(self, _: web.Request) -> web.Response:
        reasons = self._readiness()
        return web.json_response(
            {"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200
        )


@contextlib.asynccontextmanager
async def serving(
    listen: str | None,
    registry: CollectorRegistry,
    readiness: Callable[[], list[str]],
    liveness: Callable[[], list[str]],
) -> AsyncIterator[HealthServer | None]:
    """A HealthServer at `listen` for the block (None: no server)."""
    if listen is None:
        yield None
        return
    server = HealthServer(registry, readiness, liveness)
    try:
        await server.start(listen)
    except OSError as error:
        raise StreamsyncError(
            f"observability.listen {listen}: cannot serve there ({error.strerror}); choose "
            "another address, port 0 for any free port, or null for no HTTP server"
        ) from error
    try:
        yield server
    finally:
        await server.stop()
