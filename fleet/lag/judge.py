"""Statuses from samples: each stream row over the window, each shard, the fleet.

The words follow Kafka's lag evaluators (Burrow), judged over the window between the first and
the last sample:

======  =========================================================================  ====
status  meaning                                                                    exit
======  =========================================================================  ====
OK      keeping up (or draining), nothing stuck                                   0
WARN    lag growing while the consumer progresses; a message delivered many        1
        times (poison); the dead-letter stream grew; a listRepos range skipped
STALL   entries waiting but the cursor did not move and nothing was acknowledged;  2
        entries stranded at or before the cursor (never to be delivered)
STOP    no consumer group; entries waiting with no consumer or every consumer     2
        silent for too long; a required stream is missing; a leftover shard
        stream holds entries
REWIND  cursor moved back, points into a trimmed region, lies past the end of the  2
        stream, or a pending entry was removed before it was acknowledged
UNKNOWN Redis unreachable or unreadable                                            3
======  =========================================================================  ====

A shard is as bad as its worst stream, the fleet as bad as its worst shard or stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sample import parse_id

ORDER = ["-", "OK", "WARN", "STALL", "STOP", "REWIND", "UNKNOWN"]
EXIT = {"-": 0, "OK": 0, "WARN": 1, "STALL": 2, "STOP": 2, "REWIND": 2, "UNKNOWN": 3}
RUNBOOK = "docs/operating.md"
FIX = {
    "WARN": f"{RUNBOOK}#warn-lag-growing-poison-message-growing-dlq",
    "STALL": f"{RUNBOOK}#stall-entries-wait-but-nothing-moves",
    "STOP": f"{RUNBOOK}#stop-no-consumer",
    "REWIND": f"{RUNBOOK}#rewind-cursor-in-a-trimmed-region-or-past-the-end",
    "UNKNOWN": f"{RUNBOOK}#unknown-redis-unreachable",
}


@dataclass(frozen=True)
class Thresholds:
    stop_idle_s: float = 60.0  # every consumer silent this long: STOP
    stall_idle_s: float = 30.0  # single sample: oldest pending entry unacknowledged this long: STALL
    poison_deliveries: int = 3  # a pending entry delivered this often: WARN


def worst(statuses: list[str]) -> str:
    return max(statuses, key=ORDER.index, default="OK")


def _delta(a: dict[str, Any] | None, b: dict[str, Any], key: str) -> int | None:
    if a is None or a.get(key) is None or b.get(key) is None:
        return None
    return b[key] - a[key]


def _rate(d: int | None, dt: float) -> float | None:
    return None if d is None or dt <= 0 else round(d / dt, 2)


def judge_row(a: dict[str, Any] | None, b: dict[str, Any], dt: float, th: Thresholds) -> dict[str, Any]:
    """Status and reasons of one stream row; ``a`` is the same row in the window's first sample."""
    out = dict(b)
    reasons: list[tuple[str, str]] = []
    out["rate_in"] = _rate(_delta(a, b, "entries_added"), dt)
    out["rate_out"] = _rate(_delta(a, b, "entries_read"), dt)
    out["lag_delta"] = _delta(a, b, "lag")
    out["eta_s"] = None
    dlq_a = a["dlq"]["length"] if a else None
    out["dlq_delta"] = None if dlq_a is None else b["dlq"]["length"] - dlq_a
    if out["dlq_delta"]:
        reasons.append(("WARN", f"dead-letter stream {b['dlq']['stream']} grew by {out['dlq_delta']} "
                                f"to {b['dlq']['length']} in {dt:.1f}s"))

    if not b["exists"]:
        if b["required"]:
            reasons.append(("STOP", "stream missing: no indexer has created its group here (or the stream was deleted)"))
        return _finish(out, reasons, "-" if not b["required"] else None)
    if b.get("leftover"):
        if b["length"]:
            reasons.append(("STOP", f"no shard owns this stream (SHARD_COUNT changed?): {b['length']} entries will never be read"))
        return _finish(out, reasons, "-" if not b["length"] else None)
    if not b["group_exists"]:
        if b["required"] or b["length"]:
            reasons.append(("STOP", f"no consumer group '{b['group']}': nothing reads this stream ({b['length']} entries)"))
        return _finish(out, reasons, None if reasons else "-")
    if b["group"] != b["expected_group"]:
        out["note"] = f"group '{b['group']}' is not a fleet group; not judged"
        return _finish(out, reasons, "-")

    # where the cursor stands
    if b["position"] == "trimmed":
        reasons.append(("REWIND", f"cursor {b['last_delivered_id']} is in a trimmed region: {b['lost']} entries "
                                  f"were removed before delivery (first entry {b['first_id']})"))
    elif b["position"] == "past_end":
        reasons.append(("REWIND", f"cursor {b['last_delivered_id']} is past the end of the stream (last id "
                                  f"{b['last_generated_id']}): new entries with smaller ids are skipped"))
    elif b["position"] == "stranded":
        reasons.append(("STALL", f"{b['stranded']}{'+' if b['stranded'] >= 10000 else ''} entries at or before the "
                                 f"cursor {b['last_delivered_id']} are neither pending nor acknowledged: they will never "
                                 "be delivered (group re-created at $ or moved by SETID)"))
    op = b.get("oldest_pending")
    if op is not None and not op["exists"]:
        reasons.append(("REWIND", f"pending entry {op['id']} is no longer in the stream: it was trimmed or deleted "
                                  "before it was acknowledged"))
    if a is not None and a.get("group_exists") and a.get("last_delivered_id") and b.get("last_delivered_id"):
        if parse_id(b["last_delivered_id"]) < parse_id(a["last_delivered_id"]):  # type: ignore[operator]
            reasons.append(("REWIND", f"cursor moved back from {a['last_delivered_id']} to {b['last_delivered_id']}"))

    # is it moving, and is anybody there
    lag = b["lag"]
    backlog = (lag is not None and lag > 0) or (lag is None and b["unread"]) or b["pending"] > 0
    # Redis (7.0) creates a consumer only when it is first given an entry and does not refresh
    # its idle time on empty reads, so a missing or idle consumer means STOP only with a backlog
    consumers = b["consumers"]
    if backlog and not consumers:
        reasons.append(("STOP", "the group has no consumer: the indexer/fetcher for it is not running"))
    elif backlog:
        idle = min(c["idle_s"] for c in consumers)
        if idle > th.stop_idle_s:
            reasons.append(("STOP", f"no consumer has read for {idle:.0f}s (consumer gone or blocked)"))
    progress = None
    if a is not None and a.get("group_exists"):
        read = _delta(a, b, "entries_read")
        oa, ob = a.get("oldest_pending"), b.get("oldest_pending")
        progress = bool(
            (read is not None and read > 0)
            or parse_id(b["last_delivered_id"]) != parse_id(a["last_delivered_id"])
            or b["pending"] < a["pending"]
            or (oa or {}).get("id") != (ob or {}).get("id")
        )
    waiting = f"{lag} waiting" if lag is not None else "entries waiting (lag ?)"
    if backlog:
        if progress is False and dt > 0:
            reasons.append(("STALL", f"{waiting}, {b['pending']} pending, and the cursor did not move "
                                     f"nor was anything acknowledged in {dt:.1f}s"))
        elif progress is None and op is not None and op["idle_s"] > th.stall_idle_s:
            reasons.append(("STALL", f"oldest pending entry {op['id']} was delivered {op['idle_s']:.0f}s ago "
                                     "and is not acknowledged"))
    if progress and out["lag_delta"] is not None and out["lag_delta"] > 0:
        reasons.append(("WARN", f"lag growing: +{out['lag_delta']} in {dt:.1f}s ({waiting})"))
    md = b.get("max_deliveries")
    if md is not None and md["deliveries"] >= th.poison_deliveries:
        reasons.append(("WARN", f"entry {md['id']} delivered {md['deliveries']} times: poison message? "
                                f"(it should reach {b['dlq']['stream']})"))
    if lag is not None and lag > 0 and out["rate_in"] is not None and out["rate_out"] is not None:
        net = out["rate_out"] - out["rate_in"]
        if net > 0:
            out["eta_s"] = round(lag / net, 1)
    return _finish(out, reasons, None)


def _finish(out: dict[str, Any], reasons: list[tuple[str, str]], forced: str | None) -> dict[str, Any]:
    out["status"] = forced or worst([s for s, _ in reasons] or ["OK"])
    out["reasons"] = [{"status": s, "text": t} for s, t in reasons]
    return out


def _key(row: dict[str, Any]) -> tuple[str, str | None]:
    return row["stream"], row["group"]


def judge(samples: list[dict[str, Any]], th: Thresholds = Thresholds()) -> dict[str, Any]:
    """The report of a window: ``samples`` oldest first (one sample judges what it can)."""
    a, b = (samples[0], samples[-1]) if len(samples) > 1 else (None, samples[-1])
    dt = b["time"] - a["time"] if a else 0.0
    before = {_key(r): r for r in a["streams"]} if a else {}
    rows = [judge_row(before.get(_key(r)), r, dt, th) for r in b["streams"]]

    shards = []
    for k in range(b["shard_count"]):
        mine = [r for r in rows if r["shard"] == k and r["required"]]
        shards.append({"shard": k, "status": worst([r["status"] for r in mine]),
                       "lag": _sum([r.get("lag") for r in mine if r.get("group_exists")]),
                       "pending": sum(r.get("pending") or 0 for r in mine)})

    relays = []
    relays_before = {r["key"]: r for r in a["relays"]} if a else {}
    for r in b["relays"]:
        p = relays_before.get(r["key"])
        d = None if p is None or p["seq"] is None or r["seq"] is None else r["seq"] - p["seq"]
        relays.append({**r, "rate": _rate(d, dt)})

    repo_rows = [r for r in rows if r["stream"] == "repo_backfill" and r.get("group_exists")
                 and r["group"] == r["expected_group"]]
    queue = None
    if repo_rows and repo_rows[0].get("lag") is not None:
        queue = repo_rows[0]["lag"] + repo_rows[0]["pending"]
    backfill = _judge_backfill(a["backfill"] if a else None, b["backfill"], dt, queue)

    problems = []
    for r in rows:
        if r["status"] in ("WARN", "STALL", "STOP", "REWIND"):
            where = (f"shard {r['shard']} " if r["shard"] is not None and r["required"] else "") + r["stream"]
            problems.append({"where": where, "status": r["status"], "text": "; ".join(x["text"] for x in r["reasons"]),
                             "fix": FIX[r["status"]]})
    for h in backfill["listrepos"]:
        if h["skipped"]:
            problems.append({"where": f"listRepos {h['host']}", "status": "WARN",
                             "text": f"{h['skipped']} listRepos range(s) skipped after repeated errors (re-tryable)",
                             "fix": f"{RUNBOOK}#backfill-gap"})
    status = worst([p["status"] for p in problems] + ["OK"])
    return {
        "status": status,
        "exit_code": EXIT[status],
        "time": b["time"],
        "window_s": round(dt, 3),
        "samples": len(samples),
        "shard_count": b["shard_count"],
        "shard_count_discovered": b.get("shard_count_discovered", False),
        "shards": shards,
        "streams": rows,
        "relays": relays,
        "backfill": backfill,
        "problems": problems,
    }


def _sum(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _judge_backfill(a: dict[str, Any] | None, b: dict[str, Any], dt: float, queue: int | None) -> dict[str, Any]:
    """Repos remaining = queued - (done + failed + gone) from ``backfill:stats``, or else what
    waits in ``repo_backfill`` (the fetcher group's lag + pending, ``queue``)."""
    st = b["stats"]
    finished = sum(st.get(k) or 0 for k in ("done", "failed", "gone"))
    out = {**b, "finished": finished, "remaining": queue, "rate": None, "eta_s": None}
    if st.get("queued") is not None:
        out["remaining"] = max(0, st["queued"] - finished)
    if a is not None and dt > 0:
        before = sum(a["stats"].get(k) or 0 for k in ("done", "failed", "gone"))
        out["rate"] = round((finished - before) / dt, 2)
        if out["rate"] and out["rate"] > 0 and out["remaining"]:
            out["eta_s"] = round(out["remaining"] / out["rate"], 1)
    return out


def drained(report: dict[str, Any]) -> bool:
    """Everything written has been read and acknowledged, and listRepos paging has finished.

    True when every judged row has lag 0 and nothing pending, the backfill queue is empty, at
    least one relay cursor exists, and each listRepos host has its done mark.
    """
    if report["status"] not in ("OK", "WARN") or not report["relays"]:
        return False
    for r in report["streams"]:
        if r["status"] == "-" or not r.get("group_exists"):
            continue
        if r.get("lag") != 0 or r.get("pending"):
            return False
    bf = report["backfill"]
    if bf["remaining"]:
        return False
    return all(h["done"] for h in bf["listrepos"])
