"""`make bench-peers`: streamsync head to head with the KCL + DynamoDB Streams Kinesis Adapter
worker (bench/peers: KCL 1.x in kcl, KCL 3.x in kcl3), on the same machine, stream, lease table
and Elasticsearch node.

    python bench/run_peers.py [--quick] [--only NAME ...] [--peers NAME ...]

Builds the peers once with Maven (cached in ~/.m2, the builds under .work/kcl-peers), starts its own
Elasticsearch node and moto server (bench/run.py's Services), serves the stream from
bench/replay_server.py to both workers, and measures each the same way: throughput and process
CPU per 1,000 records on 8 and 16 shards, creation-to-acknowledgement latency at 1,000 records/s,
idle CPU and lease-table writes with 1,000 idle shards and two workers, peak RSS, and failover
time after kill -9 with two workers. The first seconds of every busy run are discarded for every
contender (JIT compilation, connection set-up, index creation), so a cold JVM is not what is
measured. Prints a side-by-side table and writes bench-results/<time>/peers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replay_server import ReplaySource
from bench.run import Bench, Services, Worker, _histogram_quantiles

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
PEER_BUILDS = ROOT / ".work" / "kcl-peers"
JDK17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")
# The JVM's heap bound for the peer: what a team would set for a container beside a 512 MB
# Elasticsearch; the rest of the JVM's settings are its defaults (G1 on 2 CPUs).
PEER_JVM_OPTIONS = ["-Xmx512m"]
# How often the harness reads a worker's /metrics while it waits for a count. Parsing the text
# runs in this process, beside the replay server, and streamsync's page is the longer one: at
# every 50 ms, the scrapes took 8.7 % of streamsync's own CPU (py-spy) and slowed the stream it
# was served. 0.2 s bounds a throughput window's error at 0.2 s of 20 or more.
SCRAPE_SECONDS = 0.2
FAILOVER_SECONDS = 10
WARM_NODE_SECONDS = 150  # streamsync's bench setting and KCL's default failoverTimeMillis


def java_home() -> Path:
    """KCL_PEER_JAVA_HOME, else JDK 17 where Debian puts it, else JAVA_HOME."""
    candidates = (os.environ.get("KCL_PEER_JAVA_HOME"), str(JDK17), os.environ.get("JAVA_HOME"))
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "java").exists():
            return Path(candidate)
    raise SystemExit(
        "bench-peers: no JDK found for the KCL peer; install OpenJDK 17 (apt install "
        "openjdk-17-jdk-headless) or set KCL_PEER_JAVA_HOME"
    )


@dataclass(frozen=True)
class Peer:
    """A Maven module under bench/peers (with the sources in bench/peers/common) and its main."""

    module: str
    main_class: str

    def build(self) -> Path:
        """Builds the module once per version of its sources and common's; returns the build
        directory (<module>-peer.jar and lib/)."""
        digest = hashlib.sha256()
        for root in (PEERS / "common", PEERS / self.module):
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                if "target" not in path.relative_to(root).parts:
                    digest.update(str(path.relative_to(PEERS)).encode() + b"\0")
                    digest.update(path.read_bytes())
        build = PEER_BUILDS / f"{self.module}-{digest.hexdigest()[:12]}"
        if self.jar(build).exists():
            return build
        if shutil.which("mvn") is None:
            raise SystemExit(
                "bench-peers: Maven builds the KCL peers; install it (apt install maven)"
            )
        partial = Path(f"{build}.partial.{os.getpid()}")
        log = PEER_BUILDS / f"build-{self.module}.log"
        PEER_BUILDS.mkdir(parents=True, exist_ok=True)
        print(f"bench-peers: building bench/peers/{self.module} (log: {log})", file=sys.stderr)
        with log.open("w") as out:
            built = subprocess.run(
                ["mvn", "-B", "-q", "package", f"-Dbuild.dir={partial}"],
                cwd=PEERS / self.module,
                env={**os.environ, "JAVA_HOME": str(java_home())},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if built.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise SystemExit(
                f"bench-peers: Maven could not build bench/peers/{self.module} (log: {log}); "
                "check the network to Maven Central (proxy: ~/.m2/settings.xml)"
            )
        try:
            partial.rename(build)
        except OSError:  # another run built it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
        return build

    def jar(self, build: Path) -> Path:
        return build / f"{self.module}-peer.jar"


KCL1 = Peer("kcl", "streamsync.peer.kcl.KclPeer")
KCL3 = Peer("kcl3", "streamsync.peer.kcl3.Kcl3Peer")


class PeerWorker(Worker):
    """A KCL peer process, read like a streamsync worker: same start-up line, /metrics, /proc."""

    def __init__(self, peer: Peer, build: Path, log: Path, arguments: dict[str, str]) -> None:
        self._log_path = log
        self._log = log.open("w")
        command = [
            str(java_home() / "bin" / "java"),
            *PEER_JVM_OPTIONS,
            "-cp",
            f"{peer.jar(build)}:{build / 'lib'}/*",
            peer.main_class,
        ]
        for name, value in arguments.items():
            command += [f"--{name}", value]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=self._log)
        self.port = 0


@dataclass(frozen=True)
class Contender:
    """One worker under test: how to start it over a stream, and its metric names' prefix."""

    name: str
    prefix: str
    peer: Peer | None = None  # None: streamsync
    idle_millis: int = 0  # the KCL peer's idleTimeBetweenReadsInMillis
    peer_options: tuple[tuple[str, str], ...] = ()  # more of the peer's options
    settings: tuple[tuple[str, Any], ...] = ()  # streamsync's config sections beyond the bench's


# What each worker logs when it stops using a lease it held that it did not give up itself:
# KCL's LeaseRenewer ("Worker … lost lease with key …"), streamsync's reader.
LEASE_LOST = {"kcl_peer": "lost lease with key", "streamsync": "lease lost or expired"}


def leases_lost(fleet: list[Worker], prefix: str) -> int:
    """Leases the fleet's logs say were lost (expired or taken while held)."""
    return sum(w._log_path.read_text().count(LEASE_LOST[prefix]) for w in fleet)


def total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "|"))


class PeerBench:
    def __init__(
        self,
        bench: Bench,
        builds: dict[Peer, Path],
        es_url: str,
        quick: bool,
        py_spy: str | None = None,
    ) -> None:
        self.bench = bench
        self.py_spy = py_spy
        self.builds = builds
        self.es_url = es_url
        self.quick = quick
        self.runs = 0
        self.warmup = 5.0 if quick else 10.0
        self.moto_url = bench.services.moto_url

    def start(
        self, contender: Contender, endpoint: str, source: ReplaySource, index: str
    ) -> Worker:
        """A worker of `contender` on `source`'s stream (served at `endpoint`, which also
        forwards the lease table to moto), indexing into `index`."""
        return self.fleet(contender, endpoint, source, index, 1)[0]

    def fleet(
        self, contender: Contender, endpoint: str, source: ReplaySource, index: str, size: int
    ) -> list[Worker]:
        """`size` workers of `contender` sharing one lease table, as `start` starts one."""
        if contender.peer is None:
            config = self.bench.config(endpoint, source.table, index, **dict(contender.settings))
            return [self.bench.worker(config) for _ in range(size)]
        workers: list[Worker] = []
        for _ in range(size):
            self.runs += 1
            log = self.bench.work / f"{contender.name}-{self.runs}-{time.monotonic_ns()}.log"
            arguments = {
                "stream-arn": source.stream_arn,
                "streams-endpoint": endpoint,
                "dynamodb-endpoint": endpoint,
                "elasticsearch": self.es_url,
                "index": index,
                "application": f"peer-leases-{source.table}",
                "idle-millis": str(contender.idle_millis),
                "failover-millis": str(FAILOVER_SECONDS * 1000),
                "worker-id": f"{contender.name}-{self.runs}",
                **dict(contender.peer_options),
            }
            workers.append(PeerWorker(contender.peer, self.builds[contender.peer], log, arguments))
        return workers

    async def documents_per_bulk(self, index: str) -> float:
        """Documents indexed per shard-level bulk request into `index` over its whole life (its
        one shard: ES 8's default), to compare how each worker batches."""
        es = AsyncElasticsearch(self.es_url, request_timeout=120)
        try:
            stats = await es.indices.stats(index=index, metric="bulk,indexing")
        finally:
            await es.close()
        total = stats["_all"]["primaries"]
        requests = total["bulk"]["total_operations"]
        return round(total["indexing"]["index_total"] / requests, 1) if requests else 0.0

    async def drop(self, index: str) -> None:
        es = AsyncElasticsearch(self.es_url, request_timeout=120)
        try:
            await es.options(ignore_status=404).indices.delete(index=index)
        finally:
            await es.close()

    @staticmethod
    async def held(fleet: list[Worker], prefix: str, http: aiohttp.ClientSession) -> list[int]:
        return [int(total(await w.metrics(http), f"{prefix}_leases_held")) for w in fleet]

    async def wait_held(
        self,
        fleet: list[Worker],
        prefix: str,
        shards: int,
        http: aiohttp.ClientSession,
        limit: float,
        spread: bool = False,
        balanced: bool = False,
    ) -> tuple[float, list[int]]:
        """Waits until the fleet holds every lease (with `spread`, every worker some; with
        `balanced`, each within 2 % of the shards of the others), `limit` seconds at most;
        returns how long it waited and who holds how many."""
        started = time.monotonic()
        while True:
            held = await self.held(fleet, prefix, http)
            ready = sum(held) == shards and (not spread or min(held) > 0)
            ready = ready and (not balanced or max(held) - min(held) <= shards // 50)
            if ready or time.monotonic() - started > limit:
                return round(time.monotonic() - started, 1), held
            for worker in fleet:
                if worker.process.poll() is not None:
                    raise SystemExit(f"worker exited: {worker._log_path.read_text()[-3000:]}")
            await asyncio.sleep(0.5)

    @contextlib.contextmanager
    def profiled(self, contender: Contender, worker: Worker, what: str) -> Iterator[None]:
        """With --py-spy, samples a streamsync worker while the block runs (py-spy pauses the
        process at each sample: a profiled run's figures are not the benchmark's)."""
        if not self.py_spy or contender.prefix != "streamsync":
            yield
            return
        pid = str(worker.process.pid)
        out = self.bench.work / f"profile-{what}-{pid}.txt"
        spy = subprocess.Popen(
            [self.py_spy, "record", "-r", "100", "-f", "raw", "-o", str(out), "-p", pid],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            print(f"bench-peers: profile of streamsync ({what}): {out}", file=sys.stderr)

    # --- the node's own warm-up ------------------------------------------------------------
    async def warm_node(self) -> dict[str, Any]:
        """Loads the same documents into the node with the client's async_bulk (bench/run.py's
        plain path), round after round for `WARM_NODE_SECONDS`, before anything is measured:
        a fresh Elasticsearch JVM indexes at half speed or less for its first minutes (JIT),
        and without this the first contender of a run paid for it (4,101 records/s where the
        same settings made 6,460 to 8,230 later in the same run). The rounds' rates show it."""
        source = ReplaySource("peers-warm-node", 8, self.moto_url)
        source.add(50_000, created=time.time())
        documents = source.documents()
        es = AsyncElasticsearch(self.es_url, request_timeout=120)
        rates: list[int] = []
        started = time.monotonic()
        try:
            while time.monotonic() - started < WARM_NODE_SECONDS:
                seconds = await self.bench._bulk_load(es, async_bulk, "peers-warm-node", documents)
                rates.append(round(len(documents) / seconds))
            await es.indices.delete(index="peers-warm-node")
        finally:
            await es.close()
        return {
            "seconds": round(time.monotonic() - started),
            "async_bulk_records_per_second": rates,
        }

    # --- throughput and CPU per 1,000 records --------------------------------------------
    async def throughput(self, contender: Contender, shards: int) -> dict[str, Any]:
        """The stream holds `records` records before the worker starts; the first `warmup`
        seconds after the first acknowledgement are discarded, the rest timed to the last."""
        records = 150_000 if self.quick else 400_000
        source = ReplaySource(f"peers-tp-{contender.name}-{shards}", shards, self.moto_url)
        source.add(records, created=time.time())
        runner, endpoint = await self.bench.serve(source)
        index = f"peers-tp-{contender.name}-{shards}"
        worker = self.start(contender, endpoint, source, index)
        name = f"{contender.prefix}_documents_indexed_total"
        try:
            await worker.started()
            async with aiohttp.ClientSession() as http:
                while not (done := total(await worker.metrics(http), name)):
                    if worker.process.poll() is not None:
                        raise SystemExit(f"worker exited: {worker._log_path.read_text()[-3000:]}")
                    await asyncio.sleep(SCRAPE_SECONDS)
                await asyncio.sleep(self.warmup)
                base = total(await worker.metrics(http), name)
                started, cpu = time.monotonic(), worker.cpu_seconds()
                with self.profiled(contender, worker, f"throughput-{shards}"):
                    last, moved = base, time.monotonic()
                    while (done := total(await worker.metrics(http), name)) < records:
                        if done != last:
                            last, moved = done, time.monotonic()
                        elif time.monotonic() - moved > 60 or worker.process.poll() is not None:
                            log = worker._log_path.read_text()[-3000:]
                            raise SystemExit(f"{contender.name} stalled at {done:.0f}: {log}")
                        await asyncio.sleep(SCRAPE_SECONDS)
                elapsed, used = time.monotonic() - started, worker.cpu_seconds() - cpu
                rss = worker.peak_rss_mb()
                per_bulk = await self.documents_per_bulk(index)
        finally:
            await worker.stopped()
            await runner.cleanup()
            await self.drop(index)
        timed = done - base
        return {
            "records": records,
            "records_discarded_in_warmup": int(base),
            "warmup_seconds": self.warmup,
            "records_per_second": round(timed / elapsed),
            "cpu_seconds_per_1000_records": round(used / timed * 1000, 3),
            "peak_rss_mb": rss,
            "documents_per_bulk_request": per_bulk,
        }

    # --- latency at 1,000 records/s -------------------------------------------------------
    async def latency(self, contender: Contender) -> dict[str, Any]:
        """Records written live at 1,000/s into 8 shards, each stamped with its creation time;
        the worker's own histogram of creation-to-acknowledgement (same buckets for both),
        without the warm-up's records."""
        rate, measure, shards = 1000, (20 if self.quick else 40), 8
        source = ReplaySource(f"peers-lat-{contender.name}", shards, self.moto_url)
        runner, endpoint = await self.bench.serve(source)
        index = f"peers-lat-{contender.name}"
        worker = self.start(contender, endpoint, source, index)
        lag = f"{contender.prefix}_end_to_end_lag_seconds"
        indexed = f"{contender.prefix}_documents_indexed_total"
        try:
            await worker.started()
            async with aiohttp.ClientSession() as http:
                await self.wait_held([worker], contender.prefix, shards, http, limit=180)
                await asyncio.sleep(2)
                generator = asyncio.create_task(source.live(rate, self.warmup + measure))
                await asyncio.sleep(self.warmup)
                before, cpu = await worker.metrics(http), worker.cpu_seconds()
                started, calls = time.monotonic(), source.get_records_calls
                with self.profiled(contender, worker, "latency"):
                    await generator
                deadline = time.monotonic() + 30
                while total(await worker.metrics(http), indexed) < len(source.created):
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(SCRAPE_SECONDS)
                after = await worker.metrics(http)
                elapsed, used = time.monotonic() - started, worker.cpu_seconds() - cpu
                polls = source.get_records_calls - calls
                per_bulk = await self.documents_per_bulk(index)
        finally:
            await worker.stopped()
            await runner.cleanup()
            await self.drop(index)
        buckets = {k: v - before.get(k, 0.0) for k, v in after.items() if k.startswith(lag)}
        p50, p99 = _histogram_quantiles(buckets, f"{lag}", (0.5, 0.99))
        return {
            "rate_records_per_second": rate,
            "seconds_measured": measure,
            "warmup_seconds_discarded": self.warmup,
            "acknowledged_samples": int(total(after, indexed) - total(before, indexed)),
            "acknowledged_p50_ms": round(p50 * 1000, 1),
            "acknowledged_p99_ms": round(p99 * 1000, 1),
            "not_acknowledged": int(len(source.created) - total(after, indexed)),
            "cpu_percent_of_one_core": round(used / elapsed * 100, 1),
            "get_records_per_second": round(polls / elapsed, 1),
            "documents_per_bulk_request": per_bulk,
        }

    # --- idle: two workers, 1,000 idle shards ---------------------------------------------
    async def idle(self, contender: Contender) -> dict[str, Any]:
        """Two workers share 1,000 shards that receive nothing: once every lease is held and
        shared evenly (or 300 s have passed) and 20 s more, their CPU, GetRecords and
        lease-table calls over `measure`."""
        shards, measure = 1000, (30 if self.quick else 60)
        source = ReplaySource(f"peers-idle-{contender.name}", shards, self.moto_url)
        runner, endpoint = await self.bench.serve(source)
        index = f"peers-idle-{contender.name}"
        fleet = self.fleet(contender, endpoint, source, index, 2)
        try:
            for worker in fleet:
                await worker.started()
            async with aiohttp.ClientSession() as http:
                waited, held = await self.wait_held(
                    fleet, contender.prefix, shards, http, limit=300, balanced=True
                )
                await asyncio.sleep(20)
                cpu = [w.cpu_seconds() for w in fleet]
                calls, leases = source.get_records_calls, Counter(source.lease_calls)
                started = time.monotonic()
                with self.profiled(contender, fleet[0], "idle"):
                    await asyncio.sleep(measure)
                elapsed = time.monotonic() - started
                busy = [(w.cpu_seconds() - c) / elapsed for w, c in zip(fleet, cpu, strict=True)]
                polls = (source.get_records_calls - calls) / elapsed
                lease_calls = Counter(source.lease_calls)
                lease_calls.subtract(leases)
                held_after = await self.held(fleet, contender.prefix, http)
                rss = [w.peak_rss_mb() for w in fleet]
                lost = leases_lost(fleet, contender.prefix)
        finally:
            await asyncio.gather(*(worker.stopped() for worker in fleet))
            await runner.cleanup()
        per_hour = 3600 / elapsed
        writes = sum(lease_calls[a] for a in ("UpdateItem", "PutItem", "DeleteItem"))
        return {
            "idle_shards": shards,
            "workers": len(fleet),
            "leases_held_evenly_after_seconds": waited,
            "leases_held_at_start_and_end": [held, held_after],
            "leases_lost_in_the_whole_run": lost,
            "seconds_measured": round(elapsed),
            "cpu_percent_of_one_core_per_worker": [round(b * 100, 1) for b in busy],
            "get_records_per_idle_shard_hour": round(polls * 3600 / shards),
            "lease_table_writes_per_hour": round(writes * per_hour),
            "lease_table_calls_per_hour": {
                a: round(n * per_hour) for a, n in sorted(lease_calls.items()) if n
            },
            "peak_rss_mb_per_worker": rss,
        }

    # --- failover after kill -9 -----------------------------------------------------------
    async def failover(self, contender: Contender) -> dict[str, Any]:
        """Two workers share 8 shards while records arrive at 200/s; the one holding more
        leases is killed with SIGKILL; how long until the other holds every lease."""
        shards = 8
        source = ReplaySource(f"peers-fo-{contender.name}", shards, self.moto_url)
        runner, endpoint = await self.bench.serve(source)
        index = f"peers-fo-{contender.name}"
        fleet = self.fleet(contender, endpoint, source, index, 2)
        generator = asyncio.create_task(source.live(200, 3600))
        try:
            for worker in fleet:
                await worker.started()
            async with aiohttp.ClientSession() as http:
                spread_after, held = await self.wait_held(
                    fleet, contender.prefix, shards, http, limit=120, spread=True
                )
                await asyncio.sleep(5)
                held = await self.held(fleet, contender.prefix, http)
                victim = held.index(max(held))
                survivor = fleet[1 - victim]
                fleet[victim].process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                _, after = await self.wait_held([survivor], contender.prefix, shards, http, 120)
                took = time.monotonic() - killed
        finally:
            generator.cancel()
            await asyncio.gather(*(worker.stopped() for worker in fleet))
            await runner.cleanup()
            await self.drop(index)
        return {
            "workers": 2,
            "shards": shards,
            "both_holding_leases_after_seconds": spread_after,
            "victim_held": held[victim],
            "survivor_holds_all_after_seconds": round(took, 1) if after == [shards] else None,
            "failover_setting_seconds": FAILOVER_SECONDS,
        }


CONTENDERS = {
    "streamsync": Contender("streamsync", "streamsync"),
    # streamsync before tip_wait_seconds: a shard that returned records is read again at once.
    "streamsync-eager": Contender(
        "streamsync-eager", "streamsync", settings=(("polling", {"tip_wait_seconds": 0}),)
    ),
    # Latency traded for CPU: polls of a busy shard 4 times a second (as Lambda's), bulk
    # requests that wait 100 ms to fill.
    "streamsync-frugal": Contender(
        "streamsync-frugal",
        "streamsync",
        settings=(
            ("polling", {"tip_wait_seconds": 0.25}),
            ("bulk", {"flush_interval_seconds": 0.1}),
        ),
    ),
    "streamsync-8": Contender(
        "streamsync-8", "streamsync", settings=(("bulk", {"max_in_flight": 8}),)
    ),
    "streamsync-4q": Contender(
        "streamsync-4q",
        "streamsync",
        settings=(("bulk", {"max_in_flight": 4, "queue_size": 16_000}),),
    ),
    "streamsync-8q": Contender(
        "streamsync-8q",
        "streamsync",
        settings=(("bulk", {"max_in_flight": 8, "queue_size": 16_000}),),
    ),
    # As many bulk requests in flight as the KCL worker has on 16 shards (one per shard), each
    # lane with room for a full 1,000-action batch.
    "streamsync-16": Contender(
        "streamsync-16",
        "streamsync",
        settings=(("bulk", {"max_in_flight": 16, "queue_size": 16_000}),),
    ),
    "kcl": Contender("kcl", "kcl_peer", KCL1, idle_millis=1000),  # KCL 1.x's default
    "kcl-500": Contender("kcl-500", "kcl_peer", KCL1, idle_millis=500),  # the adapter's advice
    # Adapter 2.x's DynamoDBStreamsPollingConfig default (KCL 3.x's own is 1,500 ms). Not in the
    # default set: on moto its leader assigns no lease (docs/benchmarks.md, Against the KCL worker).
    "kcl3": Contender("kcl3", "kcl_peer", KCL3, idle_millis=1000),
    # KCL 3.x with KCL 2.x's lease assignment (its documented migration mode).
    "kcl3-2x": Contender(
        "kcl3-2x",
        "kcl_peer",
        KCL3,
        idle_millis=1000,
        peer_options=(("compatible-with-2x", "true"),),
    ),
}
SECTIONS = ["throughput", "latency", "idle", "failover"]


def table(results: dict[str, Any], names: list[str]) -> list[list[str]]:
    """One row per figure, one column per contender."""
    rows: list[list[str]] = [["figure", *names]]
    for section, by_name in results.items():
        if section in ("environment", "node_warm_up"):
            continue
        keys: list[str] = []
        for figures in by_name.values():
            keys += [k for k in figures if k not in keys]
        for key in keys:
            cells = [str(by_name.get(n, {}).get(key, "")) for n in names]
            rows.append([f"{section}.{key}", *cells])
    return rows


def render(results: dict[str, Any], names: list[str]) -> str:
    rows = table(results, names)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any], names: list[str]) -> str:
    rows = table(results, names)
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + " --- |" * len(rows[0]))
    return "\n".join(lines) + "\n"


async def run_all(
    sections: list[str],
    names: list[str],
    quick: bool,
    work: Path,
    py_spy: str | None,
    shard_counts: list[int],
) -> dict[str, Any]:
    peers_used = {c.peer for n in names if (c := CONTENDERS[n]).peer is not None}
    builds = {peer: peer.build() for peer in peers_used}
    results: dict[str, Any] = {
        "environment": {
            "kcl": "dynamodb-streams-kinesis-adapter 1.6.1, amazon-kinesis-client 1.14.9, "
            "aws-java-sdk 1.12.710, elasticsearch-rest-client 8.19.21",
            "kcl3": "dynamodb-streams-kinesis-adapter 2.0.1, amazon-kinesis-client 3.1.1, "
            "aws-sdk-java-v2 2.32.0, elasticsearch-rest-client 8.19.21",
            "peer_jvm": f"{java_home()} {' '.join(PEER_JVM_OPTIONS)}",
            "peer_builds": {p.module: str(b.relative_to(ROOT)) for p, b in builds.items()},
        }
    }
    with Services() as services:
        bench = Bench(services, quick, work)
        peers = PeerBench(bench, builds, services.es_url, quick, py_spy)
        plan: list[tuple[str, Callable[[Contender], Awaitable[dict[str, Any]]]]] = []
        if "throughput" in sections:
            for shards in shard_counts:
                plan.append(
                    (f"throughput_{shards}_shards", partial(peers.throughput, shards=shards))
                )
        plan += [(s, getattr(peers, s)) for s in sections if s != "throughput"]
        if {"throughput", "latency"} & set(sections):  # the sections that index
            results["node_warm_up"] = await peers.warm_node()
            print(f"bench-peers: node warmed up: {results['node_warm_up']}", flush=True)
        for turn, (section, measure) in enumerate(plan):
            results[section] = {}
            # Contenders alternate within each figure, and who goes first rotates: what drift
            # remains hits each of them.
            order = names[turn % len(names) :] + names[: turn % len(names)]
            for name in order:
                started = time.monotonic()
                results[section][name] = await measure(CONTENDERS[name])
                results[section][name]["bench_seconds"] = round(time.monotonic() - started, 1)
                (work / "peers.json").write_text(json.dumps(results, indent=2))
            print(render({section: results[section]}, names), flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", nargs="*", choices=SECTIONS)
    parser.add_argument("--peers", nargs="*", choices=list(CONTENDERS))
    parser.add_argument(
        "--shards", nargs="*", type=int, default=[8, 16], help="throughput runs' shard counts"
    )
    parser.add_argument(
        "--py-spy", metavar="PATH", help="profile streamsync's workers with this py-spy binary"
    )
    args = parser.parse_args()
    work = ROOT / "bench-results" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    names = args.peers or ["streamsync", "kcl", "kcl-500"]
    sections = args.only or SECTIONS
    results = asyncio.run(run_all(sections, names, args.quick, work, args.py_spy, args.shards))
    print("\n" + render(results, names))
    (work / "peers.md").write_text(markdown(results, names))
    print(f"\nresults: {(work / 'peers.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
