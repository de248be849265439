"""Which dead letters `dlq list` and `dlq delete` are about: by name, table, error, age, and
whether a newer change superseded them. Pure, so the choice a delete makes is tested without a
cluster; the commands only read the letters and act on what this chose."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import orjson

from streamsync.errors import StreamsyncError
from streamsync.sink.deadletter import DeadLetter

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `30m`, `12h`, `7d` or `2w`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: a number and a unit (s, m, h, d or w), "
            "as in 90s, 30m, 12h or 7d"
        )
    return float(match[1]) * _SECONDS[match[2].lower()]


def age_text(seconds: float | None) -> str:
    """`45s`, `12m`, `5h 3m`, `3d 4h`: how long ago, to the precision a person reads; `-` for
    a letter with no time."""
    if seconds is None:
        return "-"
    whole = max(int(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def age_of(letter: DeadLetter, now: float) -> float | None:
    """Seconds since the letter was stored; None when it carries no time."""
    return now - letter.time if letter.time else None


def resolve_names(given: Iterable[str], known: Collection[str]) -> set[str]:
    """The letters' full names for the names (or unique beginnings of names) given, as git
    takes commits: a beginning that names no letter, or several, is an error, so that a
    delete never removes a letter its user did not mean."""
    resolved: set[str] = set()
    problems: list[str] = []
    for name in given:
        matching = sorted(k for k in set(known) if k.startswith(name))
        if not matching:
            problems.append(f"no dead letter {name}; `streamsync dlq list` shows their ids")
        elif len(matching) > 1 and name not in matching:
            problems.append(
                f"{name} begins the ids of {len(matching)} dead letters; give more of the id"
            )
        else:
            resolved.add(name if name in matching else matching[0])
    if problems:
        raise StreamsyncError("\n".join(problems))
    return resolved


@dataclass(frozen=True)
class LetterFilter:
    """Letters match every filter given (none given: every letter)."""

    names: frozenset[str] = frozenset()  # full names (see resolve_names)
    tables: frozenset[str] = frozenset()
    error: str | None = None  # in the reason or the error's text, in any case
    older_than: float | None = None  # seconds
    superseded: bool = False  # only letters a newer change superseded

    @property
    def narrows(self) -> bool:
        """Whether any filter was given: `dlq delete` wants one, or `--all`."""
        chosen = (self.error, self.older_than)
        return bool(self.names or self.tables or self.superseded) or chosen != (None, None)

    def matches(self, name: str, letter: DeadLetter, now: float, superseded: bool) -> bool:
        if self.names and name not in self.names:
            return False
        if self.tables and letter.table not in self.tables:
            return False
        if self.error is not None and self.error.lower() not in _error_text(letter):
            return False
        if self.older_than is not None:
            age = age_of(letter, now)
            if age is None or age <= self.older_than:
                return False
        return superseded or not self.superseded


def _error_text(letter: DeadLetter) -> str:
    return f"{letter.reason} {orjson.dumps(letter.error).decode()}".lower()
