"""The master: forks the role processes, watches them, and is the one voice to systemd.

Signal map (handlers only enqueue; the loop below dispatches):

| signal | master does |
|---|---|
| SIGTERM, SIGINT | drain: ``STOPPING=1``, SIGTERM to every child, SIGKILL what is left after ``DRAIN_TIMEOUT_S``; exit 0 when every child exited cleanly |
| second SIGTERM/SIGINT | SIGKILL every child now, exit 1 |
| SIGHUP | re-read the configuration, then restart children one at a time (each must be RUNNING before the next stops) |
| SIGCHLD | wake up and reap |

Exit codes: 0 clean drain; 1 children had to be killed; 3 (CRASH_LOOP) a child exited
``RESTART_MAX`` times within ``RESTART_WINDOW_S`` and was about to be restarted again; 78
(CONFIG) a child exited with 78 (never restarted). Everything else is restarted with capped
exponential backoff plus jitter.

Nothing holding a socket, pool or thread exists in the master when it forks: systemd
notifications open a socket per message, metrics are answered from this loop, and children
close the master's few descriptors (wakeup pipe, heartbeat pipes, metrics listener) first.
"""

from __future__ import annotations

import os
import selectors
import signal
import sys
import time
import traceback
from collections import deque
from typing import Any, Callable

from prometheus_client import REGISTRY, Counter, Gauge

from .. import exitcodes
from ..config import ConfigError, Config
from ..log import get_logger
from ..metrics import MasterMetricsServer
from . import heartbeat, notify, proc
from .child import BACKOFF, FATAL, RUNNING, STARTING, STATES, STOPPED, STOPPING, Child, backoff_delay
from .roles import child_specs, master_title

HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
STATUS_INTERVAL_S = 1.0

_metrics: dict[str, Any] = {}


def _master_metrics() -> dict[str, Any]:
    """Supervisor metrics, created once in the master; children unregister them after fork."""
    if not _metrics:
        _metrics["children"] = Gauge("rsky_supervisor_children", "children per state", ["state"])
        _metrics["restarts"] = Counter("rsky_supervisor_child_restarts", "restarts after an unexpected exit or a kill", ["child"])
        _metrics["unresponsive"] = Counter("rsky_supervisor_child_unresponsive", "children killed for a stale heartbeat", ["child"])
        _metrics["hb_age"] = Gauge("rsky_supervisor_heartbeat_age_seconds", "time since the child's last heartbeat", ["child"])
        _metrics["eps"] = Gauge("rsky_supervisor_events_per_second", "events/s summed over children")
    return _metrics


def describe_status(status: int) -> tuple[int, str]:
    """``(exit code, text)`` for a waitpid status; a signal death maps to 128+signum."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return 128 + sig, f"signal={name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else exitcodes.FAILURE
    return code, f"code={code}"


class Master:
    """Supervise the children ``cfg`` asks for until drained; ``run()`` returns the exit code."""

    def __init__(self, cfg: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.cfg = cfg
        self.reload_config = reload_config
        self.log = get_logger("supervisor")
        self.children: dict[str, Child] = {}
        self.pending_signals: deque[int] = deque()
        self.draining = False
        self.drain_deadline = 0.0
        self.drain_killed = False
        self.give_up_at = 0.0
        self.exit_code = exitcodes.OK
        self.unclean = False
        self.ready_sent = False
        self.rolling: deque[str] = deque()
        self.rolling_current: str | None = None
        self.retiring: set[str] = set()
        self.events_total = 0
        self.status_at = 0.0
        self.status_events = 0
        self.last_status = ""
        self.summary_at = 0.0
        self.wd_interval = notify.watchdog_interval_s()
        self.wd_next = 0.0
        self.sel: selectors.BaseSelector | None = None
        self.wake_r = self.wake_w = -1
        self.metrics_server: MasterMetricsServer | None = None
        self.m = _master_metrics()

    # ---- set-up -------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.pending_signals.append(signum)  # nothing else: the loop dispatches

    def _setup(self) -> None:
        from setproctitle import setproctitle

        specs = child_specs(self.cfg)
        setproctitle(master_title(specs))
        self.sel = selectors.PollSelector()  # no kernel object that a fork would share
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.old_handlers = {s: signal.signal(s, self._on_signal) for s in HANDLED}
        if self.cfg.METRICS_PORT:
            try:
                self.metrics_server = MasterMetricsServer(self.cfg.METRICS_HOST, self.cfg.METRICS_PORT)
                self.sel.register(self.metrics_server.fileno(), selectors.EVENT_READ, ("metrics", None))
            except OSError as e:
                self.log.error("metrics_listen_failed", host=self.cfg.METRICS_HOST, port=self.cfg.METRICS_PORT, error=str(e))
        for spec in specs:
            self.children[spec.name] = Child(spec)
        self.log.info("master_started", pid=os.getpid(), children=len(specs), title=master_title(specs),
                      watchdog_s=self.wd_interval)
        now = time.monotonic()
        for c in self.children.values():
            self._spawn(c, now)

    def _teardown(self) -> None:
        signal.set_wakeup_fd(-1)
        for s, h in getattr(self, "old_handlers", {}).items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        for c in self.children.values():
            self._close_hb(c)
        if self.metrics_server:
            self.metrics_server.close()
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)
        if self.sel:
            self.sel.close()

    # ---- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        """Start the children and supervise them; returns the process exit code."""
        try:
            self._setup()
            while True:
                self._wait(self._tick_s())
                now = time.monotonic()
                while self.pending_signals:
                    self._dispatch(self.pending_signals.popleft(), now)
                self._reap(now)
                if self.draining and not any(c.alive for c in self.children.values()):
                    break
                if self.drain_killed and now >= self.give_up_at:
                    left = [c.pid for c in self.children.values() if c.alive]
                    self.log.error("children_unkillable", pids=left, action="exiting without them")
                    self.unclean = True
                    break
                self._tick(now)
        finally:
            self._teardown()
        code = self.exit_code
        if code == exitcodes.OK and self.unclean:
            code = exitcodes.FAILURE
        self.log.info("master_exit", code=code, reason=exitcodes.NAMES.get(code, str(code)))
        return code

    def _tick_s(self) -> float:
        t = min(0.25, self.cfg.HEARTBEAT_INTERVAL_S / 2)
        if self.wd_interval:
            t = min(t, self.wd_interval / 2)
        return max(t, 0.01)

    def _wait(self, timeout: float) -> None:
        assert self.sel is not None
        for key, _ in self.sel.select(timeout):
            kind, name = key.data
            if kind == "wake":
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif kind == "hb":
                c = self.children.get(name)
                if c is not None and c.hb_fd == key.fd:
                    self._read_beats(c)
                else:
                    self.sel.unregister(key.fd)
            elif kind == "metrics" and self.metrics_server:
                self.metrics_server.handle_ready()

    def _read_beats(self, c: Child) -> None:
        assert c.hb_fd is not None
        beats, eof = heartbeat.read_available(c.hb_fd)
        if beats:
            c.last_beat = time.monotonic()
            c.beats += len(beats)
            last = beats[-1]
            self.events_total += max(0, last.events - c.events)
            c.events, c.lag = last.events, last.lag
        if eof:
            self._close_hb(c)

    def _close_hb(self, c: Child) -> None:
        if c.hb_fd is not None:
            if self.sel is not None:
                try:
                    self.sel.unregister(c.hb_fd)
                except (KeyError, ValueError):
                    pass
            os.close(c.hb_fd)
            c.hb_fd = None

    def _dispatch(self, signum: int, now: float) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            name = signal.Signals(signum).name
            if not self.draining:
                self.log.info("drain", signal=name, timeout_s=self.cfg.DRAIN_TIMEOUT_S)
                self._begin_drain(now, exitcodes.OK)
            else:
                self.log.warning("drain_abort", signal=name)
                self._kill_all()
        elif signum == signal.SIGHUP:
            self._reload(now)

    # ---- children -----------------------------------------------------------------------

    def _spawn(self, c: Child, now: float) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        sys.stdout.flush()
        sys.stderr.flush()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            os.close(r)
            os.close(w)
            self.log.error("fork_failed", child=c.spec.name, error=str(e))
            c.state = STARTING
            self._on_exit(c, exitcodes.FAILURE, "fork failed", now)
            return
        if pid == 0:  # the child: never returns into the master's loop
            code = exitcodes.FAILURE
            try:
                os.close(r)
                self._forget_in_child()
                code = proc.run_child(c.spec, self.cfg, w, old_mask)
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(w)
        c.started(pid, r, now)
        assert self.sel is not None
        self.sel.register(r, selectors.EVENT_READ, ("hb", c.spec.name))
        self.log.info("child_started", child=c.spec.name, pid=pid)

    def _forget_in_child(self) -> None:
        """In a fresh child: drop the master's descriptors and metrics."""
        signal.set_wakeup_fd(-1)
        for c in self.children.values():
            if c.hb_fd is not None:
                os.close(c.hb_fd)
        if self.metrics_server:
            self.metrics_server.close()
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)
        for m in _metrics.values():
            try:
                REGISTRY.unregister(m)
            except KeyError:
                pass
        _metrics.clear()

    def _signal(self, c: Child, sig: int) -> None:
        if c.pid is None:
            return
        try:
            os.kill(c.pid, sig)
        except ProcessLookupError:
            pass

    def _terminate(self, c: Child, now: float, grace_s: float) -> None:
        """SIGTERM now, SIGKILL after ``grace_s`` if still alive."""
        if c.pid is None:
            return
        self._signal(c, signal.SIGTERM)
        c.term_sent_at = now
        c.kill_at = now + grace_s

    def _reap(self, now: float) -> None:
        for c in list(self.children.values()):
            if c.pid is None:
                continue
            try:
                pid, status = os.waitpid(c.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = c.pid, 0
            if pid == 0:
                continue
            code, text = describe_status(status)
            if c.hb_fd is not None:
                self._read_beats(c)
            self._close_hb(c)
            self._on_exit(c, code, text, now)

    def _on_exit(self, c: Child, code: int, text: str, now: float) -> None:
        pid, c.pid = c.pid, None
        c.last_exit = text
        prev = c.state
        expected = self.draining or c.planned_restart or c.spec.name in self.retiring
        level = "info" if expected and code == 0 else "warning"
        extra = {"unresponsive": True} if c.unresponsive else {}
        self.log.log(level, "child_exited", child=c.spec.name, pid=pid, status=text, state=prev, **extra)
        if self.draining:
            c.state = STOPPED
            # killed by our own SIGTERM = it had not installed its handler yet: nothing in hand
            if code not in (0, 128 + signal.SIGTERM):
                self.unclean = True
            return
        if code == exitcodes.CONFIG:
            c.state = FATAL
            self.log.error("child_config_error", child=c.spec.name,
                           action="not restarted; stopping the fleet (fix the configuration)")
            self._begin_drain(now, exitcodes.CONFIG)
            return
        if c.spec.name in self.retiring:
            self.retiring.discard(c.spec.name)
            del self.children[c.spec.name]
            return
        if c.planned_restart:
            self._spawn(c, now)
            return
        n = c.record_exit(now, self.cfg.RESTART_WINDOW_S)
        self.m["restarts"].labels(c.spec.name).inc()
        if n > self.cfg.RESTART_MAX:
            c.state = FATAL
            self.log.error("crash_loop", child=c.spec.name, exits=n, window_s=self.cfg.RESTART_WINDOW_S,
                           action="stopping the fleet")
            self._begin_drain(now, exitcodes.CRASH_LOOP)
            return
        c.state = BACKOFF
        delay = backoff_delay(c.failures, self.cfg.RESTART_BACKOFF_S, self.cfg.RESTART_BACKOFF_MAX_S)
        c.restart_at = now + delay
        self.log.info("child_backoff", child=c.spec.name, delay_s=round(delay, 3), exits_in_window=n)

    def _tick(self, now: float) -> None:
        cfg = self.cfg
        for c in list(self.children.values()):
            if c.alive:
                age = c.heartbeat_age(now)
                self.m["hb_age"].labels(c.spec.name).set(round(age, 3))
                if c.state == STARTING and c.beats > 0 and now - c.started_at >= cfg.STARTUP_SETTLE_S:
                    c.state = RUNNING
                    self.log.info("child_running", child=c.spec.name, pid=c.pid)
                if c.term_sent_at is None and age > cfg.HEARTBEAT_TIMEOUT_S:
                    c.unresponsive = True
                    self.m["unresponsive"].labels(c.spec.name).inc()
                    self.log.warning("child_unresponsive", child=c.spec.name, pid=c.pid,
                                     heartbeat_age_s=round(age, 3), action="SIGTERM")
                    self._terminate(c, now, cfg.KILL_TIMEOUT_S)
                if c.kill_at is not None and now >= c.kill_at:
                    self.log.warning("child_kill", child=c.spec.name, pid=c.pid, action="SIGKILL")
                    self._signal(c, signal.SIGKILL)
                    c.kill_at = None
            elif c.state == BACKOFF and not self.draining and now >= c.restart_at:
                self._spawn(c, now)
        if self.draining:
            if not self.drain_killed and now >= self.drain_deadline:
                self.log.warning("drain_timeout", left=[c.spec.name for c in self.children.values() if c.alive])
                self._kill_all()
            if self.wd_interval and now >= self.wd_next:  # the drain is bounded by its own deadline
                notify.notify("WATCHDOG=1")
                self.wd_next = now + self.wd_interval
            return
        self._roll(now)
        self._notify(now)

    def _begin_drain(self, now: float, code: int) -> None:
        if self.draining:
            return
        self.draining = True
        self.exit_code = code
        self.drain_deadline = now + self.cfg.DRAIN_TIMEOUT_S
        notify.notify("STOPPING=1", "STATUS=draining")
        for c in self.children.values():
            if c.alive:
                self._signal(c, signal.SIGTERM)
                c.term_sent_at, c.kill_at = now, None
                c.state = STOPPING
            elif c.state == BACKOFF:
                c.state = STOPPED

    def _kill_all(self) -> None:
        self.drain_killed = True
        self.give_up_at = time.monotonic() + self.cfg.KILL_TIMEOUT_S + 5
        for c in self.children.values():
            if c.alive:
                self._signal(c, signal.SIGKILL)
                self.unclean = True
        if self.exit_code == exitcodes.OK:
            self.exit_code = exitcodes.FAILURE

    # ---- reload -------------------------------------------------------------------------

    def _reload(self, now: float) -> None:
        if self.reload_config is None:
            self.log.warning("reload_ignored", reason="no configuration source")
            return
        try:
            cfg = self.reload_config()
            specs = child_specs(cfg)
        except (ConfigError, ValueError) as e:
            self.log.error("reload_failed", error=str(e), action="keeping the running configuration")
            return
        from setproctitle import setproctitle

        self.cfg = cfg
        notify.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        self.ready_sent = False
        setproctitle(master_title(specs))
        wanted = {s.name: s for s in specs}
        for name, c in self.children.items():
            if name not in wanted and name not in self.retiring:
                self.retiring.add(name)
                if c.alive:
                    self._terminate(c, now, cfg.DRAIN_TIMEOUT_S)
        for name in list(self.retiring):
            c = self.children[name]
            if not c.alive:
                self.retiring.discard(name)
                del self.children[name]
        kept = []
        for spec in specs:
            c = self.children.get(spec.name)
            if c is None:
                self.children[spec.name] = c = Child(spec)
                self._spawn(c, now)
            else:
                c.spec = spec
                kept.append(spec.name)
        self.rolling = deque(n for n in kept if n not in self.rolling)
        self.rolling_current = None
        self.log.info("reload", children=len(specs), rolling=len(self.rolling))

    def _roll(self, now: float) -> None:
        cur = self.children.get(self.rolling_current) if self.rolling_current else None
        if cur is not None and cur.state == STARTING:
            return  # the restarted child must be RUNNING before the next one stops
        if cur is not None and cur.alive and cur.planned_restart:
            return  # still stopping
        self.rolling_current = None
        while self.rolling:
            c = self.children.get(self.rolling.popleft())
            if c is None or not c.alive:
                continue  # in backoff: it starts with the new configuration anyway
            c.planned_restart = True
            self._terminate(c, now, self.cfg.DRAIN_TIMEOUT_S)
            self.rolling_current = c.spec.name
            self.log.info("reload_restart", child=c.spec.name, pid=c.pid)
            return

    # ---- systemd ------------------------------------------------------------------------

    def all_fresh(self, now: float) -> bool:
        """True when no live child has a stale heartbeat or is being killed for one."""
        timeout = self.cfg.HEARTBEAT_TIMEOUT_S
        return not any(c.alive and (c.unresponsive or c.heartbeat_age(now) > timeout) for c in self.children.values())

    def status_line(self, now: float) -> str:
        total = len(self.children)
        up = sum(1 for c in self.children.values() if c.state == RUNNING)
        dt = now - self.status_at if self.status_at else 0.0
        eps = (self.events_total - self.status_events) / dt if dt > 0 else 0.0
        self.m["eps"].set(round(eps, 1))
        lags = [c.lag for c in self.children.values() if c.alive and c.lag is not None]
        lag = f"{max(lags):.1f}s" if lags else "unknown"
        return f"{up}/{total} children up, {eps:.0f} events/s, lag {lag}"

    def _notify(self, now: float) -> None:
        counts = dict.fromkeys(STATES, 0)
        for c in self.children.values():
            counts[c.state] += 1
        for state, n in counts.items():
            self.m["children"].labels(state).set(n)
        if not self.ready_sent and all(c.state == RUNNING for c in self.children.values()) and not self.rolling_current and not self.rolling:
            self.ready_sent = True
            self.status_at, self.status_events = now, self.events_total
            notify.notify("READY=1", f"STATUS={self.status_line(now)}")
            self.log.info("ready", children=len(self.children))
        if now - self.status_at >= STATUS_INTERVAL_S:
            line = self.status_line(now)
            self.status_at, self.status_events = now, self.events_total
            if line != self.last_status:
                notify.notify(f"STATUS={line}")
                self.last_status = line
            if now - self.summary_at >= self.cfg.SUMMARY_INTERVAL_S:
                # the master's periodic one-liner, as every role logs one
                self.summary_at = now
                self.log.info("summary", status=line, recent_exits=sum(len(c.exits) for c in self.children.values()))
        if self.wd_interval and now >= self.wd_next:
            if self.all_fresh(now):
                notify.notify("WATCHDOG=1")
                self.wd_next = now + self.wd_interval
            # else: no ping; systemd kills and restarts the unit if this lasts WATCHDOG_USEC


