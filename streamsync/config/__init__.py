"""The configuration file: which DynamoDB tables feed which Elasticsearch indexes, and how.

A sync daemon that starts with a bad configuration fails later and far from the cause: a misspelt
key silently ignored, a timeout of zero, a secret echoed into a log. So the whole file is checked
here, before anything connects, and every problem comes back at once as one line naming the key
path and what is expected (`ConfigError`), never as a pydantic or YAML traceback. Secrets can come
from the environment (`${VAR}` in any string, or the STREAMSYNC_ES_* variables) so that they need
not live in the file, and they never appear in error messages or reprs.

The models are in `schema` (with `clusters` and `values`), the reading and `${VAR}` expansion in
`environment`, the rendering of pydantic's errors in `problems`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from streamsync.config.clusters import ElasticsearchConfig, OpenSearchConfig, SigV4Config
from streamsync.config.environment import (
    _expand,
    _read_text,
    _read_yaml,
    _with_listen_default,
    _with_overrides,
)
from streamsync.config.problems import _file_order, _lines, _problem
from streamsync.config.schema import (
    AwsConfig,
    BulkConfig,
    Config,
    DeadLettersConfig,
    LeasesConfig,
    ObservabilityConfig,
    PollingConfig,
    StartPosition,
    TableConfig,
    _cluster_problem,
    _Loc,
)
from streamsync.errors import ConfigError

__all__ = [
    "AwsConfig",
    "BulkConfig",
    "Config",
    "DeadLettersConfig",
    "ElasticsearchConfig",
    "LeasesConfig",
    "ObservabilityConfig",
    "OpenSearchConfig",
    "PollingConfig",
    "SigV4Config",
    "StartPosition",
    "TableConfig",
    "load_config",
    "parse_config",
]


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML file at `path`; raise ConfigError listing every problem."""
    return parse_config(_read_text(Path(path)), str(path), environ)


def parse_config(
    text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate YAML `text`; `source` prefixes every problem line; `environ` defaults to
    os.environ."""
    env = os.environ if environ is None else environ
    unresolved: list[tuple[_Loc, str]] = []
    data = _expand(_read_yaml(text, source), (), env, unresolved)
    data = _with_overrides(data, env, unresolved)
    data = _with_listen_default(data, env, unresolved)
    # Reported here, with the other problems: the model's own check runs only on a valid file.
    cluster = _cluster_problem("elasticsearch" in data, "opensearch" in data)
    early = unresolved + ([cluster] if cluster else [])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        skipped = {loc for loc, _ in unresolved}  # already reported: a variable is unset there
        invalid = [_problem(e) for e in exc.errors() if e["loc"] not in skipped and e["loc"]]
        raise ConfigError(_lines(source, sorted(early + invalid, key=_file_order))) from None
    if early:
        raise ConfigError(_lines(source, early))
    return config
