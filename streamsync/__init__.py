"""streamsync: keeps Elasticsearch and OpenSearch indexes in sync with DynamoDB tables through
DynamoDB Streams.

The public API, what the README's embedding and hook sections use: `StreamSync` (the engine,
`async with StreamSync(config) as sync: await sync.run()`), `load_config` / `parse_config` and
the configuration models, `ChangeRecord` (what a transform hook gets) and `StreamsyncError` (a
problem a user can act on, with its one-line message). `streamsync.testing` holds in-memory
stand-ins for a stream, the lease table and the sink, to test hooks and pipelines without AWS.
"""

from importlib.metadata import version

from streamsync.app import StreamSync
from streamsync.config import Config, TableConfig, load_config, parse_config
from streamsync.errors import StreamsyncError
from streamsync.transform.actions import ChangeRecord

__version__ = version("streamsync")

__all__ = [
    "ChangeRecord",
    "Config",
    "StreamSync",
    "StreamsyncError",
    "TableConfig",
    "__version__",
    "load_config",
    "parse_config",
]
