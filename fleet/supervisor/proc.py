"""What runs in a child after ``fork``: set the process up, then run one role until stopped.

Order matters: signal dispositions first (the master blocked signals around ``fork``, so
none is lost or handled by the master's handlers here), then title, logs, uvloop, the
heartbeat task and the metrics server on the child's own loop, then the role.

Signals in a child: the first SIGTERM sets ``ctx.stopping`` (the role finishes and
acknowledges its batch, closes its pools and returns); a second SIGTERM exits at once.
SIGINT and SIGHUP are ignored: on a terminal Ctrl-C reaches the whole process group, and the
master alone decides (it forwards a drain as SIGTERM; SIGHUP is its reload).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback
from typing import Any

from .. import exitcodes, log
from ..config import ConfigError
from ..metrics import child_port, serve_async
from ..runtime import RoleContext, tune_gc
from . import heartbeat
from .roles import ChildSpec, RoleMissing, load_target

SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def run_child(spec: ChildSpec, cfg: Any, hb_fd: int, sigmask: set) -> int:
    """Set the process up and run ``spec``'s role; returns the exit code for ``os._exit``."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, sigmask)
    for var in SYSTEMD_VARS:  # the master is the only process that talks to systemd
        os.environ.pop(var, None)

    from setproctitle import setproctitle

    setproctitle(spec.title)
    shard = spec.shards[0] if len(spec.shards) == 1 else None
    log.configure(cfg.LOG_LEVEL, cfg.LOG_FORMAT, role=spec.role, shard=shard,
                  **({"instance": spec.instance} if shard is None else {}))
    lg = log.get_logger("runner")
    heartbeat.reset_counters()
    heartbeat.use_progress_counter(spec.role)
    try:
        fn = load_target(spec.target)
    except RoleMissing as e:
        lg.error("role_missing", target=spec.target, error=str(e))
        return exitcodes.CONFIG
    except ConfigError as e:
        lg.error("config_error", error=str(e))
        return exitcodes.CONFIG
    except Exception as e:  # an import that fails is a bug in that module: restart may not help, but say so
        lg.error("role_import_failed", target=spec.target, error=repr(e), trace=traceback.format_exc(limit=5))
        return exitcodes.SOFTWARE

    import uvloop

    tune_gc()
    try:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(_serve(fn, spec, cfg, hb_fd, lg))
        return exitcodes.OK
    except ConfigError as e:
        lg.error("config_error", error=str(e))
        return exitcodes.CONFIG
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else exitcodes.FAILURE
    except BaseException as e:
        lg.error("role_crashed", error=repr(e), trace=traceback.format_exc(limit=8))
        return exitcodes.FAILURE


async def _serve(fn: Any, spec: ChildSpec, cfg: Any, hb_fd: int, lg: log.Logger) -> None:
    loop = asyncio.get_running_loop()
    ctx = RoleContext(role=spec.role, instance=spec.instance, shards=list(spec.shards),
                      shard_count=spec.shard_count, log=log.get_logger(spec.role))
    terms = 0

    def on_sigterm() -> None:
        nonlocal terms
        terms += 1
        if terms == 1:
            lg.info("stopping", reason="SIGTERM")
            ctx.stopping.set()
        else:
            lg.warning("exit_now", reason="second SIGTERM")
            sys.stdout.flush()
            os._exit(exitcodes.FAILURE)

    def on_master_gone() -> None:
        lg.warning("stopping", reason="master gone")
        ctx.stopping.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    runner = None
    port = child_port(cfg.METRICS_PORT, spec.ordinal)
    if port:
        try:
            runner = await serve_async(cfg.METRICS_HOST, port)
        except OSError as e:  # a busy port must not crash-loop the fleet: log it, run without
            lg.error("metrics_listen_failed", host=cfg.METRICS_HOST, port=port, error=str(e))
    # the first heartbeat makes the child RUNNING (and the fleet READY=1): only once its metrics
    # are served (a beat sent while the server was binding let READY=1 precede them)
    beat = asyncio.create_task(heartbeat.produce(hb_fd, cfg.HEARTBEAT_INTERVAL_S, on_master_gone), name="heartbeat")
    lg.info("started", pid=os.getpid(), metrics_port=port if runner else None)
    try:
        await fn(cfg, ctx)
        lg.info("stopped", requested=ctx.stopping.is_set())
    finally:
        beat.cancel()
        if runner is not None:
            await runner.cleanup()
