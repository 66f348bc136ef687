"""What ``tools/lag.py`` (``rsky-lag``) reads from Redis and how it judges it.

- :mod:`fleet.lag.sample`: one read-only snapshot of every stream, group, cursor and counter;
- :mod:`fleet.lag.judge`: statuses per stream row, per shard and for the fleet over a window;
- :mod:`fleet.lag.render`: the readable table and the JSON document;
- :mod:`fleet.lag.repair`: the one state-changing action (re-pointing a broken group cursor);
- :mod:`fleet.lag.cli`: the command line (``main(argv) -> exit code``).
"""
