"""The permissions the deployment files grant are exactly what streamsync uses.

Every command (`validate`, `run` with an initial scan, shard discovery, a finished lease's
clean-up, a dead letter and a delete; `status`, `backfill`, `verify --repair`, `dlq replay`) runs
as a process against moto and the secured Elasticsearch node, logged in as a user holding only
deploy/elasticsearch-role.json. The moto front records every DynamoDB and Streams call those
processes make (told apart from the test's own by their access key): each must be granted by
deploy/iam-policy.json on its resource, and each grant must have been used. Names are the files'
own: table `orders`, lease table `streamsync-leases`, index `orders`, the default dead-letter
index, so the files are checked as shipped."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsync.sink.tombstones import PREFIX as TOMBSTONES
from tests.support import aws, nodes, streams_sim
from tests.support.moto_server import Request, StreamsServer
from tests.support.pipeline import STREAMSYNC, config_document, eventually, pk, wait_until_equal
from tests.support.search import Probe, Target
from tests.support.secured import problems_with, target_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROLE = json.loads((DEPLOY / "elasticsearch-role.json").read_text())
POLICY = json.loads((DEPLOY / "iam-policy.json").read_text())
TABLE, LEASES, DEAD_LETTERS = "orders", "streamsync-leases", "streamsync-dead-letters"
ACCESS_KEY = "STREAMSYNCUNDERTEST"  # the processes' key: the test's own calls use another
ARN_PREFIX = f"arn:aws:dynamodb:{aws.REGION}:123456789012:table/"
USER, PASSWORD = "streamsync-minimal", "minimal-password-1234"
OLD_TOMBSTONES = f"{TOMBSTONES}2020.01.01"  # past any retention: `run` must delete it

pytestmark = pytest.mark.slow


def resources(request: Request) -> set[str]:
    """The ARNs IAM authorizes `request` against: the stream for Streams calls (a GetRecords
    names it only inside its iterator, which the moto front's iterators start with), else each
    table it names."""
    body = request.body
    if isinstance(body.get("StreamArn"), str):
        return {body["StreamArn"]}
    if isinstance(body.get("ShardIterator"), str):
        return {body["ShardIterator"].split("|", 1)[0]}
    if isinstance(body.get("TableName"), str):
        return {ARN_PREFIX + body["TableName"]}
    return {ARN_PREFIX + table for table in body.get("RequestItems", {})}


def grants() -> set[tuple[str, str]]:
    """(IAM action, resource pattern) for each action each statement of the policy allows."""
    return {
        (action, statement["Resource"])
        for statement in POLICY["Statement"]
        if statement["Effect"] == "Allow"
        for action in statement["Action"]
    }


def used_grants(calls: list[Request]) -> tuple[set[tuple[str, str]], set[str]]:
    """The grants the calls needed, and the calls (action on ARN) that no grant allows."""
    used: set[tuple[str, str]] = set()
    denied: set[str] = set()
    for call in calls:
        action = f"dynamodb:{call.action}"  # Streams actions are dynamodb:* in IAM too
        for arn in resources(call) or {"no resource named"}:
            allowing = {(a, r) for a, r in grants() if a == action and fnmatch.fnmatchcase(arn, r)}
            used |= allowing
            if not allowing:
                denied.add(f"{action} on {arn}")
    return used, denied


def admin_of(secured_node: tuple[nodes.NodeInfo, Path]) -> dict[str, Any]:
    """`nodes.http_json` arguments that log in as the secured node's administrator."""
    _, certs = secured_node
    return {
        "headers": nodes.basic_auth(nodes.ADMIN_USER, nodes.admin_password(certs)),
        "context": nodes.ca_context(certs),
    }


def user_with(secured_node: tuple[nodes.NodeInfo, Path], name: str, role: dict[str, Any]) -> Target:
    """A user `name` holding `role` (made through the security API) as a target: streamsync
    logs in as the user, the probe as the administrator."""
    node, certs = secured_node
    admin = admin_of(secured_node)
    status, answer = nodes.http_json("PUT", f"{node.url}/_security/role/{name}", role, **admin)
    assert status == 200, answer
    user = {"password": PASSWORD, "roles": [name]}
    status, answer = nodes.http_json("PUT", f"{node.url}/_security/user/{name}", user, **admin)
    assert status == 200, answer
    return target_for(
        secured_node, username=name, password=PASSWORD, ca_certs=str(certs / "ca.pem")
    )


def remove_user(secured_node: tuple[nodes.NodeInfo, Path], name: str) -> None:
    node, _ = secured_node
    nodes.http_json("DELETE", f"{node.url}/_security/user/{name}", **admin_of(secured_node))
    nodes.http_json("DELETE", f"{node.url}/_security/role/{name}", **admin_of(secured_node))


@pytest.fixture
def minimal_user(secured_node: tuple[nodes.NodeInfo, Path]) -> Iterator[Target]:
    """A user holding deploy/elasticsearch-role.json and nothing else; its indices go with it."""
    yield user_with(secured_node, USER, ROLE)
    for index in (TABLE, DEAD_LETTERS, f"{TOMBSTONES}*"):
        nodes.http_json(
            "DELETE",
            f"{secured_node[0].url}/{index}?expand_wildcards=all",
            **admin_of(secured_node),
        )
    remove_user(secured_node, USER)


@pytest.fixture
async def admin_probe(minimal_user: Target) -> AsyncIterator[Probe]:
    probe = Probe(minimal_user)
    yield probe
    await probe.close()


class Commands:
    """streamsync's commands as processes, with the minimal user and their own AWS key."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY}

    async def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [STREAMSYNC, *args, "--config", str(self.config), "--log-format", "json"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [STREAMSYNC, "run", "--config", str(self.config), "--log-format", "json"],
                stdout=log,
                stderr=log,
                env=self.env,
            )


async def put(clients: aws.Clients, key: str, qty: Any) -> None:
    value = {"N": str(qty)} if isinstance(qty, int) else {"S": qty}
    await clients.dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": key}, "qty": value})


async def lease_shards(clients: aws.Clients) -> dict[str, str]:
    """Each shard's lease checkpoint, from the lease table."""
    items = (await clients.dynamodb.scan(TableName=LEASES))["Items"]
    return {i["shardId"]["S"]: i["checkpoint"]["S"] for i in items if "shardId" in i}


async def stream_while_running(commands: Commands, clients: aws.Clients, probe: Probe) -> None:
    """`run`: the initial scan, a delete (tombstone), a refused document (dead letter), a split
    (discovery, a finished lease, its clean-up once the shard leaves the stream), a graceful
    stop."""
    sim = streams_sim.stream_of(TABLE)
    root = sim.open_shards()[0].shard_id
    process = commands.start()
    try:
        await eventually(lambda: _documents_are(probe, {f"k{n}" for n in range(10)}))
        await clients.dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": "k3"}})
        await put(clients, "bad", "not a number")  # `qty` is mapped as a long
        sim.split(root, 2)
        for n in range(10, 20):
            await put(clients, f"k{n}", n)

        async def root_finished() -> bool:
            return (await lease_shards(clients)).get(root) == "SHARD_END"

        await eventually(root_finished)
        sim.drop(root)

        async def root_deleted() -> bool:
            return root not in await lease_shards(clients)

        await eventually(root_deleted)
        expected = {f"k{n}" for n in range(20)} - {"k3"}
        await eventually(lambda: _documents_are(probe, expected))
        await eventually(lambda: _count_is(probe, DEAD_LETTERS, 1))
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
    assert code == 0, commands.log.read_text()[-3000:]


async def _documents_are(probe: Probe, ids: set[str]) -> bool:
    return set(await probe.documents(TABLE)) == ids


async def _tombstones(probe: Probe) -> int:
    """How many tombstones the (hidden) daily indices hold."""
    hidden = {"expand_wildcards": "all"}
    await probe.request("POST", f"/{TOMBSTONES}*/_refresh", params=hidden)
    answer = await probe.request("POST", f"/{TOMBSTONES}*/_count", params=hidden)
    return int(answer["count"])


async def _count_is(probe: Probe, index: str, count: int) -> bool:
    return await probe.count(index) == count


async def every_command(
    clients: aws.Clients, moto_endpoint: str, target: Target, probe: Probe, tmp_path: Path
) -> None:
    """Runs every command as a process, logged in to the cluster as `target`'s user, and
    checks that each did its work."""
    await aws.create_stream_table(clients.dynamodb, TABLE)
    for n in range(10):
        await put(clients, f"k{n}", n)
    await probe.create_index(OLD_TOMBSTONES, {"settings": {"index.hidden": True}})
    table = {
        "table": TABLE,
        "index": TABLE,
        "initial_load": "scan",
        "start_position": "TRIM_HORIZON",
        "index_mappings": {"properties": {"qty": {"type": "long"}}},
    }
    document = config_document(
        moto_endpoint,
        target,
        LEASES,
        [table],
        leases={"discovery_interval_seconds": 0.5, "cleanup_after_seconds": 0},
        checkpoint_interval_seconds=0.5,
    )
    (tmp_path / "tables.yaml").write_text(yaml.safe_dump(document))
    commands = Commands(tmp_path / "tables.yaml", tmp_path / "run.log")

    validated = await commands.run("validate")
    assert validated.returncode == 0, validated.stderr
    await stream_while_running(commands, clients, probe)
    assert not await probe.exists(OLD_TOMBSTONES), "aged-out tombstones are deleted"
    assert await _tombstones(probe) == 1, "the delete left a tombstone"

    status = await commands.run("status", "--json")
    assert status.returncode == 0, status.stderr
    backfilled = await commands.run("backfill", "--restart")
    assert backfilled.returncode == 0, backfilled.stderr

    await put(clients, "bad", 7)  # the cause fixed: its letters (stream, backfill) replay
    replayed = await commands.run("dlq", "replay")
    assert replayed.returncode == 0, replayed.stderr
    assert "dead letters: 2; replayed: 2; still failing: 0" in replayed.stdout, replayed.stdout

    await probe.put(TABLE, "stray", {"pk": "stray"})  # drift, for --repair
    verified = await commands.run("verify", "--repair")
    assert "repaired" in verified.stdout, verified.stdout + verified.stderr
    await wait_until_equal(clients.dynamodb, probe, TABLE, TABLE, pk)


@pytest.mark.timeout(900)  # the first test on the secured node waits for it to start
async def test_every_command_needs_exactly_the_shipped_iam_policy_and_elasticsearch_role(
    clients: aws.Clients,
    moto_endpoint: str,
    streams_server: StreamsServer,
    minimal_user: Target,
    admin_probe: Probe,
    tmp_path: Path,
) -> None:
    calls: list[Request] = []
    streams_server.faults.observers.append(
        lambda request: calls.append(request) if request.access_key == ACCESS_KEY else None
    )
    await every_command(clients, moto_endpoint, minimal_user, admin_probe, tmp_path)
    used, denied = used_grants(calls)
    assert denied == set(), "calls the policy does not allow"
    assert grants() - used == set(), "grants no command used"


@pytest.mark.parametrize(
    ("dropped", "named"),
    [
        (
            lambda role: role["cluster"].remove("monitor"),
            "access denied (action [cluster:monitor/nodes/info] is unauthorized",
        ),
        (
            lambda role: role["cluster"].remove("manage_index_templates"),
            "cluster: manage_index_templates",
        ),
        (
            lambda role: role["indices"][0]["names"].remove(DEAD_LETTERS),
            f"{DEAD_LETTERS}: create_index, maintenance, read, view_index_metadata, write",
        ),
        (
            lambda role: role["indices"][0]["names"].remove(TABLE),
            f"{TABLE}: create_index, maintenance, read, view_index_metadata, write",
        ),
        (lambda role: role["indices"].pop(1), f"{TOMBSTONES}*: delete_index"),
    ],
    ids=["monitor", "templates", "dead-letters", "target", "tombstone-pruning"],
)
async def test_a_role_lacking_any_privilege_group_is_refused_naming_it(
    secured_node: tuple[nodes.NodeInfo, Path], dropped: Any, named: str
) -> None:
    """Each part of the role is needed, and its absence is one line naming it."""
    role = json.loads(json.dumps(ROLE))
    dropped(role)
    try:
        [line] = await problems_with(user_with(secured_node, "lacking", role))
    finally:
        remove_user(secured_node, "lacking")
    assert named in line
