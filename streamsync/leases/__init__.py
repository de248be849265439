"""Who reads which shard, and how far they got: the lease table and checkpoints."""
