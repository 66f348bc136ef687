"""Console scripts (see setup.py): the master and its one-role forms, plus operator tools.

    rsky-fleet    [--env-file F]... [--check]   the roles in FLEET_ROLES under one master
    rsky-indexer  [--env-file F]... [--check]   the master restricted to the indexer role (SHARDS)
    rsky-ingester [--env-file F]... [--check]   ... to the ingester role (FLEET_INGESTERS)
    rsky-fetcher  [--env-file F]... [--check]   ... to the fetcher role (FLEET_FETCHERS)
    rsky-migrate  apply the schema migrations (fleet.db.migrate)
    rsky-lag      per-shard stream lag (tools/lag.py)

A one-role command is the same master (so the same supervision, heartbeats and systemd
protocol) with ``FLEET_ROLES`` forced to that role; the env file of the unit names its shards.
A configuration error prints one line naming the variable and exits 78 (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from . import exitcodes, log
from .config import Config, ConfigError, load


def _parse(prog: str, argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="env file to read (repeatable; the process environment wins)")
    p.add_argument("--check", action="store_true", help="validate the configuration, print it (secrets masked) and exit")
    return p.parse_args(argv)


def config_loader(env_files: list[str], role: str | None) -> Callable[[], Config]:
    """A function that (re-)reads the configuration, with ``FLEET_ROLES`` forced for a one-role unit."""

    def loader() -> Config:
        environ = dict(os.environ)
        if role is not None:
            environ["FLEET_ROLES"] = role
        return load(environ, env_files)

    return loader


def run_master(prog: str, role: str | None, argv: list[str] | None = None) -> int:
    """Load the configuration and run the master in the foreground; returns the exit code."""
    args = _parse(prog, argv)
    loader = config_loader(args.env_file, role)
    try:
        cfg = loader()
        from .supervisor.roles import child_specs

        specs = child_specs(cfg)
    except (ConfigError, ValueError) as e:
        print(f"{prog}: configuration error: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    if args.check:
        for k, v in cfg.redacted().items():
            print(f"{k}={v}  # {cfg.sources[k]}")
        print(f"# children: {', '.join(s.name for s in specs) or 'none'}")
        return exitcodes.OK
    log.configure(cfg.LOG_LEVEL, cfg.LOG_FORMAT, role="master")
    from .supervisor.master import Master

    return Master(cfg, reload_config=loader).run()


def fleet_main(argv: list[str] | None = None) -> None:
    sys.exit(run_master("rsky-fleet", None, argv))


def indexer_main(argv: list[str] | None = None) -> None:
    sys.exit(run_master("rsky-indexer", "indexer", argv))


def ingester_main(argv: list[str] | None = None) -> None:
    sys.exit(run_master("rsky-ingester", "ingester", argv))


def fetcher_main(argv: list[str] | None = None) -> None:
    sys.exit(run_master("rsky-fetcher", "fetcher", argv))


def migrate_main(argv: list[str] | None = None) -> None:
    from .db.migrate import main

    sys.exit(main(argv))


def lag_main(argv: list[str] | None = None) -> None:
    """``tools/lag.py``'s main, imported only when asked for (tools/ lives beside the package)."""
    try:
        from tools.lag import main  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not os.path.exists(os.path.join(root, "tools", "lag.py")):
            print("rsky-lag: tools/lag.py is not available in this installation (run it from the source tree)", file=sys.stderr)
            sys.exit(exitcodes.SOFTWARE)
        sys.path.insert(0, root)
        from tools.lag import main  # type: ignore[import-not-found]
    sys.exit(main(argv) if argv is not None else main())


if __name__ == "__main__":
    fleet_main()
