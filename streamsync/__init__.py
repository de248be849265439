"""streamsync: keeps Elasticsearch indexes in sync with DynamoDB tables through DynamoDB Streams.

The public API: `StreamSync` (the engine, `async with StreamSync(config) as sync: await
sync.run()`), `load_config` / `parse_config` and the configuration models.
"""

from importlib.metadata import version

from streamsync.app import StreamSync
from streamsync.config import Config, TableConfig, load_config, parse_config

__version__ = version("streamsync")

__all__ = ["Config", "StreamSync", "TableConfig", "__version__", "load_config", "parse_config"]
