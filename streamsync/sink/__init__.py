"""Everything Elasticsearch: the client, target indexes, and the shared bulk indexer."""
