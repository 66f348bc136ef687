"""``rsky-lag`` / ``python tools/lag.py``: where every stream, shard, relay and backfill stands.

    rsky-lag                      # two samples 2 s apart, table, exit 0/1/2/3
    rsky-lag --json --window 5    # one JSON document judged over 5 s
    rsky-lag --watch              # refresh every 2 s until Ctrl-C
    rsky-lag --watch --until-drained --timeout 300   # the demo: stop once everything is indexed
    rsky-lag --repair-trimmed-cursor 3          # explain what would be done to shard 3's cursors
    rsky-lag --repair-trimmed-cursor 3 --yes    # ... and do it

Exit codes: 0 OK, 1 WARN, 2 critical (STALL, STOP, REWIND), 3 UNKNOWN (Redis unreachable).
It reads Redis only; the repair flag is the one exception and needs ``--yes``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from typing import Any, Callable, TextIO

import redis

from ..config import SETTINGS
from . import judge, render, repair
from .sample import discover_shard_count, take_sample

DEFAULT_REDIS_URL = next(s.default for s in SETTINGS if s.env == "REDIS_URL")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rsky-lag", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Statuses: OK, WARN (lag growing, poison message, DLQ growing), STALL (waiting "
                                       "but no progress), STOP (no consumer), REWIND (cursor moved back, trimmed or "
                                       "past the end). Exit 0 ok, 1 warning, 2 critical, 3 unknown.")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
                   help="Redis to read (default: $REDIS_URL or %(default)s)")
    p.add_argument("--shards", type=int, default=int(os.environ["SHARD_COUNT"]) if os.environ.get("SHARD_COUNT", "").isdigit() else None,
                   help="SHARD_COUNT of the fleet (default: $SHARD_COUNT, else discovered from the shard streams)")
    p.add_argument("--window", type=float, default=2.0,
                   help="seconds between the two samples a status is judged on (0: one sample; default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON document (JSON lines with --watch)")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=float, default=2.0, help="--watch refresh period (default %(default)s s)")
    p.add_argument("--until-drained", action="store_true",
                   help="with --watch: stop once every stream is read and acknowledged and listRepos has finished")
    p.add_argument("--timeout", type=float, default=None,
                   help="with --watch: stop after this many seconds (exit 2 if --until-drained was not reached)")
    p.add_argument("--stop-idle", type=float, default=judge.Thresholds.stop_idle_s,
                   help="STOP when every consumer of a group has been silent this long (default %(default)s s)")
    p.add_argument("--stall-idle", type=float, default=judge.Thresholds.stall_idle_s,
                   help="with one sample: STALL when the oldest pending entry is unacknowledged this long")
    p.add_argument("--poison", type=int, default=judge.Thresholds.poison_deliveries,
                   help="WARN when a pending entry was delivered this many times (default %(default)s)")
    p.add_argument("--repair-trimmed-cursor", metavar="SHARD|STREAM",
                   help="explain (and with --yes do) XGROUP SETID to just before the first entry for a cursor in a "
                        "trimmed region or past the end; SHARD is a shard number, or give a stream name")
    p.add_argument("--yes", action="store_true", help="really apply the repair")
    return p


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=3, socket_timeout=10)


def window_report(r: redis.Redis, shards: int | None, window: float, th: judge.Thresholds,
                  pause: Callable[[float], None], clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Sample, wait ``window`` seconds (``pause``), sample again, judge."""
    first = take_sample(r, shards, clock())
    if window <= 0:
        return judge.judge([first], th)
    pause(window)
    return judge.judge([first, take_sample(r, shards if shards is not None else first["shard_count"], clock())], th)


def main(argv: list[str] | None = None, *, pause: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.time, out: TextIO | None = None) -> int:
    """Run the command; returns the exit code. ``pause`` is how the window is waited and
    ``clock`` stamps the samples: tests pass a pause that changes the state between the two
    samples and advances a fake clock, instead of sleeping."""
    out = out or sys.stdout
    args = parser().parse_args(argv)
    th = judge.Thresholds(stop_idle_s=args.stop_idle, stall_idle_s=args.stall_idle, poison_deliveries=args.poison)
    r = connect(args.redis_url)
    try:
        if args.repair_trimmed_cursor is not None:
            return _repair(r, args, out)
        if args.watch:
            return _watch(r, args, th, pause, clock, out)
        report = window_report(r, args.shards, args.window, th, pause, clock)
        _print(report, args, out)
        return report["exit_code"]
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError) as e:
        report = render.unknown(args.redis_url, f"{type(e).__name__}: {e}")
        out.write((render.as_json(report) if args.json else render.unknown_text(report)) + "\n")
        out.flush()
        return 3
    finally:
        r.close()


def _print(report: dict[str, Any], args: argparse.Namespace, out: TextIO, compact: bool = False) -> None:
    if args.json:
        out.write(render.as_json(report, indent=0 if compact else 2) + "\n")
    else:
        out.write(render.text(report, args.redis_url) + "\n")
    out.flush()


def _watch(r: redis.Redis, args: argparse.Namespace, th: judge.Thresholds,
           pause: Callable[[float], None], clock: Callable[[], float], out: TextIO) -> int:
    samples: collections.deque[dict[str, Any]] = collections.deque()
    start = time.monotonic()
    clear = not args.json and hasattr(out, "isatty") and out.isatty()
    code = 3
    try:
        while True:
            s = take_sample(r, args.shards, clock())
            samples.append(s)
            # keep the newest sample at least `window` older than the latest (or the oldest we have)
            while len(samples) > 2 and s["time"] - samples[1]["time"] >= max(args.window, args.interval):
                samples.popleft()
            report = judge.judge(list(samples) if len(samples) > 1 else [s], th)
            if clear:
                out.write("\x1b[H\x1b[2J")
            elif not args.json:
                out.write("\n")
            _print(report, args, out, compact=True)
            code = report["exit_code"]
            if args.until_drained and len(samples) > 1 and judge.drained(report):
                if not args.json:
                    out.write("drained: every stream read and acknowledged\n")
                    out.flush()
                return code
            if args.timeout is not None and time.monotonic() - start >= args.timeout:
                if args.until_drained:
                    if not args.json:
                        out.write(f"not drained after {args.timeout:g}s\n")
                        out.flush()
                    return max(code, 2)
                return code
            pause(args.interval)
    except KeyboardInterrupt:
        return code


def _repair(r: redis.Redis, args: argparse.Namespace, out: TextIO) -> int:
    shards = args.shards or discover_shard_count(r) or 1
    try:
        actions = repair.plan(r, args.repair_trimmed_cursor, shards)
    except ValueError as e:
        out.write(f"rsky-lag: {e}\n")
        return 2
    if not actions:
        out.write(f"nothing to repair: no cursor of {args.repair_trimmed_cursor} is in a trimmed region or past the end\n")
        return 0
    for a in actions:
        out.write(a["explain"] + "\n")
    if not args.yes:
        out.write("nothing changed: add --yes to apply\n")
        return 1
    repair.apply(r, actions)
    out.write(f"applied {len(actions)} change(s)\n")
    return 0
