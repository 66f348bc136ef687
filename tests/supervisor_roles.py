"""Roles for the supervisor tests, run through the FLEET_EXTRA_ROLES hook.

Each behaves like one way a real role can behave: idle and drain, crash, exit with the
configuration-error code, block its event loop, ignore a stop request. Markers go to the
directory named by ``TEST_MARKER_DIR`` so a test can see what happened in the child.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time

from fleet.config import ConfigError
from fleet.supervisor import heartbeat


def _marker(name: str, text: str = "") -> None:
    d = os.environ.get("TEST_MARKER_DIR")
    if d:
        with open(os.path.join(d, name), "a") as f:
            f.write(text + "\n")


async def sleeper(cfg, ctx) -> None:
    """Idle until asked to stop, counting fake events; on stop, 'acknowledge' briefly."""
    _marker(f"started-{ctx.role}-{ctx.instance}", str(os.getpid()))
    _marker(f"gc-{ctx.role}-{ctx.instance}", " ".join(map(str, gc.get_threshold())))
    while not ctx.stopping.is_set():
        heartbeat.record_events(100)
        heartbeat.record_lag(1.5)
        try:
            await asyncio.wait_for(ctx.stopping.wait(), 0.05)
        except asyncio.TimeoutError:
            pass
    await asyncio.sleep(0.1)  # the batch in hand
    _marker(f"drained-{ctx.role}-{ctx.instance}", str(os.getpid()))


async def crasher(cfg, ctx) -> None:
    await asyncio.sleep(0.05)
    raise RuntimeError("boom")


async def bad_config(cfg, ctx) -> None:
    _marker("bad_config_started", str(os.getpid()))
    raise ConfigError("TEST_VALUE='x' is invalid: expected a number")


async def blocker(cfg, ctx) -> None:
    """The first incarnation blocks its loop after a moment; later ones idle."""
    d = os.environ["TEST_MARKER_DIR"]
    first = not os.path.exists(os.path.join(d, "blocked"))
    await asyncio.sleep(0.5)
    if first:
        _marker("blocked", str(os.getpid()))
        time.sleep(600)  # a blocking call on the loop: the heartbeat stops
    await sleeper(cfg, ctx)


async def stubborn(cfg, ctx) -> None:
    """Ignores the stop request (a drain that never finishes)."""
    _marker("stubborn_started", str(os.getpid()))
    while True:
        await asyncio.sleep(0.05)
