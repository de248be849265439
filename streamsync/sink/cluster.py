"""Connecting to the configured cluster, checking it before anything is written, and the target
indexes, with errors that say what to fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from streamsync.config import Config, ElasticsearchConfig, TableConfig
from streamsync.errors import Passing, StreamsyncError
from streamsync.sink.deadletter import INDEX_MAPPINGS as DEAD_LETTER_MAPPINGS
from streamsync.sink.elasticsearch import ElasticsearchEngine
from streamsync.sink.engine import (
    Refused,
    SearchEngine,
    SearchError,
    Unreachable,
    WrongProduct,
    path_of,
)
from streamsync.sink.mapping_check import Rules
from streamsync.sink.opensearch import OpenSearchEngine
from streamsync.sink.tombstones import PREFIX as TOMBSTONES_PREFIX

if TYPE_CHECKING:
    from aiobotocore.credentials import AioCredentials

PROBE_ID = "streamsync-probe"
# A cluster starting, overloaded or behind a gateway whose backend is down: it will answer later.
PASSING_STATUSES = frozenset({429, 502, 503, 504})


def connect(config: Config, credentials: AioCredentials | None) -> SearchEngine:
    """The engine the configuration names (its `elasticsearch` or `opensearch` section)."""
    cluster = config.cluster
    if isinstance(cluster, ElasticsearchConfig):
        return ElasticsearchEngine(cluster)
    return OpenSearchEngine(cluster, credentials)


def written_indices(config: Config) -> list[str]:
    """Every index streamsync writes with this configuration, tombstones aside."""
    indices = [table.index for table in config.tables]
    if config.dead_letters.index is not None:
        indices.append(config.dead_letters.index)
    return indices


async def cluster_problems(engine: SearchEngine, config: Config) -> list[str]:
    """Why streamsync cannot work with this cluster, one line each (empty: it can)."""
    where = f"{engine.product} at {engine.describe()}"
    try:
        identity = await engine.identify()
        missing = await engine.missing_privileges(
            written_indices(config), [f"{TOMBSTONES_PREFIX}*"]
        )
    except WrongProduct as error:
        found = "opensearch" if error.found == "OpenSearch" else "elasticsearch"
        return [
            f"{where}: the cluster is {error.found}, not {error.expected}; describe it in an "
            f"`{found}:` section instead of `{engine.section}:`"
        ]
    except SearchError as error:
        return [_unusable(engine, where, error)]
    if missing:
        return [
            f"{where}: the credentials lack privileges streamsync needs: {'; '.join(missing)}; "
            "grant them to the user or API key (see the README, 'Secured clusters')"
        ]
    if identity.product == "OpenSearch Serverless":
        return await _serverless_problems(engine, config, where)
    return []


def _unusable(engine: SearchEngine, where: str, error: SearchError) -> str:
    if isinstance(error, Unreachable) and error.tls:
        return (
            f"{where}: TLS failed ({error.reason}); set {engine.section}.ca_certs to the CA "
            f"that signed the cluster's certificate ({engine.section}.verify_certs: false only "
            "to try things out)"
        )
    if isinstance(error, Unreachable):
        return Passing(
            f"{where}: unreachable ({error.reason}); check {engine.section}.hosts and that the "
            "cluster is up"
        )
    if isinstance(error, Refused) and (error.status == 401 or _bad_signature(error)):
        return f"{where}: authentication failed; {engine.auth_hint}"
    if isinstance(error, Refused) and error.status == 403:
        return f"{where}: access denied ({error.reason}); {engine.permission_hint}"
    if isinstance(error, Refused) and error.status in PASSING_STATUSES:
        return Passing(f"{where}: answered {error}; waiting for the cluster to recover")
    return f"{where}: answered {error}"


_SIGNATURE_TROUBLE = ("signature", "security token", "authentication token")


def _bad_signature(error: Refused) -> bool:
    """AWS answers 403, not 401, to a signature or key it does not accept ("The security token
    included in the request is invalid", "...expired", "The request signature we calculated
    does not match..."); an authorization refusal says "not authorized" instead."""
    return error.status == 403 and any(s in error.reason.lower() for s in _SIGNATURE_TROUBLE)


async def _serverless_problems(engine: SearchEngine, config: Config, where: str) -> list[str]:
    """OpenSearch Serverless does not document whether a collection keeps custom ids and
    external versions (TIMESERIES and VECTORSEARCH collections refuse custom ids; SEARCH
    collections keep them). Both are what never-stale rests on, so a probe document in the
    dead-letter index is written twice (newer version first) and removed: the older write must
    be refused."""
    index = config.dead_letters.index or config.tables[0].index
    meta: dict[str, Any] = {"_index": index, "_id": PROBE_ID, "version_type": "external"}
    body = b"".join(
        orjson.dumps({"index": {**meta, "version": version}}) + b"\n" + b'{"probe":true}\n'
        for version in (2, 1)
    )
    try:
        if not await engine.index_exists(index):
            dead_letters = index == config.dead_letters.index
            await engine.create_index(
                index, {"mappings": DEAD_LETTER_MAPPINGS} if dead_letters else {}
            )
        newer, older = (item["index"] for item in (await engine.bulk(body))["items"])
        await engine.delete_document(index, PROBE_ID)
    except SearchError as error:
        return [_unusable(engine, where, error)]
    reason = str((newer.get("error") or {}).get("reason", ""))
    if "Document ID is not supported" in reason:
        return [
            f"{where}: the collection refuses custom document ids (a TIMESERIES or VECTORSEARCH "
            "collection); streamsync keeps one document per item, keyed by the table's keys: "
            "use a collection of type SEARCH"
        ]
    if newer.get("status", 500) >= 300:
        return [f"{where}: indexing a probe document into {index} failed: {newer.get('error')}"]
    if older.get("status") != 409:
        return [
            f"{where}: the collection does not enforce external versions (an older write "
            "replaced a newer one), so an older image could overwrite a newer one; streamsync "
            "refuses to run rather than serve stale documents"
        ]
    return []


async def ensure_index(engine: SearchEngine, table: TableConfig) -> bool:
    """Creates the table's index with its configured settings and mappings when it is missing;
    an existing index is never altered. True when this call created it."""
    if await engine.index_exists(table.index):
        return False
    body: dict[str, Any] = {}
    if table.index_settings:
        body["settings"] = table.index_settings
    if table.index_mappings:
        body["mappings"] = table.index_mappings
    try:
        return await engine.create_index(table.index, body)
    except Refused as error:
        raise StreamsyncError(
            f"index {table.index}: cannot create it ({error.type}: {error.reason}); check "
            "index_settings/index_mappings of that table, or create the index yourself"
        ) from error


async def written_rules(engine: SearchEngine, target: str) -> list[Rules]:
    """The mapping and index-wide settings of the index that writes to `target` go to: the index
    itself, or an alias's write index (every index behind an alias that names none)."""
    mappings = await engine.request("GET", path_of(target, "_mapping"))
    indices = sorted(mappings)
    if len(indices) > 1:
        aliases = await engine.request("GET", path_of("_alias", target))
        writing = [
            index
            for index in indices
            if aliases.get(index, {}).get("aliases", {}).get(target, {}).get("is_write_index")
        ]
        indices = writing or indices
    settings = await engine.request("GET", path_of(target, "_settings"), {"flat_settings": "true"})
    rules = []
    for index in indices:
        flat = settings.get(index, {}).get("settings", {})
        rules.append(
            Rules(
                index,
                mappings[index].get("mappings", {}),
                coerce=str(flat.get("index.mapping.coerce", "true")) == "true",
                ignore_malformed=str(flat.get("index.mapping.ignore_malformed")) == "true",
            )
        )
    return rules
