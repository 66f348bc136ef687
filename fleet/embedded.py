"""Throwaway or persistent Redis and PostgreSQL servers from the system binaries.

Used by ``make run`` / ``make demo`` (data under ``./var/``) and by the tests (temporary
directories, free ports). PostgreSQL refuses to run as root, so as root the server runs as
the ``postgres`` system user (created by Debian's package).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass


class ServerMissing(RuntimeError):
    """A server binary is not installed; the message says how to install it."""


INSTALL_HINT = {
    "redis-server": "apt-get install -y redis-server",
    "postgres": "apt-get install -y postgresql",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_redis() -> str:
    path = shutil.which("redis-server")
    if not path:
        raise ServerMissing(f"redis-server is not installed: {INSTALL_HINT['redis-server']}")
    return path


def find_pg_bindir() -> str:
    for cand in [os.environ.get("PG_BINDIR", "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if cand and os.path.exists(os.path.join(cand, "postgres")) and os.path.exists(os.path.join(cand, "initdb")):
            return cand
    p = shutil.which("postgres")
    if p and shutil.which("initdb"):
        return os.path.dirname(os.path.realpath(p))
    raise ServerMissing(f"PostgreSQL server is not installed: {INSTALL_HINT['postgres']}")


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


@dataclass
class Redis:
    datadir: str
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, persistent: bool = False) -> "Redis":
        os.makedirs(self.datadir, exist_ok=True)
        args = [find_redis(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.datadir,
                "--daemonize", "no", "--save", "", "--appendonly", "yes" if persistent else "no",
                "--logfile", os.path.join(self.datadir, "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        _wait_port(self.port, 15, self.proc, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Postgres:
    datadir: str
    port: int
    proc: subprocess.Popen | None = None
    user: str = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    @property
    def socket_url(self) -> str:
        """The same server through its Unix socket (in the data directory): cheaper than TCP
        for a client on the same machine."""
        return f"postgresql://{self.user}@/postgres?host={os.path.abspath(self.datadir)}&port={self.port}"

    def _as_owner(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    def _chown(self, path: str) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def start(self, fsync: bool = False) -> "Postgres":
        bindir = find_pg_bindir()
        parent = os.path.dirname(os.path.abspath(self.datadir))
        os.makedirs(parent, exist_ok=True)
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServerMissing("PostgreSQL refuses to run as root and there is no 'postgres' user: "
                                    "apt-get install -y postgresql (creates it)") from None
            # the postgres user must be able to reach the data directory
            p = os.path.abspath(parent)
            while p not in ("/", ""):
                st = os.stat(p)
                if not st.st_mode & 0o001:
                    os.chmod(p, st.st_mode | 0o001)
                p = os.path.dirname(p)
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            os.makedirs(self.datadir, exist_ok=True)
            os.chmod(self.datadir, 0o700)
            self._chown(self.datadir)
            subprocess.run(self._as_owner() + [os.path.join(bindir, "initdb"), "-D", self.datadir, "-U", self.user,
                           "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        opts = ["-c", f"port={self.port}", "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.datadir}",
                "-c", "max_connections=200", "-c", "shared_buffers=256MB"]
        if not fsync:
            opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(os.path.join(parent, os.path.basename(self.datadir) + ".log"), "ab")
        self.proc = subprocess.Popen(self._as_owner() + [os.path.join(bindir, "postgres"), "-D", self.datadir] + opts,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        _wait_port(self.port, 30, self.proc, "postgres")
        # the port answers before the server accepts queries; wait for a real connection
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM = smart shutdown; fine for throwaway data
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
