"""A real Prometheus for tests: promtool for the alert rules, a server scraping a running worker.

The binaries are Debian's prometheus package, downloaded and unpacked into .work/prometheus by
scripts/prometheus.sh on first use (nothing installed system-wide), so a fresh clone's
`make test` gets them itself, as it gets the search nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamsync.json"
SCRAPE_SECONDS = 1
START_TIMEOUT = 60


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@functools.cache
def binaries() -> Path:
    """The folder holding `prometheus` and `promtool`, fetched the first time."""
    script = ROOT / "scripts" / "prometheus.sh"
    result = subprocess.run(
        [str(script), "bin"], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} bin exited {result.returncode}:\n{_tail(result.stderr)}")
    return Path(result.stdout.strip().splitlines()[-1])


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries() / "promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.*), \w+\)", variable["query"]["query"])
            assert found, variable
            yield f"variable {variable['name']}", found.group(1)


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping `targets` (host:port) every second as job
    `streamsync`, evaluating `rule_files`, keeping its data and log in `directory`. Use as
    `async with Prometheus(...) as prometheus:`: it is stopped at the end, always."""

    def __init__(self, directory: Path, targets: list[str], rule_files: list[Path]) -> None:
        self._directory = directory
        self._targets = targets
        self._rule_files = rule_files
        self._process: asyncio.subprocess.Process | None = None
        self._log = directory / "prometheus.log"
        self.url = ""

    async def __aenter__(self) -> Prometheus:
        config = self._directory / "prometheus.yml"
        interval = f"{SCRAPE_SECONDS}s"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": interval, "evaluation_interval": interval},
                    "rule_files": [str(path) for path in self._rule_files],
                    "scrape_configs": [
                        {"job_name": "streamsync", "static_configs": [{"targets": self._targets}]}
                    ],
                }
            )
        )
        address = f"127.0.0.1:{_free_port()}"
        self.url = f"http://{address}"
        binary = (await asyncio.to_thread(binaries)) / "prometheus"
        with self._log.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self._directory / 'data'}",
                f"--web.listen-address={address}",
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            await self._until_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _until_ready(self) -> None:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                if self._process.returncode is not None:
                    raise RuntimeError(
                        f"prometheus exited {self._process.returncode}:\n"
                        f"{_tail(self._log.read_text())}"
                    )
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(
            f"prometheus not ready within {START_TIMEOUT} s:\n{_tail(self._log.read_text())}"
        )

    async def stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def api(self, path: str, **params: str) -> Any:
        """The `data` of a /api/v1 answer; RuntimeError naming Prometheus's error otherwise."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.url}/api/v1/{path}", params=params) as response,
        ):
            body = await response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus /api/v1/{path} {params}: {body.get('error', body)}")
        return body["data"]

    async def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant vector query's samples, by their labels (without the name and the
        target's)."""
        data = await self.api("query", query=expr)
        return {
            tuple(
                sorted(
                    (name, value)
                    for name, value in sample["metric"].items()
                    if name not in ("__name__", "instance", "job")
                )
            ): float(sample["value"][1])
            for sample in data["result"]
        }
