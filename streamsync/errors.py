"""Errors streamsync raises for users to act on, as opposed to bugs, which stay tracebacks."""

from __future__ import annotations


class StreamsyncError(Exception):
    """An error a user can act on: its message names the thing and the fix, one line per problem."""


class ConfigError(StreamsyncError):
    """The configuration is unusable; `problems` holds one line per problem, all found at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


class Passing(str):
    """A problem line that goes away by itself: the cluster is restarting or the network is down,
    not misconfigured. `run` waits such problems out, reporting not-ready, rather than exiting:
    exiting would make a crash loop of every cluster maintenance window."""
