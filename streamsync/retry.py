"""Retrying what is worth retrying, for as long as it takes, and out loud.

A stream consumer must not give up on throttling or a cluster that is briefly away: giving up
loses data or stalls a shard. So transient failures are retried without limit, with exponential
backoff and jitter (tenacity), and every retry is logged and counted so a stuck dependency is
visible. The first attempt runs outside tenacity: it is on every hot path and nearly always
succeeds, and tenacity's bookkeeping would cost more than the call's own work.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection
from contextvars import ContextVar
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

T = TypeVar("T")

log = logging.getLogger("streamsync.retry")

BACKOFF = wait_random_exponential(multiplier=0.1, max=10)
FIRST_RETRY_SECONDS = 0.1

# Counts retries (by what was retried) for the StreamSync instance whose tasks are running: each
# instance sets it in its own context, so instances side by side count separately.
on_retry: ContextVar[Callable[[str, str], None] | None] = ContextVar("on_retry", default=None)


Tables = Callable[[], Collection[str]]


def _note(
    what: str,
    fields: dict[str, object],
    tables: Tables | None,
    error: object,
    attempt: int,
    wait: float,
) -> None:
    count = on_retry.get()
    if count is not None:
        for table in tables() if tables is not None else [str(fields.get("table", ""))]:
            count(what, table)
    log.warning(
        "%s failed, retrying: %s",
        what,
        error,
        extra={**fields, "attempt": attempt, "retry_in_seconds": round(wait, 3)},
    )


def _log_retry(
    what: str, fields: dict[str, object], tables: Tables | None
) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _note(what, fields, tables, error, state.attempt_number + 1, state.upcoming_sleep)

    return before_sleep


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    what: str,
    transient: Callable[[BaseException], bool],
    **fields: object,
) -> T:
    """Runs `call` until it succeeds or fails with an error `transient` says is permanent. Each
    retry is counted for the `table` field's table ("" for none: the lease table's work)."""
    return await _retrying(call, what, transient, None, fields)


async def retry_transient_per_table(
    call: Callable[[], Awaitable[T]],
    what: str,
    transient: Callable[[BaseException], bool],
    tables: Tables,
    **fields: object,
) -> T:
    """`retry_transient` for a call that serves several tables at once (a bulk request): each
    retry is counted once for each table `tables()` names at that retry, since what is left to
    send changes between attempts."""
    return await _retrying(call, what, transient, tables, fields)


async def _retrying(
    call: Callable[[], Awaitable[T]],
    what: str,
    transient: Callable[[BaseException], bool],
    tables: Tables | None,
    fields: dict[str, object],
) -> T:
    try:
        return await call()
    except Exception as error:
        if not transient(error):
            raise
        wait = random.uniform(0, FIRST_RETRY_SECONDS)
        _note(what, fields, tables, error, 1, wait)
        await asyncio.sleep(wait)
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(transient),
        wait=BACKOFF,
        before_sleep=_log_retry(what, fields, tables),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: AsyncRetrying either returns or raises")
