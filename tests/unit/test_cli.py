from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamsync import __version__


def test_version_from_the_console_script() -> None:
    script = Path(sys.executable).parent / "streamsync"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"streamsync {__version__}"


def test_the_command_runs_on_the_event_loop_it_is_told() -> None:
    """uvloop by default (docs/benchmarks.md: less CPU per request); asyncio's own on request."""
    import asyncio

    import uvloop

    from streamsync.cli import _run_on, build_parser

    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    default = build_parser().parse_args(["run", "--config", "t.yaml"]).event_loop
    assert default == "uvloop"
    assert issubclass(_run_on(default, loop_type()), uvloop.Loop)
    assert not issubclass(_run_on("asyncio", loop_type()), uvloop.Loop)
