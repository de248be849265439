from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from streamsync.config import Config, ElasticsearchConfig, load_config, parse_config
from streamsync.errors import ConfigError, StreamsyncError

MINIMUM = """\
aws:
  region: us-east-1
  endpoint_url: http://127.0.0.1:5000   # optional: a local DynamoDB + Streams endpoint
elasticsearch:
  hosts: ["http://127.0.0.1:9200"]       # api_key / username+password / ca_certs optional
leases:
  table: streamsync-leases               # created if missing
tables:
  - table: orders                        # DynamoDB table; its stream ARN is looked up
    index: orders                        # target index (created if missing)
"""

BASE: dict[str, Any] = {
    "aws": {"region": "us-east-1"},
    "elasticsearch": {"hosts": ["http://127.0.0.1:9200"]},
    "tables": [{"table": "orders", "index": "orders"}],
}

SECRET = "s3cr3t-Zq9-DO-NOT-PRINT"
ROLE = "arn:aws:iam::210987654321:role/streamsync-reader"

TABLE_KEYS = (
    "table, index, stream_arn, start_position, include_fields, exclude_fields, index_settings, "
    "index_mappings, ttl_expirations, transform, on_trimmed, max_document_bytes, trace_ids, "
    "initial_load"
)
TOP_KEYS = (
    "aws, elasticsearch, opensearch, leases, tables, bulk, polling, dead_letters, observability, "
    "checkpoint_interval_seconds, shutdown_grace_seconds"
)


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(text, "tables.yaml", environ={} if environ is None else environ)


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, environ)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def config_with(section: str, values: dict[str, Any]) -> str:
    """BASE with `values` merged into `section` ("tables" means the first table), as YAML."""
    data = copy.deepcopy(BASE)
    target = data["tables"][0] if section == "tables" else data.setdefault(section, {})
    target.update(values)
    return yaml.safe_dump(data, sort_keys=False)


# The minimum file and the defaults


def test_the_minimum_example_loads_with_the_documented_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tables.yaml"
    path.write_text(MINIMUM)

    config = load_config(path, environ={})

    assert config.aws.region == "us-east-1"
    assert config.aws.endpoint_url == "http://127.0.0.1:5000"
    es = config.elasticsearch
    assert es.hosts == ["http://127.0.0.1:9200"]
    assert (es.api_key, es.username, es.password, es.ca_certs) == (None, None, None, None)
    assert (es.verify_certs, es.request_timeout_seconds) == (True, 30)
    assert config.leases.model_dump() == {
        "table": "streamsync-leases",
        "worker_id": None,
        "failover_seconds": 10,
        "discovery_interval_seconds": 30,
        "cleanup_after_seconds": 86400,
    }
    assert config.tables[0].model_dump() == {
        "table": "orders",
        "index": "orders",
        "stream_arn": None,
        "start_position": "TRIM_HORIZON",
        "include_fields": None,
        "exclude_fields": [],
        "index_settings": None,
        "index_mappings": None,
        "ttl_expirations": "delete",
        "transform": None,
        "on_trimmed": "fail",
        "max_document_bytes": None,
        "trace_ids": [],
        "initial_load": "none",
    }
    assert config.bulk.model_dump() == {
        "max_actions": 1000,
        "max_bytes": 5 * 1024 * 1024,
        "flush_interval_seconds": 0.02,
        "max_in_flight": 4,
        "queue_size": 10000,
    }
    assert config.polling.model_dump() == {
        "max_records": 1000,
        "idle_wait_min_seconds": 0.05,
        "tip_wait_seconds": 0.05,
        "pickup_seconds": 2.0,
    }
    assert (config.checkpoint_interval_seconds, config.shutdown_grace_seconds) == (1.0, 30)


def test_every_optional_setting_can_be_given() -> None:
    config = parse(
        config_with(
            "tables",
            {
                "stream_arn": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01",
                "start_position": "LATEST",
                "include_fields": ["id", "total"],
                "exclude_fields": ["internal"],
                "index_settings": {"number_of_shards": 1},
                "index_mappings": {"properties": {"total": {"type": "double"}}},
                "ttl_expirations": "ignore",
                "transform": "my_hooks.orders:to_document",
            },
        )
    )

    table = config.tables[0]
    assert table.start_position == "LATEST"
    assert table.include_fields == ["id", "total"]
    assert table.index_mappings == {"properties": {"total": {"type": "double"}}}
    assert table.transform == "my_hooks.orders:to_document"


def test_a_role_to_read_the_tables_through_can_be_given() -> None:
    aws = parse(
        config_with(
            "aws",
            {
                "role_arn": "arn:aws-cn:iam::210987654321:role/teams/orders/streamsync-reader",
                "external_id": "orders:ext/7",
                "session_name": "streamsync@eu-1",
                "duration_seconds": 43200,
                "sts_endpoint_url": "https://sts.eu-west-1.amazonaws.com",
            },
        )
    ).aws

    assert aws.role_arn == "arn:aws-cn:iam::210987654321:role/teams/orders/streamsync-reader"
    assert (aws.external_id, aws.session_name) == ("orders:ext/7", "streamsync@eu-1")
    assert aws.duration_seconds == 43200
    assert aws.sts_endpoint_url == "https://sts.eu-west-1.amazonaws.com"


def test_without_a_role_the_tables_are_read_with_the_workers_own_credentials() -> None:
    aws = parse(yaml.safe_dump(BASE)).aws

    assert (aws.role_arn, aws.external_id, aws.session_name, aws.sts_endpoint_url) == (
        None,
        None,
        None,
        None,
    )
    assert aws.duration_seconds == 3600


def test_role_settings_without_a_role_are_refused() -> None:
    text = config_with("aws", {"external_id": "ext-7", "sts_endpoint_url": "http://sts:1"})

    assert problems(text) == [
        "tables.yaml: aws: external_id, sts_endpoint_url without role_arn: these settings are "
        "used only to assume a role; set aws.role_arn or remove them"
    ]


def test_the_configuration_is_immutable() -> None:
    config = parse(MINIMUM)

    with pytest.raises(ValidationError):
        config.aws.region = "eu-west-1"


def test_config_error_is_a_streamsync_error_with_one_line_per_problem() -> None:
    error = ConfigError(["a: first", "b: second"])

    assert isinstance(error, StreamsyncError)
    assert error.problems == ["a: first", "b: second"]
    assert str(error) == "a: first\nb: second"


# Reading the file


def test_a_missing_file_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("/nonexistent/tables.yaml", environ={})

    assert caught.value.problems == ["/nonexistent/tables.yaml: file not found"]


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, environ={})

    assert caught.value.problems == [f"{tmp_path}: cannot read the file (Is a directory)"]


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tables.yaml"
    path.write_bytes(b"aws: \xff\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    assert caught.value.problems == [f"{path}: not UTF-8 text (invalid byte at offset 5)"]


def test_malformed_yaml_is_one_line_with_its_position() -> None:
    text = "aws:\n  region: us-east-1\ntables:\n  - table: orders\n  index: orders\n"

    assert problems(text) == [
        "tables.yaml: line 5, column 3: invalid YAML (expected <block end>, but found '?')"
    ]


def test_a_yaml_tag_that_would_run_code_is_refused() -> None:
    assert problems("aws: !!python/object/apply:os.system [ls]\n") == [
        "tables.yaml: line 1, column 6: invalid YAML (could not determine a constructor for the "
        "tag 'tag:yaml.org,2002:python/object/apply:os.system')"
    ]


@pytest.mark.parametrize(
    ("text", "got"),
    [("", "an empty document"), ("- aws\n- tables\n", "a list"), ("just words\n", "'just words'")],
)
def test_the_top_level_must_be_a_mapping(text: str, got: str) -> None:
    assert problems(text) == [
        "tables.yaml: the top level must be a mapping with at least the keys aws, elasticsearch "
        f"(or opensearch) and tables (got {got})"
    ]


# Validation messages


def test_an_unknown_key_lists_the_expected_ones() -> None:
    text = MINIMUM.replace("    index: orders", "    indx: orders")

    assert problems(text) == [
        "tables.yaml: tables[0].index: required",
        f"tables.yaml: tables[0].indx: unknown key (expected one of: {TABLE_KEYS})",
    ]


def test_an_unknown_top_level_key_lists_the_expected_ones() -> None:
    assert problems(MINIMUM + "shutdown_grace: 5\n") == [
        f"tables.yaml: shutdown_grace: unknown key (expected one of: {TOP_KEYS})"
    ]


def test_missing_sections_are_required() -> None:
    assert problems("bulk: {}\n") == [
        "tables.yaml: aws: required",
        "tables.yaml: elasticsearch: required (or opensearch, for an OpenSearch cluster)",
        "tables.yaml: tables: required",
    ]


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("bulk", {"max_in_flight": 0}, "bulk.max_in_flight: must be between 1 and 64 (got 0)"),
        (
            "bulk",
            {"max_actions": 10001},
            "bulk.max_actions: must be between 1 and 10000 (got 10001)",
        ),
        ("bulk", {"max_actions": "many"}, "bulk.max_actions: must be a whole number (got 'many')"),
        ("bulk", {"max_bytes": 1.5}, "bulk.max_bytes: must be a whole number (got 1.5)"),
        ("bulk", {"max_bytes": 1000}, "bulk.max_bytes: must be at least 1024 (got 1000)"),
        (
            "bulk",
            {"flush_interval_seconds": 20},
            "bulk.flush_interval_seconds: must be greater than 0 and at most 10 (got 20)",
        ),
        ("bulk", {"queue_size": 0}, "bulk.queue_size: must be at least 1 (got 0)"),
        ("polling", {"max_records": 0}, "polling.max_records: must be between 1 and 1000 (got 0)"),
        (
            "polling",
            {"idle_wait_min_seconds": 3},
            "polling.pickup_seconds: must be at least idle_wait_min_seconds, 3.0 (got 2.0)",
        ),
        (
            "leases",
            {"failover_seconds": 0.5},
            "leases.failover_seconds: must be at least 1 (got 0.5)",
        ),
        (
            "leases",
            {"discovery_interval_seconds": float("inf")},
            "leases.discovery_interval_seconds: must be a finite number (got inf)",
        ),
        (
            "leases",
            {"table": "ab"},
            "leases.table: must be a DynamoDB table name: 3 to 255 letters, digits, '_', '-' "
            "or '.' (got 'ab')",
        ),
        ("leases", {"worker_id": ""}, "leases.worker_id: must not be empty (got '')"),
        ("aws", {"region": ""}, "aws.region: must not be empty (got '')"),
        (
            "aws",
            {"role_arn": "arn:aws:iam::12345:role/reader"},
            "aws.role_arn: must be an IAM role ARN, like "
            "arn:aws:iam::123456789012:role/streamsync-reader "
            "(got 'arn:aws:iam::12345:role/reader')",
        ),
        (
            "aws",
            {"role_arn": "arn:aws:iam::123456789012:user/reader"},
            "aws.role_arn: must be an IAM role ARN, like "
            "arn:aws:iam::123456789012:role/streamsync-reader "
            "(got 'arn:aws:iam::123456789012:user/reader')",
        ),
        (
            "aws",
            {"role_arn": ROLE, "duration_seconds": 900},
            "aws.duration_seconds: must be between 1800 and 43200 (got 900)",
        ),
        (
            "aws",
            {"role_arn": ROLE, "session_name": "orders reader"},
            "aws.session_name: must be 2 to 64 letters, digits or _ + = , . @ - (what STS "
            "accepts) (got 'orders reader')",
        ),
        (
            "aws",
            {"role_arn": ROLE, "session_name": "x" * 65},
            "aws.session_name: must be 2 to 64 letters, digits or _ + = , . @ - (what STS "
            f"accepts) (got '{'x' * 65}')",
        ),
        (
            "aws",
            {"role_arn": ROLE, "external_id": "ext#1"},
            "aws.external_id: must be 2 to 1224 letters, digits or _ + = , . @ : / - (what STS "
            "accepts) (got 'ext#1')",
        ),
        (
            "aws",
            {"role_arn": ROLE, "sts_endpoint_url": "sts.local"},
            "aws.sts_endpoint_url: must be an http:// or https:// URL, like "
            "http://127.0.0.1:9200 (got 'sts.local')",
        ),
        (
            "aws",
            {"endpoint_url": "localhost:5000"},
            "aws.endpoint_url: must be an http:// or https:// URL, like http://127.0.0.1:9200 "
            "(got 'localhost:5000')",
        ),
        (
            "elasticsearch",
            {"hosts": ["http://a:9200", "ftp://b"]},
            "elasticsearch.hosts[1]: must be an http:// or https:// URL, like "
            "http://127.0.0.1:9200 (got 'ftp://b')",
        ),
        ("elasticsearch", {"hosts": []}, "elasticsearch.hosts: must not be empty"),
        (
            "elasticsearch",
            {"hosts": "http://a:9200"},
            "elasticsearch.hosts: must be a list (got 'http://a:9200')",
        ),
        (
            "elasticsearch",
            {"verify_certs": "maybe"},
            "elasticsearch.verify_certs: must be true or false (got 'maybe')",
        ),
        (
            "elasticsearch",
            {"request_timeout_seconds": 0},
            "elasticsearch.request_timeout_seconds: must be greater than 0 (got 0)",
        ),
        (
            "tables",
            {"start_position": "EARLIEST"},
            "tables[0].start_position: must be 'TRIM_HORIZON' or 'LATEST' (got 'EARLIEST')",
        ),
        (
            "tables",
            {"ttl_expirations": "drop"},
            "tables[0].ttl_expirations: must be 'delete' or 'ignore' (got 'drop')",
        ),
        ("tables", {"include_fields": []}, "tables[0].include_fields: must not be empty"),
        (
            "tables",
            {"exclude_fields": [""]},
            "tables[0].exclude_fields[0]: must not be empty (got '')",
        ),
        ("tables", {"index_settings": 3}, "tables[0].index_settings: must be a mapping (got 3)"),
        ("tables", {"index": None}, "tables[0].index: must be a string (got null)"),
    ],
)
def test_a_bad_value_says_what_is_expected(
    section: str, values: dict[str, Any], expected: str
) -> None:
    assert problems(config_with(section, values)) == [f"tables.yaml: {expected}"]


def test_a_section_that_is_not_a_mapping_says_so() -> None:
    text = MINIMUM.replace("  - table: orders", "  - orders\n  - table: orders")

    assert problems(text) == ["tables.yaml: tables[0]: must be a mapping (got 'orders')"]


def test_every_problem_is_reported_at_once() -> None:
    text = """\
aws: {region: ""}
elasticsearch: {hosts: ["http://127.0.0.1:9200"], request_timeout_seconds: -1}
tables:
  - {table: orders, index: Orders}
  - {table: users, indx: users}
bulk: {max_in_flight: 0}
"""
    assert problems(text) == [
        "tables.yaml: aws.region: must not be empty (got '')",
        "tables.yaml: elasticsearch.request_timeout_seconds: must be greater than 0 (got -1)",
        "tables.yaml: tables[0].index: an Elasticsearch index name must be lowercase "
        "(got 'Orders')",
        "tables.yaml: tables[1].index: required",
        f"tables.yaml: tables[1].indx: unknown key (expected one of: {TABLE_KEYS})",
        "tables.yaml: bulk.max_in_flight: must be between 1 and 64 (got 0)",
    ]


def test_the_same_dynamodb_table_may_not_appear_twice() -> None:
    text = """\
aws: {region: us-east-1}
elasticsearch: {hosts: ["http://127.0.0.1:9200"]}
tables:
  - {table: orders, index: orders}
  - {table: users, index: users}
  - {table: orders, index: orders-copy}
"""
    assert problems(text) == [
        "tables.yaml: tables: each DynamoDB table may be listed once, but 'orders' is at "
        "tables[0] and tables[2]"
    ]


def test_two_tables_may_feed_indexes_of_their_own() -> None:
    data = copy.deepcopy(BASE)
    data["tables"].append({"table": "users", "index": "users"})

    assert [t.table for t in parse(yaml.safe_dump(data)).tables] == ["orders", "users"]


@pytest.mark.parametrize(
    "index", ["orders", "orders-v2", "orders_2024.01", ".internal", "ä" * 127, "a+b"]
)
def test_valid_index_names_are_accepted(index: str) -> None:
    assert parse(config_with("tables", {"index": index})).tables[0].index == index


@pytest.mark.parametrize(
    ("index", "problem"),
    [
        ("Orders", "must be lowercase"),
        ("my orders", "must not contain ' '"),
        ("a/b*c", "must not contain '*' '/'"),
        ("remote:orders", "must not contain ':'"),
        ('a"b', "must not contain '\"'"),
        ("-orders", "must not start with '-', '_' or '+'"),
        ("_orders", "must not start with '-', '_' or '+'"),
        ("+orders", "must not start with '-', '_' or '+'"),
        (".", "must not be empty, '.' or '..'"),
        ("..", "must not be empty, '.' or '..'"),
        ("", "must not be empty, '.' or '..'"),
        ("ä" * 128, "must be at most 255 bytes long"),
    ],
)
def test_invalid_index_names_are_explained(index: str, problem: str) -> None:
    [line] = problems(config_with("tables", {"index": index}))

    assert (
        line
        == f"tables.yaml: tables[0].index: an Elasticsearch index name {problem} (got {index!r})"
    )


@pytest.mark.parametrize("table", ["my orders", "ab", "x" * 256, "orders!"])
def test_invalid_table_names_are_refused(table: str) -> None:
    assert problems(config_with("tables", {"table": table})) == [
        "tables.yaml: tables[0].table: must be a DynamoDB table name: 3 to 255 letters, digits, "
        f"'_', '-' or '.' (got {table!r})"
    ]


@pytest.mark.parametrize("hook", ["hooks:transform", "my_pkg.sub.mod:to_doc", "_m:_f"])
def test_valid_transform_hooks_are_accepted(hook: str) -> None:
    assert parse(config_with("tables", {"transform": hook})).tables[0].transform == hook


@pytest.mark.parametrize(
    "hook",
    ["hooks", "hooks.transform", "hooks:", ":transform", "my-pkg:f", "a..b:f", "a:b:c", "a:b.c"],
)
def test_invalid_transform_hooks_are_refused(hook: str) -> None:
    assert problems(config_with("tables", {"transform": hook})) == [
        "tables.yaml: tables[0].transform: must be 'package.module:function' (a dotted module "
        f"path, a colon, a function name) (got {hook!r})"
    ]


def test_a_stream_arn_must_look_like_one() -> None:
    [line] = problems(config_with("tables", {"stream_arn": "orders-stream"}))

    assert line.startswith("tables.yaml: tables[0].stream_arn: must be a DynamoDB stream ARN, like")
    assert line.endswith("(got 'orders-stream')")


def test_a_stream_arn_must_belong_to_its_table() -> None:
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/users/stream/2024-01"

    assert problems(config_with("tables", {"stream_arn": arn})) == [
        f"tables.yaml: tables[0].stream_arn: is the stream of table 'users', not of 'orders' "
        f"(got {arn!r})"
    ]


# Credentials


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"username": "elastic"},
            "password is missing: username and password go together "
            "(set it in the file or as STREAMSYNC_ES_PASSWORD)",
        ),
        (
            {"password": SECRET},
            "username is missing: username and password go together "
            "(set it in the file or as STREAMSYNC_ES_USERNAME)",
        ),
        (
            {"api_key": SECRET, "username": "elastic", "password": SECRET},
            "give either api_key or username and password, not both (check the file and "
            "STREAMSYNC_ES_API_KEY, STREAMSYNC_ES_USERNAME, STREAMSYNC_ES_PASSWORD)",
        ),
    ],
)
def test_one_way_to_authenticate(values: dict[str, Any], expected: str) -> None:
    assert problems(config_with("elasticsearch", values)) == [
        f"tables.yaml: elasticsearch: {expected}"
    ]


def test_client_kwargs_reveal_basic_auth_secrets_only_there() -> None:
    es = ElasticsearchConfig(
        hosts=["https://es:9200"],
        username="elastic",
        password=SecretStr(SECRET),
        ca_certs=Path("/etc/ca.pem"),
        verify_certs=False,
        request_timeout_seconds=5,
    )

    assert es.client_kwargs() == {
        "hosts": ["https://es:9200"],
        "basic_auth": ("elastic", SECRET),
        "ca_certs": "/etc/ca.pem",
        "verify_certs": False,
        "request_timeout": 5,
    }


def test_client_kwargs_with_an_api_key() -> None:
    es = ElasticsearchConfig(hosts=["http://es:9200"], api_key=SecretStr(SECRET))

    assert es.client_kwargs() == {
        "hosts": ["http://es:9200"],
        "api_key": SECRET,
        "verify_certs": True,
        "request_timeout": 30,
    }


@pytest.mark.parametrize(
    "values",
    [
        {"api_key": 12345678, "password": SECRET},
        {"api_key": [SECRET]},
        {"password": {"value": SECRET}, "username": "elastic"},
        {"api_key": SECRET, "username": "elastic", "password": SECRET},
        {"api_key": SECRET, "hosts": []},
        {"api_kye": SECRET},
    ],
)
def test_secrets_never_appear_in_error_messages(values: dict[str, Any]) -> None:
    text = config_with("elasticsearch", values).replace("12345678", SECRET)

    error = "\n".join(problems(text))

    assert error
    assert SECRET not in error


def test_secrets_never_appear_in_reprs() -> None:
    config = parse(
        config_with("elasticsearch", {"username": "elastic", "password": SECRET}),
        environ={"STREAMSYNC_ES_PASSWORD": SECRET},
    )
    with_api_key = parse(config_with("elasticsearch", {"api_key": SECRET}))

    for shown in (repr(config), str(config), repr(with_api_key), str(with_api_key.elasticsearch)):
        assert SECRET not in shown
    assert config.elasticsearch.client_kwargs()["basic_auth"] == ("elastic", SECRET)


def test_a_password_in_a_host_url_is_masked_in_messages() -> None:
    [line] = problems(config_with("elasticsearch", {"hosts": [f"htps://elastic:{SECRET}@es"]}))

    assert SECRET not in line
    assert line.endswith("(got 'htps://***@es')")


# Environment


def test_variables_are_expanded_in_string_values() -> None:
    text = """\
aws: {region: "${REGION}", endpoint_url: "http://${DDB_HOST:-localhost}:5000"}
elasticsearch: {hosts: ["${ES_URL}"], username: "${ES_USER:-elastic}", password: "p$$ss$word"}
tables: [{table: "${TABLE}", index: "${TABLE}-v1"}]
bulk: {max_in_flight: "${IN_FLIGHT}"}
"""
    env = {
        "REGION": "eu-west-1",
        "ES_URL": "https://es:9200",
        "ES_USER": "",
        "TABLE": "orders",
        "IN_FLIGHT": "8",
    }

    config = parse(text, env)

    assert config.aws.region == "eu-west-1"
    assert config.aws.endpoint_url == "http://localhost:5000"
    assert config.elasticsearch.hosts == ["https://es:9200"]
    assert config.elasticsearch.username == "elastic"  # the default applies to an empty variable
    assert config.elasticsearch.client_kwargs()["basic_auth"] == ("elastic", "p$ss$word")
    assert (config.tables[0].table, config.tables[0].index) == ("orders", "orders-v1")
    assert config.bulk.max_in_flight == 8


def test_an_escaped_reference_is_kept_literally() -> None:
    text = config_with("elasticsearch", {"username": "$${NOT_A_VAR}", "password": "x"})

    assert parse(text).elasticsearch.username == "${NOT_A_VAR}"


def test_a_variable_cannot_inject_yaml_structure() -> None:
    text = config_with("aws", {"region": "${REGION}"})

    config = parse(text, {"REGION": "us-east-1\nendpoint_url: http://evil:1"})

    assert config.aws.region == "us-east-1\nendpoint_url: http://evil:1"
    assert config.aws.endpoint_url is None


def test_variables_come_from_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSYNC_TEST_REGION", "ap-south-1")

    config = parse_config(config_with("aws", {"region": "${STREAMSYNC_TEST_REGION}"}))

    assert config.aws.region == "ap-south-1"


def test_an_unset_variable_is_named_with_its_key_path() -> None:
    text = config_with("elasticsearch", {"hosts": ["http://a:9200", "${ES_HOST_2}"]})

    assert problems(text) == [
        "tables.yaml: elasticsearch.hosts[1]: environment variable ES_HOST_2 is not set "
        "(set it, or write ${ES_HOST_2:-default})"
    ]


def test_unset_variables_are_reported_with_the_other_problems() -> None:
    text = config_with("tables", {"table": "${TABLE}", "index": "${INDEX}"})
    text += "bulk: {max_in_flight: 0}\n"

    assert problems(text) == [
        "tables.yaml: tables[0].table: environment variable TABLE is not set "
        "(set it, or write ${TABLE:-default})",
        "tables.yaml: tables[0].index: environment variable INDEX is not set "
        "(set it, or write ${INDEX:-default})",
        "tables.yaml: bulk.max_in_flight: must be between 1 and 64 (got 0)",
    ]


@pytest.mark.parametrize("reference", ["${ES_HOST", "${}", "${1HOST}", "${HOST:default}"])
def test_a_malformed_reference_is_reported(reference: str) -> None:
    assert problems(config_with("aws", {"region": reference}), {"HOST": "h"}) == [
        "tables.yaml: aws.region: invalid variable reference: write ${NAME} or "
        "${NAME:-default}, and $$ for a $"
    ]


def test_streamsync_es_variables_fill_the_credentials() -> None:
    env = {"STREAMSYNC_ES_USERNAME": "elastic", "STREAMSYNC_ES_PASSWORD": SECRET}

    config = parse(MINIMUM, env)

    assert config.elasticsearch.username == "elastic"
    assert config.elasticsearch.client_kwargs()["basic_auth"] == ("elastic", SECRET)


def test_streamsync_es_variables_override_the_file() -> None:
    text = config_with("elasticsearch", {"api_key": "from-file"})

    config = parse(text, {"STREAMSYNC_ES_API_KEY": SECRET})

    assert config.elasticsearch.client_kwargs()["api_key"] == SECRET


def test_empty_streamsync_es_variables_are_ignored() -> None:
    text = config_with("elasticsearch", {"api_key": "from-file"})

    config = parse(text, {"STREAMSYNC_ES_API_KEY": "", "STREAMSYNC_ES_USERNAME": ""})

    assert config.elasticsearch.client_kwargs()["api_key"] == "from-file"
    assert config.elasticsearch.username is None


def test_an_api_key_from_the_environment_conflicts_with_basic_auth_in_the_file() -> None:
    text = config_with("elasticsearch", {"username": "elastic", "password": SECRET})

    [line] = problems(text, {"STREAMSYNC_ES_API_KEY": "an-api-key"})

    assert line.startswith("tables.yaml: elasticsearch: give either api_key or username")
    assert SECRET not in line


# The search cluster: elasticsearch or opensearch, one of them


def with_opensearch(values: dict[str, Any]) -> str:
    data = copy.deepcopy(BASE)
    del data["elasticsearch"]
    data["opensearch"] = {"hosts": ["https://search-orders.eu-west-1.es.amazonaws.com"], **values}
    return yaml.safe_dump(data, sort_keys=False)


def test_an_opensearch_section_names_the_engine_and_signing_takes_the_tables_region() -> None:
    config = parse(with_opensearch({"aws_sigv4": {}}))
    assert config.elasticsearch is None
    assert config.cluster is config.opensearch
    assert config.opensearch is not None
    assert config.opensearch.aws_sigv4 is not None
    assert config.opensearch.aws_sigv4.model_dump() == {"region": "us-east-1", "service": "es"}
    signed = parse(with_opensearch({"aws_sigv4": {"region": "eu-west-1", "service": "aoss"}}))
    assert signed.opensearch is not None
    assert signed.opensearch.aws_sigv4 is not None
    assert signed.opensearch.aws_sigv4.model_dump() == {"region": "eu-west-1", "service": "aoss"}


def test_existing_elasticsearch_files_mean_what_they_meant() -> None:
    config = parse(MINIMUM)
    assert config.opensearch is None
    assert config.cluster is config.elasticsearch


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            with_opensearch({}).replace(
                "opensearch:", "elasticsearch: {hosts: ['http://a:9200']}\nopensearch:"
            ),
            "tables.yaml: opensearch: give either elasticsearch or opensearch, not both",
        ),
        (
            with_opensearch({"aws_sigv4": {"service": "lambda"}}),
            "tables.yaml: opensearch.aws_sigv4.service: must be 'es' or 'aoss' (got 'lambda')",
        ),
        (
            with_opensearch({"aws_sigv4": {}, "username": "u", "password": "p"}),
            "tables.yaml: opensearch: give either aws_sigv4 or username and password, not both "
            "(an Amazon OpenSearch Service domain with fine-grained access control maps the IAM "
            "role instead)",
        ),
        (
            with_opensearch({"api_key": "k"}),
            "tables.yaml: opensearch.api_key: unknown key (expected one of: hosts, username, "
            "password, ca_certs, verify_certs, request_timeout_seconds, aws_sigv4)",
        ),
        (
            config_with("elasticsearch", {"cloud_id": "deployment:ZXhhbXBsZQ=="}),
            "tables.yaml: elasticsearch: give either hosts (a list of URLs) or cloud_id (an "
            "Elastic Cloud deployment), not both",
        ),
    ],
    ids=["both", "service", "sigv4-and-basic", "api-key", "cloud-id-and-hosts"],
)
def test_cluster_mistakes_are_one_line_each(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_a_cloud_id_replaces_hosts() -> None:
    data = copy.deepcopy(BASE)
    data["elasticsearch"] = {"cloud_id": "deployment:ZXhhbXBsZQ==", "api_key": SECRET}
    config = parse(yaml.safe_dump(data))
    assert config.elasticsearch is not None
    kwargs = config.elasticsearch.client_kwargs()
    assert kwargs["cloud_id"] == "deployment:ZXhhbXBsZQ=="
    assert "hosts" not in kwargs
    assert kwargs["api_key"] == SECRET
    assert SECRET not in repr(config)


def test_credentials_from_the_environment_apply_to_opensearch_too() -> None:
    environ = {"STREAMSYNC_ES_USERNAME": "admin", "STREAMSYNC_ES_PASSWORD": SECRET}
    config = parse(with_opensearch({}), environ)
    assert config.opensearch is not None
    assert config.opensearch.username == "admin"
    assert config.opensearch.password is not None
    assert config.opensearch.password.get_secret_value() == SECRET
    assert problems(with_opensearch({}), {"STREAMSYNC_ES_API_KEY": SECRET}) == [
        "tables.yaml: opensearch: STREAMSYNC_ES_API_KEY is set, but OpenSearch has no API keys: "
        "unset it, and give username and password or aws_sigv4"
    ]
