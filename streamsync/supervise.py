"""Background tasks that cannot end unnoticed.

asyncio forgets a task's exception until someone awaits it, so a task that dies (a lease
renewer refused with ExpiredToken, a checkpointer with AccessDenied) takes its work with it in
silence. Every background task is therefore started through a supervisor: when it ends other
than by being cancelled (with an error, or by returning while it should run forever), the end is
logged with its cause, counted (`streamsync_task_failures_total{task}`), and, unless the caller
recovers by itself, kept as a reason for /healthz to fail, so that the orchestrator restarts the
process (fresh credentials, fresh connections) instead of leaving a worker that looks alive and
does nothing.

The supervisor of the running StreamSync instance is found through a context variable (as the
retry counter is): the tasks of two instances side by side report to their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("streamsync.supervise")


class Supervisor:
    def __init__(self, on_failure: Callable[[str], None] | None = None) -> None:
        """`on_failure(task)`: counts a failure (the metric)."""
        self._on_failure = on_failure
        self._problems: dict[str, str] = {}  # task -> why it failed (the latest), for /healthz
        self._tasks: set[asyncio.Task[Any]] = set()  # asyncio only keeps weak references

    @property
    def problems(self) -> list[str]:
        """Why this process should be restarted (an empty list: it need not be)."""
        return list(self._problems.values())

    def spawn(
        self,
        work: Coroutine[Any, Any, T],
        task: str,
        *,
        ends: bool = False,
        name: str | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> asyncio.Task[T]:
        """Starts `work` as a supervised task. `task` names it in logs and the metric; `ends`:
        it may return (otherwise only a cancellation is a normal end); `fields` go to the log."""
        started = asyncio.create_task(work, name=name or task)
        self._tasks.add(started)
        started.add_done_callback(lambda done: self._ended(done, task, ends, fields))
        return started

    def _ended(
        self, done: asyncio.Task[Any], task: str, ends: bool, fields: Mapping[str, object] | None
    ) -> None:
        self._tasks.discard(done)
        if done.cancelled():
            return
        error = done.exception()
        if error is None and ends:
            return
        self.failed(task, error, fields=fields)

    def failed(
        self,
        task: str,
        error: BaseException | None,
        *,
        recovery: str | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> None:
        """Reports a failure of `task` (`error` None: it ended although it should not have).
        `recovery`: how the caller recovers by itself; without one, only a restart helps and
        /healthz fails from now on."""
        cause = "it ended unexpectedly" if error is None else _describe(error)
        then = recovery or "a restart is needed: /healthz fails from now on"
        log.error(
            "%s failed: %s; %s",
            task,
            cause,
            then,
            exc_info=error,
            extra={"task": task, "cause": cause, **(fields or {})},
        )
        if self._on_failure is not None:
            self._on_failure(task)
        if recovery is None:
            self._problems[task] = f"{task} failed ({cause})"


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# Outside a StreamSync instance's run() (a component used on its own), failures are logged only.
_UNSUPERVISED = Supervisor()
current: ContextVar[Supervisor] = ContextVar("streamsync_supervisor", default=_UNSUPERVISED)


def spawn(
    work: Coroutine[Any, Any, T],
    task: str,
    *,
    ends: bool = False,
    name: str | None = None,
    fields: Mapping[str, object] | None = None,
) -> asyncio.Task[T]:
    """Starts `work` under the current supervisor (see `Supervisor.spawn`)."""
    return current.get().spawn(work, task, ends=ends, name=name, fields=fields)


def failed(
    task: str,
    error: BaseException | None,
    *,
    recovery: str | None = None,
    fields: Mapping[str, object] | None = None,
) -> None:
    """Reports a failure to the current supervisor (see `Supervisor.failed`)."""
    current.get().failed(task, error, recovery=recovery, fields=fields)
