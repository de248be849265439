"""Everything DynamoDB Streams: API calls, shard lineage, and one poller per shard."""
