"""What single values in the configuration file must look like, and what every section shares.

The sections of the file live in two modules (the search cluster's and the rest); the checks they
both lean on live here, below them both. Each check raises ValueError with what is expected; the
offending value is appended when the message is rendered, unless it is a secret.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


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


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _hook(value: str) -> str:
    module, colon, function = value.partition(":")
    if not (colon and all(map(_is_identifier, module.split("."))) and _is_identifier(function)):
        raise ValueError(
            "must be 'package.module:function' (a dotted module path, a colon, a function name)"
        )
    return value


def _listen_address(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port, like 0.0.0.0:9108 (port 0: any free port)")
    return value


_ROLE_ARN = re.compile(
    r"arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}", re.ASCII
)


def _role_arn(value: str) -> str:
    if not _ROLE_ARN.fullmatch(value):
        raise ValueError(
            "must be an IAM role ARN, like arn:aws:iam::123456789012:role/streamsync-reader"
        )
    return value


_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


def _external_id(value: str) -> str:
    if not _EXTERNAL_ID.fullmatch(value):
        raise ValueError(
            "must be 2 to 1224 letters, digits or _ + = , . @ : / - (what STS accepts)"
        )
    return value


def _session_name(value: str) -> str:
    if not _SESSION_NAME.fullmatch(value):
        raise ValueError("must be 2 to 64 letters, digits or _ + = , . @ - (what STS accepts)")
    return value


_HttpUrl = Annotated[str, AfterValidator(_http_url)]
_TableName = Annotated[str, AfterValidator(_table_name)]
_IndexName = Annotated[str, AfterValidator(_index_name)]
_Hook = Annotated[str, AfterValidator(_hook)]
_AttributeName = Annotated[str, Field(min_length=1)]
_ListenAddress = Annotated[str, AfterValidator(_listen_address)]
_RoleArn = Annotated[str, AfterValidator(_role_arn)]
_ExternalId = Annotated[str, AfterValidator(_external_id)]
_SessionName = Annotated[str, AfterValidator(_session_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
