"""The systemd units and the example env files: systemd accepts them and they say what the
supervision design needs (notify, watchdog, no restart on exit 78, drain time, hardening)."""

from __future__ import annotations

import configparser
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from fleet import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(ROOT, "units")
INSTALLED_BIN = "/opt/rsky-fleet/venv/bin/"
ROLES = ("indexer", "ingester", "fetcher")
SERVICES = ["rsky-fleet.service"] + [f"rsky-{r}@.service" for r in ROLES]


def unit(name: str) -> configparser.RawConfigParser:
    p = configparser.RawConfigParser(strict=False, interpolation=None, delimiters=("=",))
    p.optionxform = str  # type: ignore[assignment,method-assign]
    p.read(os.path.join(UNITS, name))
    return p


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.fail("systemd-analyze is not installed: apt-get install -y systemd")
    return path


def verify(directory: str, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([systemd_analyze(), "verify", "--man=no", os.path.join(directory, name)],
                          capture_output=True, text=True, timeout=60, cwd=directory)


def copy_units(dst: str) -> None:
    """The units with ExecStart pointing at this venv's console scripts (verify needs them to exist)."""
    venv_bin = os.path.dirname(sys.executable) + "/"
    for name in SERVICES:
        assert os.path.exists(os.path.join(venv_bin, f"rsky-{name.split('@')[0].split('.')[0][5:]}")), \
            f"console scripts missing in {venv_bin}: pip install -e ."
    for path in glob.glob(os.path.join(UNITS, "*")):
        with open(path) as f:
            text = f.read().replace(INSTALLED_BIN, venv_bin)
        with open(os.path.join(dst, os.path.basename(path)), "w") as f:
            f.write(text)


def test_the_unit_set_is_complete():
    assert sorted(os.listdir(UNITS)) == sorted(SERVICES + ["rsky-fleet.target"])


@pytest.mark.parametrize("name", SERVICES + ["rsky-indexer@1.service", "rsky-fleet.target"])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, name):
    copy_units(str(tmp_path))
    r = verify(str(tmp_path), name)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_systemd_analyze_verify_rejects_a_broken_copy(tmp_path):
    """The check above is honest: a bad directive or a missing binary makes verify complain."""
    copy_units(str(tmp_path))
    path = tmp_path / "rsky-indexer@.service"
    path.write_text(path.read_text().replace("KillMode=mixed", "KillMode=sometimes"))
    r = verify(str(tmp_path), "rsky-indexer@.service")
    assert "KillMode" in r.stderr or "kill mode" in r.stderr
    shutil.rmtree(tmp_path)
    os.makedirs(tmp_path)
    for n in SERVICES + ["rsky-fleet.target"]:
        shutil.copy(os.path.join(UNITS, n), tmp_path / n)  # ExecStart not rewritten: /opt/... is absent here
    if not os.path.exists(INSTALLED_BIN + "rsky-fleet"):
        r = verify(str(tmp_path), "rsky-fleet.service")
        assert r.returncode != 0 and "not executable" in r.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_service_declares_the_supervision_contract(name):
    u = unit(name)
    s = u["Service"]
    assert s["Type"] == "notify"
    assert s["NotifyAccess"] == "main", "only the master talks to systemd"
    assert s["Restart"] == "on-failure"
    assert "78" in s["RestartPreventExitStatus"].split()
    assert s["KillMode"] == "mixed", "SIGTERM to the master only; it drains its children"
    assert s["User"] == "rsky" and s["Group"] == "rsky"
    watchdog = int(s["WatchdogSec"])
    hb = float(config.load({}).HEARTBEAT_TIMEOUT_S) + float(config.load({}).KILL_TIMEOUT_S)
    assert watchdog > hb, "a stale child is killed and replaced before systemd's watchdog fires"
    assert int(s["TimeoutStopSec"]) > float(config.load({}).DRAIN_TIMEOUT_S)
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectControlGroups", "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality"):
        assert s[key] == "yes", key
    assert s["ProtectSystem"] == "strict" and s["ReadWritePaths"]
    assert set(s["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert u["Install"]["WantedBy"] == "rsky-fleet.target"
    assert u["Unit"]["PartOf"] == "rsky-fleet.target"


@pytest.mark.parametrize("role", ROLES)
def test_role_unit_runs_its_console_script_with_its_instance_env_file(role):
    u = unit(f"rsky-{role}@.service")
    s = u["Service"]
    env = f"/etc/rsky-fleet/{role}@%i.env"
    assert s["ExecStart"] == f"{INSTALLED_BIN}rsky-{role}"
    assert s["EnvironmentFile"] == env
    assert s["Environment"] == f"ENV_FILE={env}", "SIGHUP re-reads the same file"
    assert u["Unit"]["AssertPathExists"] == env
    # indexers are many (one unit per shard group): the instance is part of the identifier;
    # ingesters and fetchers share one so `journalctl -t rsky-ingester` answers for all of them
    assert s["SyslogIdentifier"] == (f"rsky-{role}@%i" if role == "indexer" else f"rsky-{role}")
    with open(os.path.join(ROOT, "setup.py")) as f:
        assert f'"rsky-{role}=fleet.cli:{role}_main"' in f.read()


def test_example_env_files_load_without_secrets():
    files = sorted(glob.glob(os.path.join(ROOT, "config", "*.env")))
    assert [os.path.basename(f) for f in files] == ["fetcher@1.env", "fleet.env", "indexer@1.env", "ingester@1.env"]
    ports = []
    for path in files:
        values = config.read_env_file(path)
        assert set(values) <= {s.env for s in config.SETTINGS}, f"{path}: unknown variable"
        for k, v in values.items():
            assert config.redact_url(v) == v, f"{path}: {k} holds a credential"
        cfg = config.load({}, [path])
        ports.append(cfg.METRICS_PORT)
    assert len(set(ports)) == len(ports), "one host can run every example unit without a metrics port clash"
    idx = config.load({}, [os.path.join(ROOT, "config", "indexer@1.env")])
    assert idx.shards == [0, 1, 2, 3] and idx.SHARD_COUNT == 8


def test_makefile_install_units_installs_every_unit_and_reloads_systemd():
    with open(os.path.join(ROOT, "Makefile")) as f:
        text = f.read()
    body = re.search(r"^install-units:.*?(?=^\S|\Z)", text, re.S | re.M).group(0)
    assert "units/*.service" in body and "units/*.target" in body and "daemon-reload" in body
    assert "useradd" in body, "creates the dedicated user"
