"""The heartbeat channel between a child and the master: one pipe per child.

The child's *own event loop* writes a beat every ``HEARTBEAT_INTERVAL_S`` (a task, not a side
thread), so a blocked or deadlocked loop stops beating and the master sees it. Each beat also
carries the child's progress counters, which the master turns into ``STATUS=`` (events/s, lag).

Role code reports progress with two calls (cheap, no I/O)::

    from fleet.supervisor import heartbeat
    heartbeat.record_events(len(batch))   # events applied / written / fetched
    heartbeat.record_lag(seconds)         # how far behind the source this process is

Without such calls, a role's events are read from its own Prometheus counter
(``PROGRESS_COUNTERS``: ``rsky_indexer_events_total``, ``rsky_ingester_events_total``,
``rsky_fetcher_records_total``), summed over labels at each beat.

A beat is a fixed 24-byte record (< PIPE_BUF, so writes are atomic); the write end is
non-blocking and a full pipe drops the beat rather than stall the loop.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import struct
from dataclasses import dataclass
from typing import Callable

_BEAT = struct.Struct("<QdQ")  # beat number, lag seconds (NaN = unknown), events total
BEAT_SIZE = _BEAT.size

_counters = {"events": 0, "lag": math.nan}
PROGRESS_COUNTERS = {
    "indexer": "rsky_indexer_events_total",
    "ingester": "rsky_ingester_events_total",
    "fetcher": "rsky_fetcher_records_total",
}
_progress: dict[str, str | None] = {"metric": None}


def use_progress_counter(role: str) -> None:
    """Report the role's own events counter (if it has one in ``PROGRESS_COUNTERS``)."""
    _progress["metric"] = PROGRESS_COUNTERS.get(role)


def _counter_total(sample_name: str) -> int:
    from prometheus_client import REGISTRY

    collector = getattr(REGISTRY, "_names_to_collectors", {}).get(sample_name)
    if collector is None:
        return 0
    total = 0.0
    for family in collector.collect():
        for sample in family.samples:
            if sample.name == sample_name:
                total += sample.value
    return int(total)


def record_events(n: int = 1) -> None:
    """Add ``n`` to this process's events counter (reported to the master with each beat)."""
    _counters["events"] += n


def record_lag(seconds: float | None) -> None:
    """Set this process's current lag in seconds (None = unknown)."""
    _counters["lag"] = math.nan if seconds is None else float(seconds)


def reset_counters() -> None:
    _counters["events"] = 0
    _counters["lag"] = math.nan
    _progress["metric"] = None


@dataclass
class Beat:
    number: int
    lag: float | None
    events: int


def encode(number: int) -> bytes:
    events = _counters["events"]
    if _progress["metric"]:
        events += _counter_total(_progress["metric"])
    return _BEAT.pack(number, _counters["lag"], events)


def decode_all(data: bytes) -> list[Beat]:
    """Beats in ``data`` (a whole number of records; a trailing partial one is ignored)."""
    out = []
    for off in range(0, len(data) - BEAT_SIZE + 1, BEAT_SIZE):
        n, lag, ev = _BEAT.unpack_from(data, off)
        out.append(Beat(n, None if math.isnan(lag) else lag, ev))
    return out


async def produce(fd: int, interval_s: float, on_master_gone: Callable[[], None]) -> None:
    """Write a beat to ``fd`` every ``interval_s`` until cancelled.

    When the master is gone (EPIPE) ``on_master_gone`` is called once, so an orphaned child
    drains and exits instead of running unsupervised.
    """
    os.set_blocking(fd, False)
    number = 0
    while True:
        number += 1
        try:
            os.write(fd, encode(number))
        except BlockingIOError:
            pass  # master busy: this beat is dropped, the next one carries the same counters
        except OSError as e:
            if e.errno == errno.EPIPE:
                on_master_gone()
                return
            raise
        await asyncio.sleep(interval_s)


def read_available(fd: int) -> tuple[list[Beat], bool]:
    """Read every beat waiting on the master's end; ``(beats, eof)``."""
    chunks = []
    eof = False
    while True:
        try:
            b = os.read(fd, 64 * BEAT_SIZE)
        except BlockingIOError:
            break
        except OSError:
            eof = True
            break
        if not b:
            eof = True
            break
        chunks.append(b)
        if len(b) < 64 * BEAT_SIZE:
            break
    return decode_all(b"".join(chunks)), eof
