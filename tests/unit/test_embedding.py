"""What an embedding gets wrong first: calling a command before `async with` built the engine."""

from __future__ import annotations

import pytest
import yaml

from streamsync import StreamSync, parse_config


async def test_a_command_outside_async_with_says_how_to_use_streamsync() -> None:
    config = parse_config(
        yaml.safe_dump(
            {
                "aws": {"region": "us-east-1"},
                "elasticsearch": {"hosts": ["http://127.0.0.1:9"]},
                "tables": [{"table": "orders", "index": "orders"}],
            }
        )
    )
    sync = StreamSync(config, serve_http=False)
    with pytest.raises(RuntimeError, match=r"async with StreamSync\(config\) as sync"):
        await sync.status()
    with pytest.raises(RuntimeError, match=r"async with StreamSync\(config\) as sync"):
        await sync.check()
