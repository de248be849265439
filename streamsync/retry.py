"""Retrying what is worth retrying, for as long as it takes, and out loud.

A stream consumer must not give up on throttling or a cluster that is briefly away: giving up
loses data or stalls a shard. So transient failures are retried without limit, with exponential
backoff and jitter, and every retry is logged so a stuck dependency is visible.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

T = TypeVar("T")

log = logging.getLogger("streamsync.retry")

BACKOFF = wait_random_exponential(multiplier=0.1, max=10)

# Counts retries (by what was retried) for the StreamSync instance whose tasks are running: each
# instance sets it in its own context, so instances side by side count separately.
on_retry: ContextVar[Callable[[str, str], None] | None] = ContextVar("on_retry", default=None)


def _log_retry(what: str, fields: dict[str, object]) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        count = on_retry.get()
        if count is not None:
            count(what, str(fields.get("table", "")))
        log.warning(
            "%s failed, retrying: %s",
            what,
            error,
            extra={
                **fields,
                "attempt": state.attempt_number,
                "retry_in_seconds": round(state.upcoming_sleep, 3),
            },
        )

    return before_sleep


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    what: str,
    transient: Callable[[BaseException], bool],
    **fields: object,
) -> T:
    """Runs `call` until it succeeds or fails with an error `transient` says is permanent."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(transient),
        wait=BACKOFF,
        before_sleep=_log_retry(what, fields),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: AsyncRetrying either returns or raises")
