"""The configuration file: which DynamoDB tables feed which Elasticsearch indexes, and how.

A sync daemon that starts with a bad configuration fails later and far from the cause: a misspelt
key silently ignored, a timeout of zero, a secret echoed into a log. So the whole file is checked
here, before anything connects, and every problem comes back at once as one line naming the key
path and what is expected (`ConfigError`), never as a pydantic or YAML traceback. Secrets can come
from the environment (`${VAR}` in any string, or the STREAMSYNC_ES_* variables) so that they need
not live in the file, and they never appear in error messages or reprs.
"""

from __future__ import annotations

import keyword
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from streamsync.errors import ConfigError

__all__ = [
    "AwsConfig",
    "BulkConfig",
    "Config",
    "DeadLettersConfig",
    "ElasticsearchConfig",
    "LeasesConfig",
    "ObservabilityConfig",
    "PollingConfig",
    "StartPosition",
    "TableConfig",
    "load_config",
    "parse_config",
]

StartPosition = Literal["TRIM_HORIZON", "LATEST"]

_Loc = tuple[int | str, ...]
"""A key path as pydantic reports it: `("tables", 0, "index")` is `tables[0].index`."""


# Value checks. Each raises ValueError with what is expected; the offending value is appended
# when the message is rendered, unless it is a secret.


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        # Reading .port raises ValueError when the port is not a number in 0..65535.
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise ValueError("must be an http:// or https:// URL, like http://127.0.0.1:9200")
    return value


_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


def _table_name(value: str) -> str:
    if not _TABLE_NAME.fullmatch(value):
        raise ValueError("must be a DynamoDB table name: 3 to 255 letters, digits, '_', '-' or '.'")
    return value


_INDEX_FORBIDDEN = set('\\/*?"<>|,#:')


def _index_name_problem(name: str) -> str | None:
    if name in ("", ".", ".."):
        return "must not be empty, '.' or '..'"
    if name != name.lower():
        return "must be lowercase"
    forbidden = sorted({c for c in name if c in _INDEX_FORBIDDEN or c.isspace()})
    if forbidden:
        return "must not contain " + " ".join(repr(c) for c in forbidden)
    if name[0] in "-_+":
        return "must not start with '-', '_' or '+'"
    if len(name.encode()) > 255:
        return "must be at most 255 bytes long"
    return None


def _index_name(value: str) -> str:
    problem = _index_name_problem(value)
    if problem:
        raise ValueError(f"an Elasticsearch index name {problem}")
    return value


_STREAM_ARN = re.compile(r"arn:.*:table/(?P<table>[^/]+)/stream/.+")


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _hook(value: str) -> str:
    module, colon, function = value.partition(":")
    if not (colon and all(map(_is_identifier, module.split("."))) and _is_identifier(function)):
        raise ValueError(
            "must be 'package.module:function' (a dotted module path, a colon, a function name)"
        )
    return value


_HttpUrl = Annotated[str, AfterValidator(_http_url)]
_TableName = Annotated[str, AfterValidator(_table_name)]
_IndexName = Annotated[str, AfterValidator(_index_name)]
_Hook = Annotated[str, AfterValidator(_hook)]
_AttributeName = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsConfig(_Section):
    """Where the DynamoDB tables live.

    Credentials are deliberately not configurable: they come from the standard AWS chain
    (environment, profile, IRSA or instance role), which keeps them out of this file.
    """

    region: str = Field(min_length=1)
    endpoint_url: _HttpUrl | None = None


class _ClusterConfig(_Section):
    """What every search cluster needs: where it is, and how to reach it safely."""

    hosts: list[_HttpUrl] = Field(min_length=1)
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = Field(default=None, min_length=1)
    ca_certs: Path | None = None
    verify_certs: bool = True
    request_timeout_seconds: float = Field(default=30, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _user_and_password_together(self) -> Self:
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise ValueError(
                f"{missing} is missing: username and password go together "
                f"(set it in the file or as STREAMSYNC_ES_{missing.upper()})"
            )
        return self


class ElasticsearchConfig(_ClusterConfig):
    """An Elasticsearch 8.x or 9.x cluster (self-managed or Elastic Cloud)."""

    hosts: list[_HttpUrl] | None = Field(default=None, min_length=1)  # type: ignore[assignment]
    cloud_id: str | None = Field(default=None, min_length=1)
    """An Elastic Cloud deployment's Cloud ID, instead of hosts."""
    api_key: SecretStr | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_address_and_one_way_to_authenticate(self) -> ElasticsearchConfig:
        if (self.hosts is None) == (self.cloud_id is None):
            raise ValueError(
                "give either hosts (a list of URLs) or cloud_id (an Elastic Cloud deployment)"
                + (", not both" if self.hosts is not None else "")
            )
        if self.api_key is not None and self.username is not None:
            raise ValueError(
                "give either api_key or username and password, not both (check the file and "
                "STREAMSYNC_ES_API_KEY, STREAMSYNC_ES_USERNAME, STREAMSYNC_ES_PASSWORD)"
            )
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `elasticsearch.AsyncElasticsearch`; the only place secrets are
        revealed."""
        kwargs: dict[str, Any] = {
            "verify_certs": self.verify_certs,
            "request_timeout": self.request_timeout_seconds,
        }
        if self.hosts is not None:
            kwargs["hosts"] = list(self.hosts)
        if self.cloud_id is not None:
            kwargs["cloud_id"] = self.cloud_id
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key.get_secret_value()
        if self.username is not None and self.password is not None:
            kwargs["basic_auth"] = (self.username, self.password.get_secret_value())
        if self.ca_certs is not None:
            kwargs["ca_certs"] = str(self.ca_certs)
        return kwargs


class SigV4Config(_Section):
    """Sign every request with AWS credentials (Amazon OpenSearch Service, OpenSearch Serverless).

    The credentials are the same standard chain as DynamoDB's (environment, profile, IRSA web
    identity, instance role), refreshed as they rotate; none are configured here."""

    region: str | None = Field(default=None, min_length=1)
    """None: aws.region."""
    service: Literal["es", "aoss"] = "es"
    """es: an OpenSearch Service domain; aoss: an OpenSearch Serverless collection."""


class OpenSearchConfig(_ClusterConfig):
    """An OpenSearch 2.x or 3.x cluster: self-managed, an Amazon OpenSearch Service domain, or an
    OpenSearch Serverless collection (of type SEARCH)."""

    aws_sigv4: SigV4Config | None = None

    @model_validator(mode="after")
    def _signed_or_basic(self) -> OpenSearchConfig:
        if self.aws_sigv4 is not None and self.username is not None:
            raise ValueError(
                "give either aws_sigv4 or username and password, not both (an Amazon OpenSearch "
                "Service domain with fine-grained access control maps the IAM role instead)"
            )
        return self


class LeasesConfig(_Section):
    """The DynamoDB table through which replicas share out the shards."""

    table: _TableName = "streamsync-leases"
    worker_id: str | None = Field(default=None, min_length=1)
    """None: derived at run time from the hostname and the process id."""
    failover_seconds: float = Field(default=10, ge=1, allow_inf_nan=False)
    discovery_interval_seconds: float = Field(default=30, gt=0, allow_inf_nan=False)
    cleanup_after_seconds: float = Field(default=86400, ge=0, allow_inf_nan=False)
    """A finished lease is deleted once this long passed since its shard ended (the stream's
    24 h retention by default), its shard left the stream and its children started."""


class TableConfig(_Section):
    """One DynamoDB table and the Elasticsearch index it is mirrored into."""

    table: _TableName
    index: _IndexName
    stream_arn: str | None = None
    """None: looked up from the table."""
    start_position: StartPosition = "TRIM_HORIZON"
    include_fields: list[_AttributeName] | None = Field(default=None, min_length=1)
    """None: all attributes."""
    exclude_fields: list[_AttributeName] = Field(default_factory=list)
    index_settings: dict[str, Any] | None = None
    """Applied only when streamsync creates the index."""
    index_mappings: dict[str, Any] | None = None
    """Applied only when streamsync creates the index."""
    ttl_expirations: Literal["delete", "ignore"] = "delete"
    """What a REMOVE made by TTL expiry does: delete the document, or keep it (archives)."""
    transform: _Hook | None = None
    on_trimmed: Literal["fail", "restart_from_trim_horizon"] = "fail"
    """When a shard's checkpoint fell out of the stream's 24 h window (records were lost): stop
    that shard with an error (fail), or log the lost range and go on from the oldest record."""
    max_document_bytes: int | None = Field(default=None, ge=1)
    """Documents larger than this go to dead letters instead of Elasticsearch."""
    trace_ids: list[str] = Field(default_factory=list)
    """Document ids whose changes are logged at every stage (read ... checkpointed)."""
    initial_load: Literal["none", "scan"] = "none"
    """scan: when `run` first sees the table's stream (no leases yet), it leases the shards at
    TRIM_HORIZON (capturing the stream's position) and backfills the table before streaming."""

    @model_validator(mode="after")
    def _scan_from_the_horizon(self) -> TableConfig:
        if self.initial_load == "scan" and self.start_position != "TRIM_HORIZON":
            raise ValueError(
                "initial_load: scan reads the stream from TRIM_HORIZON so that nothing written "
                "during the scan is missed; remove start_position: LATEST"
            )
        return self

    @field_validator("stream_arn")
    @classmethod
    def _stream_of_this_table(cls, arn: str | None, info: ValidationInfo) -> str | None:
        if arn is None:
            return None
        match = _STREAM_ARN.fullmatch(arn)
        if match is None:
            raise ValueError(
                "must be a DynamoDB stream ARN, like "
                "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
            )
        table = info.data.get("table")
        if table is not None and match["table"] != table:
            raise ValueError(f"is the stream of table {match['table']!r}, not of {table!r}")
        return arn


class BulkConfig(_Section):
    """How document changes are batched into Elasticsearch bulk requests."""

    max_actions: int = Field(default=1000, ge=1, le=10000)
    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    flush_interval_seconds: float = Field(default=0.02, gt=0, le=10)
    max_in_flight: int = Field(default=4, ge=1, le=64)
    """Concurrent bulk requests."""
    queue_size: int = Field(default=10000, ge=1)
    """Actions buffered before the pollers wait (back-pressure)."""


class PollingConfig(_Section):
    """How shards are read."""

    max_records: int = Field(default=1000, ge=1, le=1000)
    idle_wait_min_seconds: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    idle_wait_max_seconds: float = Field(default=1.0, allow_inf_nan=False, validate_default=True)

    @field_validator("idle_wait_max_seconds")
    @classmethod
    def _not_below_min(cls, value: float, info: ValidationInfo) -> float:
        minimum = info.data.get("idle_wait_min_seconds")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least idle_wait_min_seconds, {minimum}")
        return value


class DeadLettersConfig(_Section):
    """Where records and documents that cannot be indexed go, with everything to replay them."""

    index: _IndexName | None = "streamsync-dead-letters"
    file: Path | None = None
    """A JSON Lines file, one dead letter per line (in addition to, or instead of, the index)."""
    retention_days: int = Field(default=30, ge=1)
    """Letters older than this are deleted: from the index at start-up and hourly while letters
    arrive, and from the index and the file by `streamsync dlq replay`."""

    @model_validator(mode="after")
    def _somewhere(self) -> DeadLettersConfig:
        if self.index is None and self.file is None:
            raise ValueError("needs an index, a file, or both: dead letters must go somewhere")
        return self


def _listen_address(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port, like 0.0.0.0:9108 (port 0: any free port)")
    return value


class ObservabilityConfig(_Section):
    """Where /metrics, /healthz and /readyz are served."""

    listen: Annotated[str, AfterValidator(_listen_address)] | None = "127.0.0.1:9108"
    """host:port; null: no HTTP server (embedded, the host serves its own registry)."""


class Config(_Section):
    """The whole configuration file."""

    aws: AwsConfig
    elasticsearch: ElasticsearchConfig | None = None
    opensearch: OpenSearchConfig | None = None
    leases: LeasesConfig = Field(default_factory=LeasesConfig)
    tables: list[TableConfig] = Field(min_length=1)
    bulk: BulkConfig = Field(default_factory=BulkConfig)
    polling: PollingConfig = Field(default_factory=PollingConfig)
    dead_letters: DeadLettersConfig = Field(default_factory=DeadLettersConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    checkpoint_interval_seconds: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    shutdown_grace_seconds: float = Field(default=30, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_cluster(self) -> Config:
        problem = _cluster_problem(self.elasticsearch is not None, self.opensearch is not None)
        if problem is not None:
            raise ValueError(problem[1])
        sigv4 = self.opensearch.aws_sigv4 if self.opensearch is not None else None
        if sigv4 is not None and sigv4.region is None:
            with_region = sigv4.model_copy(update={"region": self.aws.region})
            opensearch = self.opensearch.model_copy(update={"aws_sigv4": with_region})  # type: ignore[union-attr]
            return self.model_copy(update={"opensearch": opensearch})
        return self

    @property
    def cluster(self) -> ElasticsearchConfig | OpenSearchConfig:
        """The search cluster, whichever engine it runs."""
        cluster = self.elasticsearch or self.opensearch
        assert cluster is not None  # checked when the configuration was made
        return cluster

    @field_validator("tables")
    @classmethod
    def _each_table_once(cls, tables: list[TableConfig]) -> list[TableConfig]:
        positions: dict[str, list[str]] = {}
        for i, table in enumerate(tables):
            positions.setdefault(table.table, []).append(f"tables[{i}]")
        repeated = [
            f"{name!r} is at {' and '.join(where)}"
            for name, where in positions.items()
            if len(where) > 1
        ]
        if repeated:
            raise ValueError(f"each DynamoDB table may be listed once, but {'; '.join(repeated)}")
        return tables


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


def _file_order(problem: tuple[_Loc, str]) -> int:
    """Problems are listed in the order of the sections they are in (a stable sort)."""
    sections = list(Config.model_fields)
    top = problem[0][0] if problem[0] else None
    return sections.index(top) if top in sections else len(sections)


def _cluster_problem(elasticsearch: bool, opensearch: bool) -> tuple[_Loc, str] | None:
    """The search cluster is named by its section: elasticsearch or opensearch, one of them."""
    if elasticsearch and opensearch:
        return ("opensearch",), "give either elasticsearch or opensearch, not both"
    if not (elasticsearch or opensearch):
        return ("elasticsearch",), "required (or opensearch, for an OpenSearch cluster)"
    return None


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


# Validation errors: pydantic's messages rewritten as short statements of what is expected.

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


def _lines(source: str, problems: list[tuple[_Loc, str]]) -> list[str]:
    return [
        f"{source}: {_path(loc)}: {message}" if loc else f"{source}: {message}"
        for loc, message in problems
    ]


def _path(loc: _Loc) -> str:
    """`("tables", 0, "index")` as "tables[0].index"."""
    path = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in loc)
    return path.removeprefix(".")
