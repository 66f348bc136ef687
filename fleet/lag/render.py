"""The report as a readable table (default) or one JSON document (``--json``).

Unknown values print as ``?``, never as 0.
"""

from __future__ import annotations

import time
from typing import Any

import ujson

from ..config import redact_url


def _v(x: Any) -> str:
    return "?" if x is None else str(x)


def _dur(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 60:
        return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _rate(x: float | None) -> str:
    return "?" if x is None else f"{x:g}/s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [fmt(header)] + [fmt(r) for r in rows]


def _position(r: dict[str, Any]) -> str:
    pos = r.get("position")
    if pos == "trimmed":
        return f"{r['last_delivered_id']} TRIMMED(-{r['lost']})"
    if pos == "past_end":
        return f"{r['last_delivered_id']} PAST-END"
    if pos == "before_first":
        return f"{r['last_delivered_id']} <first?"
    return _v(r.get("last_delivered_id"))


def _consumers(r: dict[str, Any]) -> str:
    cs = r.get("consumers") or []
    if not cs:
        return "none"
    shown = ",".join(f"{c['name']}({_dur(c['idle_s'])})" for c in cs[:3])
    return shown + (f",+{len(cs) - 3}" if len(cs) > 3 else "")


def stream_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in report["streams"]:
        shard = "-" if r["shard"] is None else str(r["shard"])
        if not r["exists"]:
            out.append([shard, r["stream"], "-", "missing" if r["required"] else "absent"] + ["-"] * 10 + [r["status"]])
            continue
        group = r["group"] if r["group_exists"] else f"{r['group']}(none)"
        op = r.get("oldest_pending")
        md = r.get("max_deliveries")
        g = r["group_exists"]
        out.append([
            shard, r["stream"], group, str(r["length"]),
            f"{_v(r['first_id'])}..{_v(r['last_id'])}" if r["length"] else f"empty@{_v(r['last_generated_id'])}",
            _position(r) if g else "-",
            _v(r.get("lag")) if g else "-",
            str(r.get("pending", 0)) if g else "-",
            (_dur(op["age_s"] if op["age_s"] is not None else op["idle_s"]) if op else "-") if g else "-",
            (str(md["deliveries"]) if md else "-") if g else "-",
            _consumers(r) if g else "-",
            f"{_rate(r.get('rate_in'))} {_rate(r.get('rate_out'))}" if r.get("rate_in") is not None else "-",
            _dur(r["eta_s"]) if r.get("eta_s") else "-",
            str(r["dlq"]["length"]) + (f"(+{r['dlq_delta']})" if r.get("dlq_delta") else ""),
            r["status"],
        ])
    return out


def text(report: dict[str, Any], redis_url: str = "") -> str:
    """The whole report for a terminal."""
    lines = []
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report["time"]))
    n = report["shard_count"]
    lines.append(
        f"rsky-lag {when}  {redact_url(redis_url)}  shards={n}{' (discovered)' if report['shard_count_discovered'] else ''}"
        f"  window={report['window_s']:g}s  fleet: {report['status']} (exit {report['exit_code']})"
    )
    lines.append("")
    lines += _table(
        ["SHARD", "STREAM", "GROUP", "LEN", "FIRST..LAST", "CURSOR", "LAG", "PEND", "OLDEST", "DLV", "CONSUMERS(idle)",
         "IN/OUT", "ETA", "DLQ", "STATUS"],
        stream_rows(report),
    )
    if n > 1:
        bad = [s for s in report["shards"] if s["status"] != "OK"]
        lines.append("")
        lines.append(f"shards: {n - len(bad)}/{n} OK" + ("" if not bad else "; " + ", ".join(
            f"{s['shard']}={s['status']}" for s in bad)))
    lines.append("")
    if report["relays"]:
        lines += _table(["RELAY", "STREAM", "CURSOR(seq)", "RATE", "BEHIND"], [
            [r["host"], r["stream"], _v(r["seq"]) if r["seq"] is not None else f"?({r['raw']!r})", _rate(r["rate"]),
             _dur(r["behind_s"])] for r in report["relays"]])
    else:
        lines.append("relays: no ingester cursor (firehose_live:cursor:<host>) yet")
    bf = report["backfill"]
    st = bf["stats"]
    lines.append("")
    if st or bf["listrepos"]:
        lines.append(
            f"backfill: queued {_v(st.get('queued'))}  done {_v(st.get('done'))}  failed {_v(st.get('failed'))}"
            f"  gone {_v(st.get('gone'))}  records {_v(st.get('records'))}  remaining {_v(bf['remaining'])}"
            f"  rate {_rate(bf['rate'])}  ETA {_dur(bf['eta_s']) if bf['eta_s'] is not None else '?' if bf['remaining'] else '-'}"
        )
        for h in bf["listrepos"]:
            lines.append(f"  listRepos {h['host']}: cursor={_v(h['cursor'])} done={'yes' if h['done'] else 'no'}"
                         f" skipped ranges={h['skipped']}")
            for s in h["skipped_ranges"]:
                detail = " ".join(f"{k}={v}" for k, v in s.items() if k != "id")
                lines.append(f"    skipped: {detail}")
    else:
        lines.append("backfill: nothing recorded (backfill:stats absent)")
    if report["problems"]:
        lines.append("")
        lines.append("problems:")
        for p in report["problems"]:
            lines.append(f"  {p['status']:<6} {p['where']}: {p['text']}")
            lines.append(f"         fix: {p['fix']}")
    return "\n".join(lines)


def as_json(report: dict[str, Any], indent: int = 2) -> str:
    return ujson.dumps(report, ensure_ascii=False, escape_forward_slashes=False, indent=indent)


def unknown(redis_url: str, error: str) -> dict[str, Any]:
    """The report when Redis cannot be read: status UNKNOWN, exit 3."""
    return {"status": "UNKNOWN", "exit_code": 3, "time": time.time(), "error": error,
            "redis_url": redact_url(redis_url), "problems": [
                {"where": "redis", "status": "UNKNOWN", "text": error, "fix": "docs/operating.md#unknown-redis-unreachable"}]}


def unknown_text(report: dict[str, Any]) -> str:
    return (f"rsky-lag: fleet: UNKNOWN (exit 3): cannot read Redis at {report['redis_url']}: {report['error']}\n"
            f"         fix: {report['problems'][0]['fix']}")
