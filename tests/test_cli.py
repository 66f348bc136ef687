"""The console scripts: installed, one-line configuration errors with exit 78, --check,
rsky-migrate against a real PostgreSQL, and the reload rule for systemd env files."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import psycopg
import pytest

from fleet import exitcodes
from fleet.cli import config_loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SCRIPTS = ["rsky-fleet", "rsky-indexer", "rsky-ingester", "rsky-fetcher", "rsky-migrate", "rsky-lag"]


def run(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    path = os.path.join(BIN, script)
    assert os.path.exists(path), f"{path} missing: pip install -e ."
    full = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "SHARD", "ENV_FILE", "NOTIFY_SOCKET"))}
    full.update(env or {})
    return subprocess.run([path, *args], env=full, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_every_console_script_resolves_to_a_callable():
    eps = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name.startswith("rsky-")}
    assert sorted(eps) == sorted(SCRIPTS)
    for ep in eps.values():
        assert callable(ep.load())


@pytest.mark.parametrize("script", ["rsky-fleet", "rsky-indexer", "rsky-ingester", "rsky-fetcher"])
def test_bad_configuration_exits_78_with_one_line_naming_the_variable(script):
    r = run(script, env={"SHARD_COUNT": "eight"})
    assert r.returncode == exitcodes.CONFIG
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "SHARD_COUNT" in lines[0] and "an integer" in lines[0]
    assert r.stdout == ""


def test_bad_shard_set_in_a_unit_env_file_exits_78(tmp_path):
    f = tmp_path / "indexer@1.env"
    f.write_text("SHARD_COUNT=4\nSHARDS=3-5\n")
    r = run("rsky-indexer", "--env-file", str(f))
    assert r.returncode == exitcodes.CONFIG and "SHARDS" in r.stderr and "outside 0-3" in r.stderr


def test_check_prints_the_children_of_a_one_role_unit_with_secrets_masked():
    r = run("rsky-indexer", "--env-file", os.path.join(ROOT, "config", "indexer@1.env"), "--check",
            env={"DATABASE_URL": "postgresql://bsky:hunter2@db/bsky", "FLEET_ROLES": "ingester"})
    assert r.returncode == 0, r.stderr
    assert "# children: indexer-0, indexer-1, indexer-2, indexer-3" in r.stdout, "the role is forced to indexer"
    assert "hunter2" not in r.stdout and "postgresql://bsky:***@db/bsky" in r.stdout


def test_rsky_migrate_applies_the_schema_then_reports_up_to_date(database_url):
    r = run("rsky-migrate", env={"DATABASE_URL": database_url, "DATABASE_SCHEMA": "bsky"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "applied=0001" in r.stdout
    with psycopg.connect(database_url) as c:
        assert c.execute("SELECT to_regclass('bsky.post')").fetchone()[0] == "bsky.post"
    r = run("rsky-migrate", env={"DATABASE_URL": database_url, "DATABASE_SCHEMA": "bsky"})
    assert r.returncode == 0 and "up to date" in r.stdout


def test_rsky_migrate_bad_url_exits_78():
    r = run("rsky-migrate", env={"DATABASE_URL": "mysql://x"})
    assert r.returncode == exitcodes.CONFIG and "DATABASE_URL" in r.stderr


def test_rsky_lag_is_installed_and_answers_help():
    r = run("rsky-lag", "--help")
    assert r.returncode == 0 and "usage: rsky-lag" in r.stdout


def test_reload_follows_an_edited_env_file_even_when_systemd_copied_it_into_the_environment(tmp_path, monkeypatch):
    f = tmp_path / "indexer@1.env"
    f.write_text("SHARD_COUNT=8\nSHARDS=0-3\n")
    # what EnvironmentFile= + Environment=ENV_FILE= give the process
    monkeypatch.setenv("SHARD_COUNT", "8")
    monkeypatch.setenv("SHARDS", "0-3")
    monkeypatch.setenv("ENV_FILE", str(f))
    monkeypatch.setenv("INDEXER_BATCH_SIZE", "77")  # set by the operator, not the file: stays
    loader = config_loader([], "indexer")
    assert loader().shards == [0, 1, 2, 3]
    f.write_text("SHARD_COUNT=8\nSHARDS=4-7\nINDEXER_BATCH_SIZE=10\n")
    cfg = loader()
    assert cfg.shards == [4, 5, 6, 7] and cfg.FLEET_ROLES == ["indexer"]
    assert cfg.INDEXER_BATCH_SIZE == 77


def _run_tool(tmp_path, env_file, notify_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLEET_", "SHARD", "ENV_FILE", "NOTIFY_SOCKET", "REDIS_URL", "DATABASE_URL", "WATCHDOG_"))}
    env.update({"FLEET_ROLES": "", "FLEET_EXTRA_ROLES": "s=supervisor_roles:sleeper", "METRICS_PORT": "0",
                "STARTUP_SETTLE_S": "0.1", "HEARTBEAT_INTERVAL_S": "0.05", "NOTIFY_SOCKET": notify_path,
                "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "tests"), ROOT])})
    log = open(tmp_path / "run.log", "ab")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "run.py"), "--env-file", str(env_file),
                             "--var", str(tmp_path / "var")], env=env, stdout=log, stderr=log, cwd=ROOT)
    return proc, log


def test_make_run_starts_embedded_servers_migrates_runs_the_master_and_ctrl_c_stops_everything(tmp_path):
    import json
    import signal
    import socket
    import time

    env_file = tmp_path / "fleet.env"
    env_file.write_text("DATABASE_SCHEMA=bsky\n")
    sock_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(sock_path)
        s.settimeout(60)
        for attempt in (1, 2):
            proc, log = _run_tool(tmp_path, env_file, sock_path)
            try:
                deadline = time.monotonic() + 60
                while b"READY=1" not in s.recv(4096):
                    assert time.monotonic() < deadline
                ports = json.loads((tmp_path / "var" / "ports.json").read_text())
                with psycopg.connect(f"postgresql://postgres@127.0.0.1:{ports['postgres']}/postgres") as c:
                    assert c.execute("SELECT to_regclass('bsky.post')").fetchone()[0] == "bsky.post"
                proc.send_signal(signal.SIGINT)
                assert proc.wait(30) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                log.close()
            text = (tmp_path / "run.log").read_text()
            assert ("applied 0001" if attempt == 1 else "up to date") in text.split("fleet starting")[attempt - 1]
            for port in ports.values():
                with socket.socket() as probe:
                    assert probe.connect_ex(("127.0.0.1", port)) != 0, f"server on {port} still up after Ctrl-C"
    assert text.count("embedded PostgreSQL") == 2 and "stopping embedded Postgres" in text
