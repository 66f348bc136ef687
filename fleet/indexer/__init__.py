"""The indexer role: shard k consumes its streams and applies them to PostgreSQL.

``main.run(cfg, ctx)`` is the role entry point; ``consumer`` is the per-shard read/apply/ack
loop; ``deadletter`` moves entries that keep failing aside; ``groupcheck`` notices a consumer
group that can no longer deliver waiting entries; ``metrics`` lists every metric.
"""
