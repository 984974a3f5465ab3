"""The asyncio shell of a peer: node, replication, scheduler, executor, slots, bundles."""
