"""Pydantic's validation errors rewritten as one line each, naming the key path and what is
expected.

An operator reads these, not a developer: pydantic's own messages name its internal types, show
secrets as they were given and come in validation order. Here a value is shown as it was written
in YAML unless it may be a secret, bounds are read back from the schema, and problems are listed in
the order of the file's sections.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, get_args

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from streamsync.config.schema import Config, _Loc

_MESSAGES = {
    "missing": "required",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
    "path_type": "must be a file path",
}
_BOUNDS = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def _problem(error: ErrorDetails) -> tuple[_Loc, str]:
    loc, kind, value = error["loc"], error["type"], error["input"]
    if kind == "invalid_key":  # the loc ends with the offending key, not a path element
        return loc[:-1], f"keys must be strings (got {_shown(value)})"
    message = _message(error)
    if kind == "extra_forbidden" or isinstance(value, dict | list) or _is_secret(loc):
        return loc, message
    return loc, f"{message} (got {_shown(value)})"


def _message(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        return _unknown_key(error["loc"][:-1])
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    if kind in _BOUND_ERRORS:
        _, field = _resolve(error["loc"])
        return _range((_bounds(field) if field else {}) or ctx)
    return _MESSAGES.get(kind, error["msg"])


def _unknown_key(parent: _Loc) -> str:
    model, _ = _resolve(parent)
    if model is None:
        return "unknown key"
    return f"unknown key (expected one of: {', '.join(model.model_fields)})"


def _bounds(field: FieldInfo) -> dict[str, Any]:
    return {name: getattr(m, name) for m in field.metadata for name in _BOUNDS if hasattr(m, name)}


def _range(bounds: Mapping[str, Any]) -> str:
    """`{"ge": 1, "le": 64}` as "must be between 1 and 64", `{"gt": 0}` as "must be greater
    than 0"."""
    if bounds.keys() == {"ge", "le"}:
        return f"must be between {bounds['ge']} and {bounds['le']}"
    return "must be " + " and ".join(f"{_BOUNDS[name]} {limit}" for name, limit in bounds.items())


def _is_secret(loc: _Loc) -> bool:
    """Whether the value at `loc` may be a secret; true when unsure."""
    _, field = _resolve(loc)
    return field is None or any(t is SecretStr for t in _types_in(field.annotation))


def _resolve(loc: _Loc) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model reached by following `loc` from Config, and the last field on the way (list
    items count as their list); None where `loc` leaves the models."""
    model: type[BaseModel] | None = Config
    field: FieldInfo | None = None
    for key in loc:
        if isinstance(key, str):
            field = model.model_fields.get(key) if model else None
            model = _model_in(field.annotation) if field else None
    return model, field


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model in an annotation such as `LeasesConfig` or `list[TableConfig]`."""
    models = (t for t in _types_in(annotation) if isinstance(t, type) and issubclass(t, BaseModel))
    return next(models, None)


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in get_args(annotation):
        yield from _types_in(arg)


def _shown(value: Any) -> str:
    """`value` as the user wrote it in YAML, with any password in a URL masked."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(_URL_USERINFO.sub("***@", value))
    return str(value)


def _file_order(problem: tuple[_Loc, str]) -> int:
    """Problems are listed in the order of the sections they are in (a stable sort)."""
    sections = list(Config.model_fields)
    top = problem[0][0] if problem[0] else None
    return sections.index(top) if top in sections else len(sections)


def _lines(source: str, problems: list[tuple[_Loc, str]]) -> list[str]:
    return [
        f"{source}: {_path(loc)}: {message}" if loc else f"{source}: {message}"
        for loc, message in problems
    ]


def _path(loc: _Loc) -> str:
    """`("tables", 0, "index")` as "tables[0].index"."""
    path = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in loc)
    return path.removeprefix(".")
