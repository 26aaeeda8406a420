"""Polling: the tick engine, its failure policy, shard leases, the task schedules, the latest reading."""
