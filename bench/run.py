"""`make bench`: throughput, CPU per record, latency, idle cost and scale, each as a ratio or a
figure measured side by side in one run (the machine is shared and noisy).

    python bench/run.py [--quick] [--only NAME ...]

Starts its own Elasticsearch node and a moto server (for the lease table), and an OpenSearch node
for the throughput figures on OpenSearch, serves the stream from bench/replay_server.py, runs
`streamsync run` as real processes, prints a table and writes bench-results/<time>.json. Nothing
here is a test: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web
from boto3.dynamodb.types import TypeDeserializer
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk
from opensearchpy import AsyncOpenSearch
from opensearchpy.helpers import async_bulk as opensearch_async_bulk
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replay_server import ReplaySource
from streamsync.config import parse_config
from streamsync.sink.batch import bulk_body
from streamsync.sink.tombstones import Tombstones
from streamsync.transform.actions import RecordTransformer
from streamsync.transform.records import parse_record
from streamsync.transform.versions import VersionClock

ROOT = Path(__file__).resolve().parents[1]
STREAMSYNC = str(Path(sys.executable).parent / "streamsync")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Services:
    """Elasticsearch (its own node) and a moto server for the lease table."""

    def __init__(self) -> None:
        self.es_url = ""
        self.moto_url = ""
        self._moto: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Services:
        script = str(ROOT / "scripts" / "elasticsearch.sh")
        started = subprocess.run(
            [script, "start", "bench", "0", "--fresh"], check=True, capture_output=True, text=True
        )
        self.es_url = started.stdout.strip().splitlines()[-1]
        port = free_port()
        self._moto = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.moto_url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        return self

    def __exit__(self, *_: object) -> None:
        if self._moto is not None:
            self._moto.terminate()
            self._moto.wait()
        subprocess.run([str(ROOT / "scripts" / "elasticsearch.sh"), "stop", "bench"], check=False)

    @contextlib.contextmanager
    def opensearch(self) -> Iterator[str]:
        """An OpenSearch node (the newest pinned version) while the block runs; its URL."""
        script = str(ROOT / "scripts" / "opensearch.sh")
        started = subprocess.run(
            [script, "start", "bench-os", "0", "--fresh"],
            check=True,
            capture_output=True,
            text=True,
        )
        try:
            yield started.stdout.strip().splitlines()[-1]
        finally:
            subprocess.run([script, "stop", "bench-os"], check=False)


class Worker:
    """A `streamsync run` process: its metrics, its CPU time."""

    def __init__(self, config: Path, log: Path) -> None:
        self._log_path = log
        self._log = log.open("w")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        self.process = subprocess.Popen(
            [STREAMSYNC, "run", "--config", str(config), "--log-format", "json"],
            stdout=self._log,
            stderr=self._log,
            env=env,
        )
        self.port = 0

    async def started(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in self._log_path.read_text().splitlines():
                if '"message":"started"' in line:
                    self.port = int(json.loads(line)["http_port"])
                    return
            if self.process.poll() is not None:
                raise SystemExit(f"streamsync exited: {self._log_path.read_text()[-2000:]}")
            await asyncio.sleep(0.1)
        raise SystemExit("streamsync did not start")

    async def metrics(self, http: aiohttp.ClientSession) -> dict[str, float]:
        async with http.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            text = await response.text()
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(sample.labels.items()))
                values[key] = sample.value
        return values

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def peak_rss_mb(self) -> float:
        """The most memory the process ever had resident (VmHWM)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    async def stopped(self) -> None:
        """Stops the worker without blocking this loop, which serves the worker's stream and
        lease-table calls while it drains."""
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


def indexed(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("streamsync_documents_indexed_total"))


class Bench:
    def __init__(self, services: Services, quick: bool, work: Path) -> None:
        self.services = services
        self.quick = quick
        self.work = work
        self.runs = 0
        self.peak_rss_mb = 0.0  # of the last streamsync worker that loaded a stream

    async def serve(self, source: ReplaySource) -> tuple[web.AppRunner, str]:
        runner = web.AppRunner(source.app(), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner, f"http://127.0.0.1:{port}"

    def config(
        self,
        endpoint: str,
        table: str,
        index: str,
        cluster: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Path:
        self.runs += 1
        path = self.work / f"tables-{self.runs}.yaml"
        document = {
            "aws": {"region": "us-east-1", "endpoint_url": endpoint},
            **(cluster or {"elasticsearch": {"hosts": [self.services.es_url]}}),
            "leases": {"table": f"bench-leases-{self.runs}", "failover_seconds": 10},
            "tables": [{"table": table, "index": index}],
            "observability": {"listen": "127.0.0.1:0"},
            **extra,
        }
        path.write_text(yaml.safe_dump(document))
        return path

    def worker(self, config: Path) -> Worker:
        return Worker(config, self.work / f"{config.stem}-{time.monotonic_ns()}.log")

    # --- 1. throughput ----------------------------------------------------------------
    async def throughput(self) -> dict[str, Any]:
        """streamsync against the best plain client path into the same node, on Elasticsearch
        and then on OpenSearch (each ratio measured side by side on its own node)."""
        records = 30_000 if self.quick else 150_000
        results: dict[str, Any] = {"records": records}
        es = AsyncElasticsearch(self.services.es_url, request_timeout=120)
        try:
            results.update(await self._throughput_on(es, async_bulk, None, records))
        finally:
            await es.close()
        with self.services.opensearch() as url:
            client = AsyncOpenSearch(url, timeout=120)
            try:
                version = (await client.info())["version"]["number"]
                section = {"opensearch": {"hosts": [url]}}
                on_opensearch = await self._throughput_on(
                    client, opensearch_async_bulk, section, records
                )
            finally:
                await client.close()
        results["opensearch_version"] = version
        results.update({f"opensearch_{key}": value for key, value in on_opensearch.items()})
        return results

    async def _throughput_on(
        self, client: Any, bulk: Any, cluster: dict[str, Any] | None, records: int
    ) -> dict[str, Any]:
        source = ReplaySource(f"bench-throughput-{self.runs}", 8, self.services.moto_url)
        source.add(records, created=time.time())
        ceiling_seconds = await self._bulk_load(client, bulk, "bench-ceiling", source.documents())
        stream_seconds = await self._stream_load(source, "bench-stream", records, cluster)
        ceiling = records / ceiling_seconds
        stream = records / stream_seconds
        return {
            "ceiling_records_per_second": round(ceiling),
            "streamsync_records_per_second": round(stream),
            "ratio_to_ceiling": round(stream / ceiling, 3),
            "target_ratio": 0.9,
            "worker_peak_rss_mb": self.peak_rss_mb,
        }

    async def _bulk_load(
        self, client: Any, bulk: Any, index: str, docs: list[tuple[str, dict[str, Any]]]
    ) -> float:
        """The best plain client path: the client's async_bulk, chunks of 1,000, four requests
        at once (elasticsearch-py and opensearch-py have the same helper)."""
        if await client.indices.exists(index=index):
            await client.indices.delete(index=index)
        await client.indices.create(index=index)
        parts = [docs[i::4] for i in range(4)]
        started = time.monotonic()
        await asyncio.gather(
            *(
                bulk(
                    client,
                    ({"_index": index, "_id": i, "_source": d} for i, d in part),
                    chunk_size=1000,
                )
                for part in parts
            )
        )
        return time.monotonic() - started

    async def _stream_load(
        self, source: ReplaySource, index: str, records: int, cluster: dict[str, Any] | None
    ) -> float:
        runner, endpoint = await self.serve(source)
        worker = self.worker(self.config(endpoint, source.table, index, cluster))
        try:
            await worker.started()
            async with aiohttp.ClientSession() as http:
                first = 0.0
                while (done := indexed(await worker.metrics(http))) < records:
                    if done and not first:
                        first = time.monotonic()
                    await asyncio.sleep(0.05)
                self.peak_rss_mb = worker.peak_rss_mb()
                return time.monotonic() - (first or time.monotonic())
        finally:
            await worker.stopped()
            await runner.cleanup()

    # --- 2. CPU per record ------------------------------------------------------------
    def cpu_per_record(self) -> dict[str, Any]:
        pages = 10 if self.quick else 40
        source = ReplaySource("bench-cpu", 1, self.services.moto_url)
        source.add(pages * 1000, created=time.time())
        shard = source.shards[0]
        bodies = [
            b'{"Records":[' + b",".join(shard.records[i : i + 1000]) + b"]}"
            for i in range(0, len(shard.records), 1000)
        ]
        count = len(shard.records)
        config = parse_config(
            yaml.safe_dump(
                {
                    "aws": {"region": "us-east-1"},
                    "elasticsearch": {"hosts": ["http://127.0.0.1:9200"]},
                    "tables": [{"table": "ttt", "index": "t"}],
                }
            )
        )
        transformer = RecordTransformer(config.tables[0], "pk", None, None)
        tombstones = Tombstones(None)  # type: ignore[arg-type]

        def ours() -> None:
            clock = VersionClock()
            for body in bodies:
                actions = []
                for raw in orjson.loads(body)["Records"]:
                    record = parse_record(raw)
                    version = clock.next(record.created_at)
                    actions.extend(_completed(transformer.actions(record, "s", version)))
                bulk_body(actions, tombstones)

        finals = [_plain_decoded(orjson.loads(r)["dynamodb"]["NewImage"]) for r in shard.records]

        def floor() -> None:
            for body in bodies:
                orjson.loads(body)
            orjson.dumps(finals)

        deserializer = TypeDeserializer()

        def lambda_sample() -> None:
            for body in bodies:
                for record in json.loads(body)["Records"]:
                    image = record["dynamodb"]["NewImage"]
                    document = {k: deserializer.deserialize(v) for k, v in image.items()}
                    action = {"index": {"_index": "t", "_id": document["pk"]}}
                    json.dumps(action)
                    json.dumps(document, default=_decimal)

        timings = {
            name: _best_of(fn, 3) / count * 1e6
            for name, fn in [
                ("floor", floor),
                ("streamsync", ours),
                ("lambda_sample", lambda_sample),
            ]
        }
        return {
            "records": count,
            "floor_us": round(timings["floor"], 2),
            "streamsync_us": round(timings["streamsync"], 2),
            "lambda_sample_us": round(timings["lambda_sample"], 2),
            "ratio_to_floor": round(timings["streamsync"] / timings["floor"], 2),
            "speedup_over_lambda_sample": round(
                timings["lambda_sample"] / timings["streamsync"], 2
            ),
            "target_ratio": 2.0,
        }

    # --- 3. latency --------------------------------------------------------------------
    async def latency(self) -> dict[str, Any]:
        rate, duration = 1000, (15 if self.quick else 60)
        source = ReplaySource("bench-latency", 8, self.services.moto_url)
        runner, endpoint = await self.serve(source)
        index = "bench-latency"
        worker = self.worker(self.config(endpoint, source.table, index))
        es = AsyncElasticsearch(self.services.es_url)
        searchable: list[float] = []
        try:
            await worker.started()
            async with aiohttp.ClientSession() as http:
                while (await worker.metrics(http)).get("streamsync_leases_held", 0) < 8:
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2)
                generator = asyncio.create_task(source.live(rate, duration))
                seen: set[str] = set()
                give_up = float("inf")
                while True:
                    sample = [k for i, k in enumerate(source.created) if i % 20 == 0]
                    waiting = [k for k in sample if k not in seen]
                    if waiting:
                        found = await es.options(ignore_status=404).search(
                            index=index, query={"ids": {"values": waiting[-200:]}}, size=200
                        )
                        now = time.time()
                        for hit in found.get("hits", {}).get("hits", []):
                            seen.add(hit["_id"])
                            searchable.append(now - source.created[hit["_id"]])
                    if generator.done():
                        give_up = min(give_up, time.monotonic() + 10)
                        if not waiting or time.monotonic() > give_up:
                            break
                    await asyncio.sleep(0.02)
                lag = await worker.metrics(http)
        finally:
            await es.close()
            await worker.stopped()
            await runner.cleanup()
        p50, p99 = _histogram_quantiles(lag, "streamsync_end_to_end_lag_seconds", (0.5, 0.99))
        searchable.sort()
        return {
            "rate_records_per_second": rate,
            "seconds": duration,
            "acknowledged_p50_ms": round(p50 * 1000, 1),
            "acknowledged_p99_ms": round(p99 * 1000, 1),
            "searchable_p50_ms": round(statistics.median(searchable) * 1000, 1),
            "searchable_p99_ms": round(searchable[int(len(searchable) * 0.99) - 1] * 1000, 1),
            "searchable_samples": len(searchable),
            "targets_ms": {"acknowledged_p50": 100, "acknowledged_p99": 500},
        }

    # --- 4. idle cost ------------------------------------------------------------------
    async def idle(self) -> dict[str, Any]:
        """Two workers share 1,000 shards that receive nothing: what that costs in CPU,
        memory, GetRecords and lease-table writes and reads, then how soon a record written
        into a quiet shard is picked up (the pickup bound, `polling.pickup_seconds`, 2 s)."""
        shards, measure = 1000, (30 if self.quick else 120)
        source = ReplaySource("bench-idle", shards, self.services.moto_url)
        runner, endpoint = await self.serve(source)
        config = self.config(endpoint, source.table, "bench-idle")
        fleet = [self.worker(config) for _ in range(2)]
        try:
            for worker in fleet:
                await worker.started()
            async with aiohttp.ClientSession() as http:
                while True:
                    held = [(await w.metrics(http)).get("streamsync_leases_held", 0) for w in fleet]
                    if sum(held) == shards and max(held) - min(held) <= 1:
                        break
                    await asyncio.sleep(0.5)
                await asyncio.sleep(15)  # hand-offs done, every reader in its idle back-off
                settled_after = await self._leases_still(source, 20, limit=300)
                cpu = [w.cpu_seconds() for w in fleet]
                calls, leases = source.get_records_calls, Counter(source.lease_calls)
                items = Counter(source.lease_writes)
                read_units, started = source.scan_read_units, time.monotonic()
                glance_units = source.glance_read_units
                await asyncio.sleep(measure)
                elapsed = time.monotonic() - started
                busy = [(w.cpu_seconds() - c) / elapsed for w, c in zip(fleet, cpu, strict=True)]
                polls = (source.get_records_calls - calls) / elapsed
                lease_calls = Counter(source.lease_calls)
                lease_calls.subtract(leases)
                by_item = Counter(source.lease_writes)
                by_item.subtract(items)
                writes = sum(lease_calls[a] for a in ("UpdateItem", "PutItem", "DeleteItem"))
                scan_units = source.scan_read_units - read_units
                glance_units = source.glance_read_units - glance_units
                units = scan_units + glance_units
                pickups = await self._pickups(source, 20 if self.quick else 60)
                source.add(1, remember=True)
                written = time.monotonic()
                while sum([indexed(await w.metrics(http)) for w in fleet]) < len(pickups) + 1:
                    await asyncio.sleep(0.01)
                reached = time.monotonic() - written
                rss = [w.peak_rss_mb() for w in fleet]
        finally:
            await asyncio.gather(*(worker.stopped() for worker in fleet))
            await runner.cleanup()
        per_hour = 3600 / elapsed
        scans = lease_calls["Scan"]
        # A KCL worker with the same failover time scans the whole lease table every
        # 2 x (failover + 25 ms), eventually consistent (priced here from the pages streamsync's
        # scans of the same items read), and renews each lease every failover / 3 - 25 ms
        # (KCL 1.x-3.x, ../shared/notes/anchors-kcl-lambda-osi-limits.md).
        kcl_scans = len(fleet) * 3600 / (2 * (10 + 0.025))
        kcl_renewals = shards * 3600 / (10 / 3 - 0.025)
        pickups.sort()
        return {
            "idle_shards": shards,
            "workers": len(fleet),
            "start_settled_after_seconds": settled_after,
            "seconds": round(elapsed),
            "cpu_percent_of_one_core_per_worker": [round(b * 100, 1) for b in busy],
            "worker_peak_rss_mb": rss,
            "get_records_per_idle_shard_hour": round(polls * 3600 / shards),
            "lease_table_writes_per_hour": round(writes * per_hour),
            "lease_table_calls_per_hour": {a: round(n * per_hour) for a, n in lease_calls.items()},
            "lease_table_writes_per_hour_by_item": {
                item: round(n * per_hour) for item, n in by_item.items()
            },
            "lease_table_read_units_per_hour": round(units * per_hour),
            "lease_table_read_units_per_hour_scans_glances": [
                round(scan_units * per_hour),
                round(glance_units * per_hour),
            ],
            "lease_table_scans_per_worker_hour": round(scans * per_hour / len(fleet)),
            "kcl_lease_table_read_units_per_hour": round(kcl_scans * source.full_scan_price),
            "kcl_lease_renewals_per_hour": round(kcl_renewals),
            "pickup_samples": len(pickups),
            "pickup_p50_seconds": round(statistics.median(pickups), 3),
            "pickup_p99_seconds": round(pickups[max(int(len(pickups) * 0.99) - 1, 0)], 3),
            "record_indexed_after_seconds": round(reached, 2),
            "targets": {
                "cpu_percent": 5,
                "lease_table_writes_per_hour": 3000,
                "get_records_per_idle_shard_hour": 1800,
                "pickup_p99_seconds": 2,
                "peak_rss_mb": 200,
            },
        }

    @staticmethod
    async def _leases_still(source: ReplaySource, still: float, limit: float) -> float:
        """Waits until no lease item has been written for `still` seconds (the start's takes,
        hand-offs and retakes over), `limit` seconds at most; returns how long it waited. The
        lease table here is moto, whose scans of a thousand leases take seconds and hold its
        other answers up: heartbeats can lapse while workers settle, and readers then stop and
        take their leases again (see docs/benchmarks.md)."""
        started = time.monotonic()
        writes, since = source.lease_writes["lease"], time.monotonic()
        while time.monotonic() - since < still and time.monotonic() - started < limit:
            await asyncio.sleep(1)
            if source.lease_writes["lease"] != writes:
                writes, since = source.lease_writes["lease"], time.monotonic()
        return round(time.monotonic() - started, 1)

    async def _pickups(self, source: ReplaySource, samples: int) -> list[float]:
        """Writes one record at a time into a quiet shard and times until a poll serves it."""
        times: list[float] = []
        for _ in range(samples):
            before = set(source.created)
            source.add(1, remember=True)
            (key,) = set(source.created) - before
            deadline = time.monotonic() + 10
            while key not in source.picked_up and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            times.append(source.picked_up.get(key, float("inf")) - source.created[key])
            await asyncio.sleep(random.uniform(0.1, 0.5))
        return times

    # --- 5. scale ----------------------------------------------------------------------
    async def scale(self) -> dict[str, Any]:
        records = 20_000 if self.quick else 100_000
        results: dict[str, Any] = {"records": records}
        for workers in (1, 2, 4):
            # Steady state: the workers share the 16 shards evenly before the records arrive.
            source = ReplaySource(f"bench-scale-{workers}", 16, self.services.moto_url)
            runner, endpoint = await self.serve(source)
            config = self.config(endpoint, source.table, f"bench-scale-{workers}")
            fleet = [self.worker(config) for _ in range(workers)]
            try:
                for worker in fleet:
                    await worker.started()
                async with aiohttp.ClientSession() as http:
                    while True:
                        held = [
                            (await w.metrics(http)).get("streamsync_leases_held", 0) for w in fleet
                        ]
                        if sum(held) == 16 and max(held) - min(held) <= 1:
                            break
                        await asyncio.sleep(0.2)
                    source.add(records)
                    started = time.monotonic()
                    while sum([indexed(await w.metrics(http)) for w in fleet]) < records:
                        await asyncio.sleep(0.05)
                    results[f"workers_{workers}_records_per_second"] = round(
                        records / (time.monotonic() - started)
                    )
            finally:
                await asyncio.gather(*(worker.stopped() for worker in fleet))
                await runner.cleanup()
        return results


def _completed(coroutine: Any) -> Any:
    """The result of a coroutine that never suspends, as the poller's `await` gets it, without
    an event loop round trip per record (which the poller does not pay)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the transform suspended")


def _plain_decoded(image: dict[str, Any]) -> dict[str, Any]:
    from streamsync.transform.decode import decode_image

    return decode_image(image)


def _decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, set):
        return sorted(value)
    raise TypeError(type(value))


def _best_of(function: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def _histogram_quantiles(
    metrics: dict[str, float], name: str, quantiles: tuple[float, ...]
) -> list[float]:
    """Quantiles from a Prometheus histogram's cumulative buckets, interpolated linearly."""
    buckets: dict[float, float] = {}
    for key, value in metrics.items():
        if key.startswith(f"{name}_bucket"):
            bound = key.split("le=")[1].split("|")[0]
            upper = float("inf") if bound == "+Inf" else float(bound)
            buckets[upper] = buckets.get(upper, 0) + value
    bounds = sorted(buckets)
    total = buckets[float("inf")]
    out = []
    for q in quantiles:
        rank, lower, below = q * total, 0.0, 0.0
        for upper in bounds:
            count = buckets[upper]
            if count >= rank:
                if upper == float("inf"):
                    out.append(lower)
                else:
                    out.append(lower + (upper - lower) * (rank - below) / max(count - below, 1e-9))
                break
            lower, below = upper, count
    return out


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "streamsync": version("streamsync"),
        "elasticsearch_client": version("elasticsearch"),
        "opensearch_client": version("opensearch-py"),
        "aiobotocore": version("aiobotocore"),
        "orjson": version("orjson"),
    }


def render(results: dict[str, Any]) -> str:
    lines = ["benchmark            figure"]
    for name, figures in results.items():
        if name == "environment":
            continue
        for key, value in figures.items():
            lines.append(f"{name:<20} {key} = {value}")
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, under 5 minutes")
    parser.add_argument(
        "--only", nargs="*", choices=["cpu", "throughput", "latency", "idle", "scale"]
    )
    args = parser.parse_args()
    work = ROOT / "bench-results" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    random.seed(1)
    results: dict[str, Any] = {"environment": environment()}
    with Services() as services:
        results["environment"]["elasticsearch_server"] = services.es_url
        bench = Bench(services, args.quick, work)
        chosen = args.only or ["cpu", "throughput", "latency", "idle", "scale"]
        for name in chosen:
            started = time.monotonic()
            if name == "cpu":
                results[name] = bench.cpu_per_record()
            else:
                results[name] = await getattr(bench, name)()
            results[name]["bench_seconds"] = round(time.monotonic() - started, 1)
            print(render({name: results[name]}), flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {(work / 'results.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
