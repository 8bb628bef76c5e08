"""Everything that knows about ranks, process groups and sharding backends."""
