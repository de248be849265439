"""streamsync: keeps Elasticsearch indexes in sync with DynamoDB tables through DynamoDB Streams."""

from importlib.metadata import version

__version__ = version("streamsync")

__all__ = ["__version__"]
