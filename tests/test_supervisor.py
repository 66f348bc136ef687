"""The master with real processes: fork, signals, heartbeats, a fake NOTIFY_SOCKET.

Children run the roles of tests/supervisor_roles.py through the FLEET_EXTRA_ROLES hook.
Timeouts are shrunk through the environment so each test takes a few seconds.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from fleet import exitcodes
from fleet.supervisor import notify
from fleet.supervisor.child import backoff_delay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

FAST = {
    "FLEET_ROLES": "",
    "HEARTBEAT_INTERVAL_S": "0.05",
    "HEARTBEAT_TIMEOUT_S": "0.6",
    "STARTUP_SETTLE_S": "0.2",
    "RESTART_BACKOFF_S": "0.05",
    "RESTART_BACKOFF_MAX_S": "0.2",
    "RESTART_MAX": "5",
    "RESTART_WINDOW_S": "30",
    "DRAIN_TIMEOUT_S": "3",
    "KILL_TIMEOUT_S": "0.5",
    "METRICS_PORT": "0",
}


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET; records (time, message)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, m in self.messages for line in m.split("\n")]

    def times(self, line: str) -> list[float]:
        return [t for t, m in self.messages if line in m.split("\n")]

    def close(self) -> None:
        self._stop = True
        self._t.join(2)
        self.sock.close()


class Fleet:
    """A master process started from the fleet CLI with the test roles."""

    def __init__(self, tmp, env: dict[str, str], entry: str = "fleet_main", args: list[str] | None = None) -> None:
        self.tmp = str(tmp)
        self.markers = os.path.join(self.tmp, "markers")
        os.makedirs(self.markers, exist_ok=True)
        self.notify = NotifySocket(os.path.join(self.tmp, "notify.sock"))
        full = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "FLEET_", "ENV_FILE"))}
        full.update(FAST)
        full.update(env)
        full["PYTHONPATH"] = os.pathsep.join([TESTS, ROOT])
        full["NOTIFY_SOCKET"] = self.notify.path
        full["TEST_MARKER_DIR"] = self.markers
        self.log_path = os.path.join(self.tmp, "master.log")
        self.log_file = open(self.log_path, "wb")
        code = f"import sys; from fleet.cli import {entry}; {entry}(sys.argv[1:])"
        self.proc = subprocess.Popen([sys.executable, "-c", code] + (args or []), cwd=ROOT, env=full,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def events(self, event: str, **fields: str) -> list[str]:
        out = []
        for line in self.log().splitlines():
            if f" event={event} " not in line + " ":
                continue
            if all(re.search(rf'\b{k}="?{re.escape(v)}"?(\s|$)', line) for k, v in fields.items()):
                out.append(line)
        return out

    def children(self) -> list[int]:
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

    def child_pid(self, name: str) -> int | None:
        lines = self.events("child_started", child=name)
        if not lines:
            return None
        return int(re.search(r"\bpid=(\d+)", lines[-1]).group(1))

    def wait_ready(self, timeout: float = 15) -> None:
        wait_for(lambda: "READY=1" in self.notify.lines() or self.proc.poll() is not None, timeout, "READY=1")
        assert self.proc.poll() is None, self.log()

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"master still running after {timeout}s:\n{self.log()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            kids = self.children()
            self.proc.kill()
            self.proc.wait(5)
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.log_file.close()
        self.notify.close()


@pytest.fixture
def fleet(tmp_path):
    started: list[Fleet] = []

    def start(env: dict[str, str], **kw) -> Fleet:
        f = Fleet(tmp_path / f"f{len(started)}", env, **kw)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_sigkilled_child_is_restarted_as_a_new_process(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "s1=supervisor_roles:sleeper,s2=supervisor_roles:sleeper"})
    f.wait_ready()
    old = f.child_pid("s1")
    other = f.child_pid("s2")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: f.child_pid("s1") != old and len(f.events("child_running", child="s1")) == 2, 10, "s1 restarted")
    new = f.child_pid("s1")
    assert alive(new) and not alive(old)
    assert cmdline(new) == "rsky-fleet: s1"
    assert f.events("child_exited", child="s1", status="signal=SIGKILL")
    assert f.child_pid("s2") == other and alive(other), "the other child is untouched"
    assert f.proc.poll() is None


def test_blocked_event_loop_child_is_killed_and_restarted_while_watchdog_pings_stop(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "b=supervisor_roles:blocker,s=supervisor_roles:sleeper", "WATCHDOG_USEC": "400000",
               "KILL_TIMEOUT_S": "1.0"})
    f.wait_ready()
    wait_for(lambda: f.events("child_running", child="b") and len(f.events("child_running", child="b")) >= 2, 15,
             "blocked child replaced and running again")
    assert f.events("child_unresponsive", child="b")
    assert f.events("child_kill", child="b", action="SIGKILL"), "SIGTERM cannot reach a blocked loop: SIGKILL follows"
    assert f.events("child_exited", child="b", status="signal=SIGKILL")
    first_blocked = int(open(os.path.join(f.markers, "blocked")).read().split()[0])
    assert not alive(first_blocked)
    t_restart = time.monotonic()
    wait_for(lambda: any(t > t_restart for t in f.notify.times("WATCHDOG=1")), 5, "watchdog pings resume")
    pings = f.notify.times("WATCHDOG=1")
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    # pinged every 0.2 s while healthy; silent from the stale heartbeat until the stuck child is
    # gone (KILL_TIMEOUT_S = 1 s after its SIGTERM)
    assert min(gaps) < 0.35
    assert max(gaps) >= 1.0, gaps
    assert sorted(gaps)[-2] < 0.5, "a single silence, not a flapping watchdog"
    assert f.proc.poll() is None


def test_crash_looping_child_stops_the_master_with_a_nonzero_exit(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "c=supervisor_roles:crasher,s=supervisor_roles:sleeper", "RESTART_MAX": "3"})
    code = f.wait_exit(20)
    assert code == exitcodes.CRASH_LOOP
    assert len(f.events("child_started", child="c")) == 4  # first start + RESTART_MAX restarts
    assert f.events("crash_loop", child="c")
    sleeper = f.child_pid("s")
    assert sleeper and not alive(sleeper)
    assert os.path.exists(os.path.join(f.markers, "drained-s-1")), "the healthy child was drained, not killed"
    assert "STOPPING=1" in f.notify.lines()
    backoffs = [float(re.search(r"delay_s=([\d.]+)", line).group(1)) for line in f.events("child_backoff", child="c")]
    assert len(backoffs) == 3 and all(0 < d <= 0.2 for d in backoffs)


def test_child_exiting_with_config_error_is_not_restarted_and_master_exits_78(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "bad=supervisor_roles:bad_config,s=supervisor_roles:sleeper"})
    code = f.wait_exit(15)
    assert code == exitcodes.CONFIG
    assert len(f.events("child_started", child="bad")) == 1
    assert f.events("child_config_error", child="bad")
    assert "TEST_VALUE" in f.log()


def test_missing_role_module_exits_78_naming_it(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "ghost=no_such_module_here:run"})
    assert f.wait_exit(15) == exitcodes.CONFIG
    assert "no_such_module_here" in f.log()


def test_sigterm_drains_children_and_master_exits_zero_within_timeout(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "s1=supervisor_roles:sleeper,s2=supervisor_roles:sleeper", "DRAIN_TIMEOUT_S": "5"})
    f.wait_ready()
    kids = f.children()
    assert len(kids) == 2
    t0 = time.monotonic()
    f.proc.send_signal(signal.SIGTERM)
    assert f.wait_exit(5) == 0
    assert time.monotonic() - t0 < 3
    assert all(not alive(k) for k in kids)
    assert sorted(n for n in os.listdir(f.markers) if n.startswith("drained")) == ["drained-s1-1", "drained-s2-1"]
    assert "STOPPING=1" in f.notify.lines()
    assert f.events("master_exit", code="0")


def test_sigint_drains_like_sigterm(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "s1=supervisor_roles:sleeper"})
    f.wait_ready()
    f.proc.send_signal(signal.SIGINT)
    assert f.wait_exit(5) == 0
    assert os.path.exists(os.path.join(f.markers, "drained-s1-1"))


def test_drain_timeout_kills_a_child_that_ignores_sigterm_and_exits_nonzero(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "st=supervisor_roles:stubborn,s=supervisor_roles:sleeper", "DRAIN_TIMEOUT_S": "0.8"})
    f.wait_ready()
    st = f.child_pid("st")
    t0 = time.monotonic()
    f.proc.send_signal(signal.SIGTERM)
    assert f.wait_exit(5) == exitcodes.FAILURE
    assert 0.7 < time.monotonic() - t0 < 3
    assert not alive(st)
    assert f.events("drain_timeout")
    assert os.path.exists(os.path.join(f.markers, "drained-s-1"))


def test_second_sigterm_during_drain_kills_children_at_once(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "st=supervisor_roles:stubborn", "DRAIN_TIMEOUT_S": "30"})
    f.wait_ready()
    st = f.child_pid("st")
    f.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: f.events("drain"), 5, "drain started")
    t0 = time.monotonic()
    f.proc.send_signal(signal.SIGTERM)
    assert f.wait_exit(5) == exitcodes.FAILURE
    assert time.monotonic() - t0 < 3
    assert not alive(st)


def test_process_titles_name_the_master_and_each_indexer_shard(fleet):
    f = fleet({"FLEET_ROLES": "indexer", "SHARD_COUNT": "8", "SHARDS": "2-3",
               "FLEET_EXTRA_ROLES": "indexer=supervisor_roles:sleeper,s=supervisor_roles:sleeper"})
    f.wait_ready()
    assert cmdline(f.pid) == "rsky-fleet: master [2 indexers, 1 s]"
    titles = sorted(cmdline(p) for p in f.children())
    assert titles == ["rsky-fleet: indexer shard 2/8", "rsky-fleet: indexer shard 3/8", "rsky-fleet: s"]
    assert os.path.exists(os.path.join(f.markers, "started-indexer-shard-3"))


def test_children_collect_the_youngest_generation_less_often_than_cpython(fleet):
    from fleet.runtime import GC_GEN0_THRESHOLD

    f = fleet({"FLEET_EXTRA_ROLES": "s=supervisor_roles:sleeper"})
    f.wait_ready()
    with open(os.path.join(f.markers, "gc-s-1")) as m:
        assert m.read().split() == [str(GC_GEN0_THRESHOLD), "10", "10"]  # tune_gc: older generations as CPython


def test_indexer_command_runs_only_the_indexer_shards_of_its_unit(fleet):
    f = fleet({"FLEET_ROLES": "ingester,fetcher,indexer", "SHARD_COUNT": "4", "SHARDS": "0-2",
               "FLEET_EXTRA_ROLES": "indexer=supervisor_roles:sleeper"}, entry="indexer_main")
    f.wait_ready()
    assert cmdline(f.pid) == "rsky-fleet: master [3 indexers]"
    assert sorted(cmdline(p) for p in f.children()) == [f"rsky-fleet: indexer shard {i}/4" for i in range(3)]


def test_ready_and_status_report_children_up_events_per_second_and_lag(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "s1=supervisor_roles:sleeper,s2=supervisor_roles:sleeper"})
    f.wait_ready()
    ready = [m for _, m in f.notify.messages if "READY=1" in m.split("\n")][0]
    assert "STATUS=2/2 children up" in ready
    # each sleeper counts ~2,000 events/s and reports lag 1.5 s through its heartbeat
    line = wait_for(lambda: [s for s in f.notify.lines() if s.startswith("STATUS=2/2") and " 0 events/s" not in s], 5,
                    "a STATUS with events/s")[-1]
    m = re.fullmatch(r"STATUS=2/2 children up, (\d+) events/s, lag 1\.5s", line)
    assert m, line
    assert 1000 <= int(m.group(1)) <= 5000
    f.proc.send_signal(signal.SIGTERM)
    assert f.wait_exit(5) == 0
    lines = f.notify.lines()
    assert lines.index("STOPPING=1") > lines.index("READY=1")


def test_sighup_rereads_config_and_restarts_children_one_at_a_time(fleet, tmp_path):
    env_file = tmp_path / "fleet.env"
    env_file.write_text("FLEET_EXTRA_ROLES=s1=supervisor_roles:sleeper,s2=supervisor_roles:sleeper\n")
    f = fleet({}, args=["--env-file", str(env_file)])
    f.wait_ready()
    old = {n: f.child_pid(n) for n in ("s1", "s2")}
    env_file.write_text("FLEET_EXTRA_ROLES=s1=supervisor_roles:sleeper,s2=supervisor_roles:sleeper,s3=supervisor_roles:sleeper\n")
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: all(f.child_pid(n) != old[n] for n in old) and len(f.events("child_running", child="s2")) == 2
             and f.events("child_running", child="s3"), 15, "both restarted and s3 added")
    assert all(not alive(p) for p in old.values())
    seq = [(m.group(1), m.group(2)) for line in f.log().splitlines()
           if (m := re.search(r"event=(reload_restart|child_running) child=(s1|s2)", line))]
    after = seq[seq.index(("reload_restart", "s1")):]
    assert after == [("reload_restart", "s1"), ("child_running", "s1"), ("reload_restart", "s2"), ("child_running", "s2")]
    assert "RELOADING=1" in f.notify.lines()
    wait_for(lambda: f.notify.lines().count("READY=1") == 2, 5, "READY=1 after the reload")


def test_sighup_with_invalid_config_keeps_running_the_old_one(fleet, tmp_path):
    env_file = tmp_path / "fleet.env"
    env_file.write_text("FLEET_EXTRA_ROLES=s1=supervisor_roles:sleeper\n")
    f = fleet({}, args=["--env-file", str(env_file)])
    f.wait_ready()
    pid = f.child_pid("s1")
    env_file.write_text("FLEET_EXTRA_ROLES=s1=supervisor_roles:sleeper\nSHARD_COUNT=zero\n")
    f.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: f.events("reload_failed"), 5, "reload_failed")
    assert "SHARD_COUNT" in f.events("reload_failed")[0]
    assert f.child_pid("s1") == pid and alive(pid)


def free_port_run(n: int) -> int:
    """A first port of ``n`` consecutive free ones, below the kernel's ephemeral range.

    ``free_port() + 1`` is an ephemeral port: a client connection of this very test run could
    hold it (seen in CI: a child's metrics bind failed and its port refused connections).
    """
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(max(1024, low - 12000), low - n)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {n} consecutive free ports below {low}")


def test_master_and_each_child_serve_metrics_on_their_own_port(fleet):
    base = free_port_run(3)
    f = fleet({"FLEET_EXTRA_ROLES": "s1=supervisor_roles:sleeper,s2=supervisor_roles:sleeper", "METRICS_PORT": str(base)})
    f.wait_ready()
    assert not f.events("metrics_listen_failed"), f.log()
    master = urllib.request.urlopen(f"http://127.0.0.1:{base}/metrics", timeout=5).read().decode()
    assert 'rsky_supervisor_children{state="running"} 2.0' in master
    for port in (base + 1, base + 2):
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "process_cpu_seconds_total" in body
        assert "rsky_supervisor_children" not in body, "a child serves its own registry, not the master's"


def test_children_stop_when_the_master_is_killed(fleet):
    f = fleet({"FLEET_EXTRA_ROLES": "s1=supervisor_roles:sleeper"})
    f.wait_ready()
    kids = f.children()
    f.proc.kill()
    f.proc.wait(5)
    wait_for(lambda: not any(alive(k) for k in kids), 5, "orphaned children exit")
    assert os.path.exists(os.path.join(f.markers, "drained-s1-1"))


def test_notify_is_a_noop_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify("READY=1") is False
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert notify.watchdog_interval_s() is None, "pings from another pid than WATCHDOG_PID are ignored by systemd"
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval_s() == 5.0


def test_notify_reaches_an_abstract_socket(monkeypatch):
    name = f"rsky-test-{os.getpid()}-{random.randrange(1 << 30)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify("READY=1", "STATUS=ok")
        s.settimeout(2)
        assert s.recv(100) == b"READY=1\nSTATUS=ok"


def test_backoff_delay_doubles_up_to_the_cap_with_jitter():
    rng = random.Random(7)
    for failures, upper in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0), (60, 30.0)]:
        for _ in range(50):
            d = backoff_delay(failures, 0.5, 30, rng)
            assert upper / 2 <= d <= upper
    assert backoff_delay(0, 0.5, 30) == 0.0
    assert len({round(backoff_delay(3, 0.5, 30, rng), 6) for _ in range(20)}) > 1, "jittered"


def test_heartbeat_carries_the_roles_own_events_counter_when_it_reports_nothing_itself(monkeypatch):
    from prometheus_client import Counter

    from fleet.supervisor import heartbeat

    c = Counter("rsky_test_progress_events", "test stand-in", ["shard", "type"])
    monkeypatch.setitem(heartbeat.PROGRESS_COUNTERS, "testrole", "rsky_test_progress_events_total")
    try:
        heartbeat.reset_counters()
        heartbeat.use_progress_counter("testrole")
        c.labels("0", "create").inc(5)
        c.labels("0", "delete").inc(2)
        heartbeat.record_events(1)
        heartbeat.record_lag(0.25)
        (beat,) = heartbeat.decode_all(heartbeat.encode(9))
        assert (beat.number, beat.events, beat.lag) == (9, 8, 0.25)
        heartbeat.reset_counters()
        (beat,) = heartbeat.decode_all(heartbeat.encode(10))
        assert beat.events == 0 and beat.lag is None
    finally:
        from prometheus_client import REGISTRY

        REGISTRY.unregister(c)
