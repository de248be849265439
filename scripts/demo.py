"""`make demo`: streamsync end to end on this machine, in about a minute.

Starts the local search node and DynamoDB + Streams endpoint (`make services`, unless they run
already), creates a table with a stream, starts `streamsync run`, writes sample items, shows
them found in the index, updates and deletes a few and shows the index follow, then stops
everything it started. ENGINE: elasticsearch (default) or opensearch; ports: ES_PORT (9200, the
search node whatever its engine) and MOTO_PORT (5000).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".work" / "demo"
ES_PORT = int(os.environ.get("ES_PORT", "9200"))
ENGINE = os.environ.get("ENGINE") or "elasticsearch"
MOTO_PORT = int(os.environ.get("MOTO_PORT", "5000"))
TABLE = "demo-orders"
INDEX = "demo-orders"
ITEMS = 200
COLOURS = ["red", "blue", "green", "amber", "violet"]
THINGS = ["teapot", "kettle", "mug", "saucer", "spoon"]


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_for(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.3)


class Cluster:
    """The demo's view of the search node: a few REST calls over plain HTTP, the same on
    Elasticsearch and OpenSearch."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def count(self, query: dict[str, Any] | None = None) -> int:
        self.call("POST", f"/{INDEX}/_refresh")
        found = self.call("POST", f"/{INDEX}/_count", {"query": query} if query else None)
        return int(found["count"]) if found else -1


def create_table(ddb: Any) -> None:
    try:
        ddb.delete_table(TableName=TABLE)
        ddb.get_waiter("table_not_exists").wait(TableName=TABLE)
    except ddb.exceptions.ResourceNotFoundException:
        pass
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    say(f"created table {TABLE} with a NEW_AND_OLD_IMAGES stream")


def item(number: int, rng: random.Random) -> dict[str, Any]:
    return {
        "order_id": {"S": f"order-{number:04d}"},
        "item": {"S": f"{rng.choice(COLOURS)} {rng.choice(THINGS)}"},
        "quantity": {"N": str(rng.randint(1, 9))},
        "price": {"N": f"{rng.randint(100, 9999) / 100:.2f}"},
        "gift": {"BOOL": rng.random() < 0.2},
        "tags": {"SS": sorted({rng.choice(["new", "sale", "eco", "fragile"]) for _ in range(2)})},
    }


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    started_services = not (listening(ES_PORT) and listening(MOTO_PORT))
    if ENGINE not in ("elasticsearch", "opensearch"):
        raise SystemExit(f"demo: ENGINE={ENGINE}: choose elasticsearch or opensearch")
    if started_services:
        say(f"starting the local services ({ENGINE} and a DynamoDB endpoint)")
        subprocess.run([str(ROOT / "scripts" / "services.sh"), "up"], check=True)
    process: subprocess.Popen[bytes] | None = None
    try:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
        endpoint = f"http://127.0.0.1:{MOTO_PORT}"
        ddb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        cluster = Cluster(f"http://127.0.0.1:{ES_PORT}")
        cluster.call("DELETE", f"/{INDEX}")
        create_table(ddb)
        config = WORK / "tables.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "aws": {"region": "us-east-1", "endpoint_url": endpoint},
                    ENGINE: {"hosts": [cluster.url]},
                    "leases": {"table": "demo-streamsync-leases", "failover_seconds": 5},
                    "tables": [{"table": TABLE, "index": INDEX}],
                    "observability": {"listen": "127.0.0.1:0"},
                }
            )
        )
        say(f"starting: streamsync run --config {config.relative_to(ROOT)}")
        log = (WORK / "streamsync.log").open("w")
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "streamsync"), "run", "--config", str(config)],
            stdout=log,
            stderr=log,
        )
        rng = random.Random(7)
        terminal = sys.stdout.isatty()
        for number in range(1, ITEMS + 1):
            ddb.put_item(TableName=TABLE, Item=item(number, rng))
            if terminal:
                print(f"\rdemo: writing items to DynamoDB: {number}/{ITEMS}", end="", flush=True)
            elif number % 50 == 0:
                say(f"writing items to DynamoDB: {number}/{ITEMS}")
        if terminal:
            print()

        wait_for(f"the items in {ENGINE}", lambda: cluster.count() == ITEMS)
        say(f"all {ITEMS} items are in the index {INDEX}; searching for 'blue teapot':")
        query = {"match": {"item": "blue teapot"}}
        hits = cluster.call("POST", f"/{INDEX}/_search", {"query": query, "size": 3})
        for hit in hits["hits"]["hits"]:
            say(f"  {hit['_id']}: {hit['_source']}")

        for number in range(1, 6):
            ddb.update_item(
                TableName=TABLE,
                Key={"order_id": {"S": f"order-{number:04d}"}},
                UpdateExpression="SET quantity = :q, #s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":q": {"N": "42"}, ":s": {"S": "shipped"}},
            )
        for number in range(6, 11):
            ddb.delete_item(TableName=TABLE, Key={"order_id": {"S": f"order-{number:04d}"}})
        say("updated 5 orders (quantity 42, shipped) and deleted 5")

        def followed() -> bool:
            shipped = {"term": {"status.keyword": "shipped"}}
            return cluster.count() == ITEMS - 5 and cluster.count(shipped) == 5

        wait_for("the index to follow", followed)
        first = cluster.call("GET", f"/{INDEX}/_doc/order-0001")["_source"]
        say(f"the index followed: {ITEMS - 5} documents; order-0001 is now {first}")
        say("stopping streamsync (SIGTERM: drain, checkpoint, release leases)")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        process = None
        say(
            f"streamsync exited with {code}; its log: {(WORK / 'streamsync.log').relative_to(ROOT)}"
        )
        return code
    finally:
        if process is not None:
            process.kill()
        if started_services:
            subprocess.run([str(ROOT / "scripts" / "services.sh"), "down"], check=False)


if __name__ == "__main__":
    sys.exit(main())
