"""From the file on disk to the data the schema validates: reading, YAML, and the environment.

Variables are substituted after YAML parsing, so that a value cannot inject YAML structure; one
that cannot be resolved is kept as written and reported along with the schema's problems, so that
a single run names them all. The STREAMSYNC_ES_* variables override the cluster's credentials, so
that those need not be in the file even as a `${VAR}`; STREAMSYNC_LISTEN is the probes' address
where the file names none (the container image's default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from streamsync.config.problems import _shown
from streamsync.config.schema import _Loc
from streamsync.config.values import _listen_address
from streamsync.errors import ConfigError


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{path}: not UTF-8 text (invalid byte at offset {exc.start})"]
        ) from None


def _read_yaml(text: str, source: str) -> dict[Any, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: {_yaml_problem(exc)}"]) from None
    if not isinstance(data, dict):
        kind = {type(None): "an empty document", list: "a list"}.get(type(data), _shown(data))
        expected = "a mapping with at least the keys aws, elasticsearch (or opensearch) and tables"
        raise ConfigError([f"{source}: the top level must be {expected} (got {kind})"])
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"invalid YAML ({_one_line(str(exc))})"
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}invalid YAML ({exc.problem or exc.context})"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# Environment: `${VAR}`, `${VAR:-default}` and `$$` in string values; anything else after a `$`
# is kept as written, except a `${` that does not form a reference, which is reported.
_REFERENCE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\{)"
)


def _expand(
    value: Any, loc: _Loc, env: Mapping[str, str], unresolved: list[tuple[_Loc, str]]
) -> Any:
    """`value` with the variables in its strings substituted, after YAML parsing so that a
    variable cannot inject YAML structure; references that cannot be resolved are kept as written
    and reported in `unresolved`."""
    if isinstance(value, dict):
        return {key: _expand(item, (*loc, key), env, unresolved) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, (*loc, i), env, unresolved) for i, item in enumerate(value)]
    if isinstance(value, str):
        return _REFERENCE.sub(lambda match: _substitute(match, loc, env, unresolved), value)
    return value


def _substitute(
    match: re.Match[str], loc: _Loc, env: Mapping[str, str], unresolved: list[tuple[_Loc, str]]
) -> str:
    if match["dollar"]:
        return "$"
    name, default = match["name"], match["default"]
    if name is None:
        problem = "invalid variable reference: write ${NAME} or ${NAME:-default}, and $$ for a $"
    elif default is not None and not env.get(name):  # like the shell: unset or empty
        return default
    elif name in env:
        return env[name]
    else:
        problem = f"environment variable {name} is not set (set it, or write ${{{name}:-default}})"
    unresolved.append((loc, problem))
    return match[0]


_ES_OVERRIDES = {
    "STREAMSYNC_ES_API_KEY": "api_key",
    "STREAMSYNC_ES_USERNAME": "username",
    "STREAMSYNC_ES_PASSWORD": "password",
}


def _with_overrides(
    data: dict[Any, Any], env: Mapping[str, str], problems: list[tuple[_Loc, str]]
) -> dict[Any, Any]:
    """`data` with the cluster credentials given by non-empty STREAMSYNC_ES_* variables (named
    for Elasticsearch, they apply to an opensearch section too)."""
    overrides = {key: env[var] for var, key in _ES_OVERRIDES.items() if env.get(var)}
    name = "opensearch" if "opensearch" in data else "elasticsearch"
    section = data.get(name, {})
    if not overrides or not isinstance(section, dict):
        return data
    if name == "opensearch" and overrides.pop("api_key", None) is not None:
        problems.append(
            (
                (name,),
                "STREAMSYNC_ES_API_KEY is set, but OpenSearch has no API keys: unset it, and "
                "give username and password or aws_sigv4",
            )
        )
    return {**data, name: {**section, **overrides}}


def _with_listen_default(
    data: dict[Any, Any], env: Mapping[str, str], problems: list[tuple[_Loc, str]]
) -> dict[Any, Any]:
    """`data` with `observability.listen` from STREAMSYNC_LISTEN when the file names none. The
    container image sets it to 0.0.0.0:9108, the one address kubelet's probes and Docker's health
    check reach in a container, while the library's own default stays on loopback."""
    listen = env.get("STREAMSYNC_LISTEN")
    section = data.get("observability", {})
    if not listen or not isinstance(section, dict) or "listen" in section:
        return data
    try:
        _listen_address(listen)
    except ValueError as error:
        problems.append((("observability", "listen"), f"STREAMSYNC_LISTEN={listen}: {error}"))
    return {**data, "observability": {**section, "listen": listen}}
