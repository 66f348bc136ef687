"""Console scripts (see setup.py): the master and its one-role forms, plus operator tools.

    rsky-fleet    [--env-file F]... [--check]   the roles in FLEET_ROLES under one master
    rsky-indexer  [--env-file F]... [--check]   the master restricted to the indexer role (SHARDS)
    rsky-ingester [--env-file F]... [--check]   ... to the ingester role (FLEET_INGESTERS)
    rsky-fetcher  [--env-file F]... [--check]   ... to the fetcher role (FLEET_FETCHERS)
    rsky-migrate  apply the schema migrations (fleet.db.migrate)
    rsky-lag      per-shard stream lag (fleet.lag, also tools/lag.py)

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
from .config import Config, ConfigError, _list, load, read_env_file


def _parse(prog: str, argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="env file to read (repeatable; the process environment wins)")
    p.add_argument("--check", action="store_true", help="validate the configuration, print it (secrets masked) and exit")
    return p.parse_args(argv)


def config_loader(env_files: list[str], role: str | None) -> Callable[[], Config]:
    """A function that (re-)reads the configuration, with ``FLEET_ROLES`` forced for a one-role unit.

    On a reload (SIGHUP) the env files are read again. systemd's ``EnvironmentFile=`` has
    copied the file into the process environment, which normally wins over files; so a
    variable whose environment value equals what the file said at start is taken to come from
    the file and follows the file's new content (units also set ``ENV_FILE`` to that file).
    """
    first: dict[str, str] = {}
    loaded = []

    def file_values() -> dict[str, str]:
        merged: dict[str, str] = {}
        for path in list(env_files) + _list(os.environ.get("ENV_FILE", "")):
            merged.update(read_env_file(path))
        return merged

    def loader() -> Config:
        environ = dict(os.environ)
        if not loaded:
            first.update(file_values())
            loaded.append(True)
        else:
            for k, v in first.items():
                if environ.get(k) == v:
                    del environ[k]
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
    """The lag tool (``fleet.lag``, also runnable as ``tools/lag.py``), imported only when asked for."""
    try:
        from .lag.cli import main
    except ModuleNotFoundError as e:
        print(f"rsky-lag: the lag tool is not available in this installation ({e})", file=sys.stderr)
        sys.exit(exitcodes.SOFTWARE)
    sys.exit(main(argv))


if __name__ == "__main__":
    fleet_main()
