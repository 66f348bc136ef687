#!/usr/bin/env python3
"""``make run``: the whole fleet in the foreground, with embedded servers unless configured.

1. Reads ``config/fleet.env`` (the process environment wins, as everywhere).
2. Unless ``REDIS_URL`` / ``DATABASE_URL`` are configured, starts redis-server and PostgreSQL
   from the system binaries with their data under ``./var/`` (ports remembered in
   ``var/ports.json``, so a second run reuses the same data and URLs). Missing binaries are
   installed with apt-get when running as root; otherwise the exact command is printed.
3. Applies the schema migrations.
4. Runs the master in the foreground. Ctrl-C drains the fleet (a second Ctrl-C kills it),
   then the embedded servers are stopped.

    python tools/run.py [--env-file config/fleet.env] [--var ./var]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from fleet import embedded, exitcodes, log  # noqa: E402
from fleet.config import ConfigError, read_env_file  # noqa: E402

DEFAULT_PORTS = {"redis": 16379, "postgres": 15432}
PACKAGES = {"redis": "redis-server", "postgres": "postgresql"}


def say(msg: str) -> None:
    print(f"run: {msg}", file=sys.stderr, flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def ports_for(var: str, wanted: list[str]) -> dict[str, int]:
    """The embedded servers' ports: those of the previous run when free, else new ones, saved."""
    path = os.path.join(var, "ports.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        saved = {}
    out = {}
    for name in wanted:
        p = saved.get(name) or DEFAULT_PORTS[name]
        if not port_free(p):
            p = DEFAULT_PORTS[name] if port_free(DEFAULT_PORTS[name]) else embedded.free_port()
        out[name] = p
    os.makedirs(var, exist_ok=True)
    with open(path, "w") as f:
        json.dump({**saved, **out}, f)
    return out


def ensure_installed(wanted: list[str]) -> bool:
    """True when the binaries of ``wanted`` exist (installing them with apt-get as root)."""
    finders = {"redis": embedded.find_redis, "postgres": embedded.find_pg_bindir}
    missing = []
    for name in wanted:
        try:
            finders[name]()
        except embedded.ServerMissing:
            missing.append(PACKAGES[name])
    if not missing:
        return True
    cmd = ["apt-get", "install", "-y", *missing]
    if os.geteuid() != 0:
        say(f"missing {', '.join(missing)}: install with `sudo {' '.join(cmd)}`, "
            "or set REDIS_URL / DATABASE_URL in config/fleet.env to use existing servers")
        return False
    say(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    except (OSError, subprocess.CalledProcessError) as e:
        say(f"apt-get failed ({e}); install by hand: {' '.join(cmd)}")
        return False
    return True


def still_running_postgres(datadir: str) -> int | None:
    """The pid of a PostgreSQL a previous run left behind on this data directory, if any."""
    try:
        with open(os.path.join(datadir, "postmaster.pid")) as f:
            pid = int(f.readline().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make run", description=__doc__.split("\n")[0])
    p.add_argument("--env-file", default=os.path.join(ROOT, "config", "fleet.env"))
    p.add_argument("--var", default=os.path.join(ROOT, "var"), help="data directory of the embedded servers")
    a = p.parse_args(argv)
    env_files = [a.env_file] if os.path.exists(a.env_file) else []
    try:
        from_file = read_env_file(a.env_file) if env_files else {}
    except ConfigError as e:
        say(f"configuration error: {e}")
        return exitcodes.CONFIG
    configured = lambda k: bool(os.environ.get(k) or from_file.get(k))  # noqa: E731
    wanted = [n for n, k in (("redis", "REDIS_URL"), ("postgres", "DATABASE_URL")) if not configured(k)]
    if wanted and not ensure_installed(wanted):
        return exitcodes.UNAVAILABLE

    servers: list = []
    try:
        if wanted:
            ports = ports_for(a.var, wanted)
        if "redis" in wanted:
            r = embedded.Redis(os.path.join(a.var, "redis"), ports["redis"]).start(persistent=True)
            servers.append(r)
            os.environ["REDIS_URL"] = r.url
            say(f"embedded Redis {r.url} (data {r.datadir})")
        if "postgres" in wanted:
            datadir = os.path.join(a.var, "pg")
            left = still_running_postgres(datadir)
            if left:
                say(f"a PostgreSQL from a previous run still uses {datadir} (pid {left}): stop it with `kill {left}`")
                return exitcodes.UNAVAILABLE
            pg = embedded.Postgres(datadir, ports["postgres"]).start()
            servers.append(pg)
            os.environ["DATABASE_URL"] = pg.url
            say(f"embedded PostgreSQL {pg.url} (data {datadir})")

        from fleet.cli import config_loader

        loader = config_loader(env_files, None)
        try:
            cfg = loader()
        except ConfigError as e:
            say(f"configuration error: {e}")
            return exitcodes.CONFIG

        import psycopg

        from fleet.db.migrate import migrate

        try:
            applied = migrate(cfg.DATABASE_URL, cfg.DATABASE_SCHEMA)
        except psycopg.OperationalError as e:
            say(f"cannot reach PostgreSQL: {e}")
            return exitcodes.UNAVAILABLE
        say(f"schema {cfg.DATABASE_SCHEMA}: {'applied ' + ','.join(applied) if applied else 'up to date'}")

        log.configure(cfg.LOG_LEVEL, cfg.LOG_FORMAT, role="master")
        from fleet.supervisor.master import Master

        say("fleet starting; Ctrl-C drains and stops it")
        return Master(cfg, reload_config=loader).run()
    except embedded.ServerMissing as e:
        say(str(e))
        return exitcodes.UNAVAILABLE
    except KeyboardInterrupt:
        say("interrupted")
        return exitcodes.OK
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave servers behind
        for srv in reversed(servers):
            say(f"stopping embedded {type(srv).__name__}")
            srv.stop()


if __name__ == "__main__":
    sys.exit(main())
