"""One log line per event, with role and shard, for journald.

    log = get_logger("indexer", shard=3)
    log.warning("dead_lettered", stream="firehose_live:3", id="123-0", error="...")

prints ``<4>level=warning role=indexer shard=3 event=dead_lettered stream=... id=... error="..."``
(or one JSON object with ``LOG_FORMAT=json``). The ``<N>`` prefix is the syslog priority that
journald reads from stdout, so ``journalctl -p warning -u rsky-indexer@1`` filters; it is left
out on a terminal. Values that look like URLs with credentials are redacted.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

import ujson

LEVELS = {"debug": (10, 7), "info": (20, 6), "warning": (30, 4), "error": (40, 3), "critical": (50, 2)}

_state: dict[str, Any] = {"level": 20, "format": "kv", "prefix": None, "stream": None, "base": {}}


def configure(level: str = "info", fmt: str = "kv", stream: TextIO | None = None, **base: Any) -> None:
    """Set process-wide log level, format and base fields (role, shard...)."""
    _state["level"] = LEVELS.get(level.lower(), LEVELS["info"])[0]
    _state["format"] = fmt
    _state["stream"] = stream
    _state["base"] = {k: v for k, v in base.items() if v is not None}
    out = stream or sys.stdout
    _state["prefix"] = bool(os.environ.get("JOURNAL_STREAM")) or not _isatty(out)


def _isatty(f: TextIO) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


def _redact(v: Any) -> Any:
    if isinstance(v, str) and "://" in v and "@" in v:
        from .config import redact_url

        return redact_url(v)
    return v


def _kv_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if s == "" or any(c in s for c in ' "=\n\t'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


class Logger:
    def __init__(self, **fields: Any) -> None:
        self.fields = {k: v for k, v in fields.items() if v is not None}

    def bind(self, **fields: Any) -> "Logger":
        return Logger(**{**self.fields, **fields})

    def log(self, level: str, event: str, **kv: Any) -> None:
        num, prio = LEVELS[level]
        if num < _state["level"]:
            return
        rec: dict[str, Any] = {"level": level, **_state["base"], **self.fields, "event": event}
        for k, v in kv.items():
            rec[k] = _redact(v)
        if _state["format"] == "json":
            rec = {"ts": round(time.time(), 3), **rec}
            line = ujson.dumps(rec, ensure_ascii=False, default=str)
        else:
            line = " ".join(f"{k}={_kv_value(v)}" for k, v in rec.items())
        if _state["prefix"]:
            line = f"<{prio}>{line}"
        out = _state["stream"] or sys.stdout
        try:
            out.write(line + "\n")
            out.flush()
        except (OSError, ValueError):
            pass

    def debug(self, event: str, **kv: Any) -> None:
        self.log("debug", event, **kv)

    def info(self, event: str, **kv: Any) -> None:
        self.log("info", event, **kv)

    def warning(self, event: str, **kv: Any) -> None:
        self.log("warning", event, **kv)

    def error(self, event: str, **kv: Any) -> None:
        self.log("error", event, **kv)

    def critical(self, event: str, **kv: Any) -> None:
        self.log("critical", event, **kv)


def get_logger(component: str | None = None, **fields: Any) -> Logger:
    """A logger whose lines carry the process's base fields plus ``component`` and ``fields``."""
    if component is not None:
        fields = {"component": component, **fields}
    return Logger(**fields)
