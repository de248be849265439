"""`make demo`: streamsync end to end on this machine, in about a minute.

Starts the local Elasticsearch and DynamoDB + Streams endpoint (`make services`, unless they run
already), creates a table with a stream, starts `streamsync run`, writes sample items, shows
them found in Elasticsearch, updates and deletes a few and shows the index follow, then stops
everything it started. Ports: ES_PORT (9200) and MOTO_PORT (5000).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import yaml
from elasticsearch import Elasticsearch

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".work" / "demo"
ES_PORT = int(os.environ.get("ES_PORT", "9200"))
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
    if started_services:
        say("starting the local services (Elasticsearch and a DynamoDB endpoint)")
        subprocess.run([str(ROOT / "scripts" / "services.sh"), "up"], check=True)
    process: subprocess.Popen[bytes] | None = None
    try:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
        endpoint = f"http://127.0.0.1:{MOTO_PORT}"
        ddb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        es = Elasticsearch(f"http://127.0.0.1:{ES_PORT}", request_timeout=30)
        es.options(ignore_status=404).indices.delete(index=INDEX)
        create_table(ddb)
        config = WORK / "tables.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "aws": {"region": "us-east-1", "endpoint_url": endpoint},
                    "elasticsearch": {"hosts": [f"http://127.0.0.1:{ES_PORT}"]},
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

        def indexed(count: int) -> bool:
            es.options(ignore_status=404).indices.refresh(index=INDEX)
            found = es.options(ignore_status=404).count(index=INDEX)
            return found.get("count") == count

        wait_for("the items in Elasticsearch", lambda: indexed(ITEMS))
        say(f"all {ITEMS} items are in the index {INDEX}; searching for 'blue teapot':")
        hits = es.search(index=INDEX, query={"match": {"item": "blue teapot"}}, size=3)
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
            if not indexed(ITEMS - 5):
                return False
            shipped = es.count(index=INDEX, query={"term": {"status.keyword": "shipped"}})
            return bool(shipped["count"] == 5)

        wait_for("the index to follow", followed)
        first = es.get(index=INDEX, id="order-0001")["_source"]
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
