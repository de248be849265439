"""The configuration file's schema: the tables to mirror and how the daemon runs.

The rules that span fields live here too (a stream ARN of the table it is listed with, one search
cluster, each table once) so that a Config that exists is one the daemon can run. The search
cluster's sections are in `clusters`, the checks on single values in `values`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator

from streamsync.config.clusters import ElasticsearchConfig, OpenSearchConfig
from streamsync.config.values import (
    _AttributeName,
    _ExternalId,
    _Hook,
    _HttpUrl,
    _IndexName,
    _ListenAddress,
    _RoleArn,
    _Section,
    _SessionName,
    _TableName,
)

StartPosition = Literal["TRIM_HORIZON", "LATEST"]

_Loc = tuple[int | str, ...]
"""A key path as pydantic reports it: `("tables", 0, "index")` is `tables[0].index`."""


_STREAM_ARN = re.compile(r"arn:.*:table/(?P<table>[^/]+)/stream/.+")

_ROLE_ONLY = ("external_id", "session_name", "duration_seconds", "sts_endpoint_url")


class AwsConfig(_Section):
    """Where the DynamoDB tables live, and the role to read them through.

    Credentials are deliberately not configurable: they come from the standard AWS chain
    (environment, profile, IRSA or instance role), which keeps them out of this file. With
    `role_arn`, those credentials only assume the role (tables in another account); the
    role's temporary credentials then sign every call about the tables and their streams.
    """

    region: str = Field(min_length=1)
    endpoint_url: _HttpUrl | None = None
    role_arn: _RoleArn | None = None
    external_id: _ExternalId | None = None
    """Sent with every AssumeRole, for a trust policy that requires it (sts:ExternalId)."""
    session_name: _SessionName | None = None
    """None: streamsync-<worker id>, so that the tables' account sees which worker called."""
    duration_seconds: int = Field(default=3600, ge=1800, le=43200)
    """How long each set of the role's credentials lasts. botocore renews them 15 minutes
    before they expire, so anything shorter than 30 minutes would be renewed at every call."""
    sts_endpoint_url: _HttpUrl | None = None
    """None: the STS endpoint of `region`. Not `endpoint_url`: that is DynamoDB's (a VPC
    endpoint, or a local stand-in), which need not serve STS."""

    @model_validator(mode="after")
    def _role_settings_need_a_role(self) -> AwsConfig:
        given = [key for key in _ROLE_ONLY if key in self.model_fields_set]
        if given and self.role_arn is None:
            raise ValueError(
                f"{', '.join(given)} without role_arn: these settings are used only to "
                "assume a role; set aws.role_arn or remove them"
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
    """How shards are read: a shard that returned a full page is read again at once, one that
    returned fewer records after `tip_wait_seconds`; a quiet one is polled less and less often,
    down to once per `pickup_seconds`."""

    max_records: int = Field(default=1000, ge=1, le=1000)
    idle_wait_min_seconds: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    tip_wait_seconds: float = Field(default=0.05, ge=0, le=1, allow_inf_nan=False)
    """The wait after a page that had records but was not full (the reader is at the shard's
    tip): what arrives meanwhile comes in one page instead of a GetRecords call each. 0 reads
    again at once: the lowest latency, at the most calls (and CPU) per record."""
    pickup_seconds: float = Field(
        default=2.0,
        allow_inf_nan=False,
        validate_default=True,
        validation_alias=AliasChoices("pickup_seconds", "idle_wait_max_seconds"),
    )
    """The longest a record waits in a quiet shard before a poll picks it up: polls of a quiet
    shard start at most this far apart (3,600 / pickup_seconds GetRecords per idle shard-hour).
    `idle_wait_max_seconds`, its name before, is read as the same."""

    @field_validator("pickup_seconds")
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


class ObservabilityConfig(_Section):
    """Where /metrics, /healthz and /readyz are served."""

    listen: _ListenAddress | None = "127.0.0.1:9108"
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


def _cluster_problem(elasticsearch: bool, opensearch: bool) -> tuple[_Loc, str] | None:
    """The search cluster is named by its section: elasticsearch or opensearch, one of them."""
    if elasticsearch and opensearch:
        return ("opensearch",), "give either elasticsearch or opensearch, not both"
    if not (elasticsearch or opensearch):
        return ("elasticsearch",), "required (or opensearch, for an OpenSearch cluster)"
    return None
