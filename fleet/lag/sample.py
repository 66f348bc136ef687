"""One read-only snapshot of the fleet's Redis: streams, groups, consumers, cursors, backfill.

``take_sample(r, shard_count)`` issues only read commands (XINFO, XPENDING, XRANGE, XLEN,
GET, HGETALL, SCAN, TYPE) and returns a plain dict that :mod:`fleet.lag.judge` compares with
an earlier one and :mod:`fleet.lag.render` prints. Every value Redis cannot give is ``None``
(shown as ``?``), never 0.

A stream row (one per stream and consumer group; a stream without the group it should have
gets one row with ``group_exists`` false)::

    {"stream", "base", "shard", "group", "expected_group", "required", "exists", "group_exists",
     "length", "first_id", "last_id", "last_generated_id", "entries_added", "max_deleted_id",
     "last_delivered_id", "entries_read", "lag", "unread", "pending", "consumers": [{name,
     pending, idle_s}], "oldest_pending": {id, idle_s, deliveries, age_s, exists} | None,
     "max_deliveries": {id, deliveries} | None, "pending_scanned", "stranded", "position", "lost",
     "leftover", "dlq": {stream, length}}

``position`` names where the group's cursor (last-delivered id) stands: ``ok``, ``empty``
(nothing ever delivered), ``trimmed`` (undelivered entries were removed: ``lost`` of them),
``past_end`` (the cursor is beyond the last id the stream ever generated: new entries with
smaller ids would be skipped), ``stranded`` (``stranded`` entries at or before the cursor are
neither pending nor acknowledged — acknowledged entries are deleted — so ``XREADGROUP >`` will
never deliver them: the group was re-created at ``$`` or moved with SETID), ``before_first`` (cursor before the first entry and Redis
cannot say whether undelivered entries were removed).
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import redis
import ujson

from .. import streams

PENDING_SCAN = 1000  # pending entries inspected per group for the highest delivery count
STRANDED_SCAN = 10000  # entries at or before a cursor inspected for "stranded" ones

# streams whose consumers delete what they acknowledge (XACK+XDEL): there, an entry at or
# before the cursor that is not pending was never delivered and never will be
_DELETE_ON_ACK = (streams.FIREHOSE_LIVE, streams.FIREHOSE_BACKFILL, streams.LABEL_LIVE)

_SHARD_RE = re.compile(r"^(firehose_live|firehose_backfill):(\d+)$")


def parse_id(entry_id: str | None) -> tuple[int, int] | None:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; ``None`` stays ``None``."""
    if entry_id is None:
        return None
    ms, _, seq = str(entry_id).partition("-")
    return int(ms), int(seq or 0)


def id_before(entry_id: str) -> str:
    """The largest stream id smaller than ``entry_id`` (``"5-0"`` -> ``"4-18446744073709551615"``)."""
    ms, seq = parse_id(entry_id)  # type: ignore[misc]
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-18446744073709551615"
    return "0-0"


def event_time(fields: dict[str, str] | None) -> float | None:
    """Unix time of the ``time`` in an entry's ``event`` JSON (``repo`` on repo_backfill)."""
    if not fields:
        return None
    raw = fields.get("event") or fields.get("repo")
    if not raw:
        return None
    try:
        t = ujson.loads(raw).get("time")
    except (ValueError, AttributeError):
        return None
    return parse_time(t)


def parse_time(t: Any) -> float | None:
    if not isinstance(t, str) or not t:
        return None
    try:
        return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def expected_group(base: str) -> str:
    return streams.FETCHER_GROUP if base == streams.REPO_BACKFILL else streams.INDEXER_GROUP


def discover_shard_count(r: redis.Redis) -> int | None:
    """Highest shard number of any ``firehose_live:k``/``firehose_backfill:k`` stream plus one;
    1 when only the bare streams exist; ``None`` when there is no indexer stream at all."""
    top = -1
    bare = False
    for base in (streams.FIREHOSE_LIVE, streams.FIREHOSE_BACKFILL):
        for key in r.scan_iter(match=base + "*", _type="stream", count=1000):
            m = _SHARD_RE.match(key)
            if m:
                top = max(top, int(m.group(2)))
            elif key == base:
                bare = True
    if top >= 0:
        return top + 1
    return 1 if bare else None


def stream_names(r: redis.Redis, shard_count: int) -> list[tuple[str, str, int | None, bool]]:
    """``(stream, base, shard, required)`` for every stream the fleet should have or has."""
    out: list[tuple[str, str, int | None, bool]] = []
    seen: set[str] = set()
    for k in range(shard_count):
        for base in (streams.FIREHOSE_LIVE, streams.FIREHOSE_BACKFILL):
            name = streams.shard_stream(base, k, shard_count)
            out.append((name, base, k, True))
            seen.add(name)
    # leftovers of another shard count: shard streams that exist but no shard reads
    for base in (streams.FIREHOSE_LIVE, streams.FIREHOSE_BACKFILL):
        for key in sorted(r.scan_iter(match=base + "*", _type="stream", count=1000)):
            m = _SHARD_RE.match(key)
            if (m or key == base) and key not in seen:
                out.append((key, base, int(m.group(2)) if m else None, False))
                seen.add(key)
    for base in (streams.REPO_BACKFILL, streams.LABEL_LIVE):
        out.append((base, base, None, False))
    return out


def _int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def sample_stream(r: redis.Redis, name: str, base: str, shard: int | None, required: bool,
                  shard_count: int, now: float) -> list[dict[str, Any]]:
    """The rows of one stream (one per consumer group; see the module docstring)."""
    dlq = streams.dead_letter(name)
    common: dict[str, Any] = {
        "stream": name, "base": base, "shard": shard, "required": required,
        "expected_group": expected_group(base),
        # a shard stream of another SHARD_COUNT: no indexer of this fleet reads it
        "leftover": not required and base in (streams.FIREHOSE_LIVE, streams.FIREHOSE_BACKFILL),
        "dlq": {"stream": dlq, "length": r.xlen(dlq)},
    }
    try:
        info = r.xinfo_stream(name)
    except redis.ResponseError as e:
        if "no such key" not in str(e).lower():
            raise
        return [{**common, "exists": False, "group": None, "group_exists": False}]
    first = info.get("first-entry")
    last = info.get("last-entry")
    common.update(
        exists=True,
        length=info["length"],
        first_id=first[0] if first else None,
        last_id=last[0] if last else None,
        last_generated_id=info.get("last-generated-id"),
        entries_added=_int(info.get("entries-added")),
        max_deleted_id=info.get("max-deleted-entry-id"),
        last_event_time=event_time(last[1]) if last else None,
    )
    groups = r.xinfo_groups(name)
    rows = []
    names = [g["name"] for g in groups]
    if common["expected_group"] not in names:
        rows.append({**common, "group": common["expected_group"], "group_exists": False})
    for g in groups:
        rows.append(_group_row(r, common, g, now))
    return rows


def _group_row(r: redis.Redis, common: dict[str, Any], g: dict[str, Any], now: float) -> dict[str, Any]:
    name = common["stream"]
    group = g["name"]
    row = {**common, "group": group, "group_exists": True}
    row["last_delivered_id"] = g.get("last-delivered-id")
    row["entries_read"] = _int(g.get("entries-read"))
    row["lag"] = _int(g.get("lag"))
    row["pending"] = int(g.get("pending") or 0)
    row["consumers"] = [
        {"name": c["name"], "pending": int(c.get("pending") or 0),
         # "idle" counts from the last read attempt, so a consumer polling an empty stream is not idle
         "idle_s": round(int(c.get("idle") or 0) / 1000.0, 3)}
        for c in r.xinfo_consumers(name, group)
    ]
    last_delivered = parse_id(row["last_delivered_id"])
    last_id = parse_id(row["last_id"])
    row["unread"] = last_id is not None and last_delivered is not None and last_id > last_delivered
    # pending: the oldest entry (age from its event time) and the most-delivered one
    row["oldest_pending"] = None
    row["max_deliveries"] = None
    row["pending_scanned"] = 0
    entries: list[dict[str, Any]] = []
    if row["pending"]:
        entries = r.xpending_range(name, group, min="-", max="+", count=PENDING_SCAN)
        row["pending_scanned"] = len(entries)
        if entries:
            oldest = entries[0]
            found = r.xrange(name, min=oldest["message_id"], max=oldest["message_id"], count=1)
            t = event_time(found[0][1]) if found else None
            row["oldest_pending"] = {
                "id": oldest["message_id"],
                "idle_s": round(oldest["time_since_delivered"] / 1000.0, 3),
                "deliveries": oldest["times_delivered"],
                "age_s": None if t is None else round(now - t, 3),
                "exists": bool(found),
            }
            top = max(entries, key=lambda e: e["times_delivered"])
            row["max_deliveries"] = {"id": top["message_id"], "deliveries": top["times_delivered"]}
    row["stranded"] = None
    first = parse_id(row["first_id"])
    if common["base"] in _DELETE_ON_ACK and first is not None and last_delivered is not None:
        row["stranded"] = 0
        if first <= last_delivered and len(entries) == row["pending"]:
            pending_ids = {e["message_id"] for e in entries}
            present = r.xrange(name, min="-", max=row["last_delivered_id"], count=row["pending"] + STRANDED_SCAN)
            row["stranded"] = sum(1 for i, _ in present if i not in pending_ids)
    row["position"], row["lost"] = cursor_position(row)
    return row


def cursor_position(row: dict[str, Any]) -> tuple[str, int | None]:
    """Where a group's cursor stands against the stream (see the module docstring)."""
    cur = parse_id(row.get("last_delivered_id"))
    gen = parse_id(row.get("last_generated_id"))
    first = parse_id(row.get("first_id"))
    lag = row.get("lag")
    length = row.get("length") or 0
    if cur is None:
        return "ok", None
    if gen is not None and cur > gen:
        return "past_end", None
    if cur == (0, 0) and not row.get("entries_read"):
        return "empty", None
    if row.get("stranded"):
        return "stranded", None
    if first is None or cur < first:
        # every entry still in the stream is after the cursor: more undelivered than that were lost
        if lag is not None:
            return ("trimmed", lag - length) if lag > length else ("ok", None)
        return ("before_first", None) if first is not None else ("ok", None)
    return "ok", None


def sample_relays(r: redis.Redis, shard_count: int, now: float) -> list[dict[str, Any]]:
    """Per relay (and labeler) cursor key: the stored seq and the time of the event it names."""
    out = []
    for base in (streams.FIREHOSE_LIVE, streams.LABEL_LIVE):
        prefix = base + ":cursor:"
        for key in sorted(r.scan_iter(match=prefix + "*", count=1000)):
            host = key[len(prefix):]
            raw = r.get(key)
            seq = _int(raw)
            names = [streams.shard_stream(base, k, shard_count) for k in range(shard_count)] \
                if base == streams.FIREHOSE_LIVE else [base]
            t = None
            if seq is not None:
                for s in names:  # the entry of the cursor itself, when seq is the entry id
                    hit = r.xrange(s, min=f"{seq}-0", max=f"{seq}-0", count=1)
                    if hit:
                        t = event_time(hit[0][1])
                        break
            if t is None:  # else the newest entry of any shard stream
                newest: tuple[tuple[int, int], dict[str, str]] | None = None
                for s in names:
                    hit = r.xrevrange(s, max="+", min="-", count=1)
                    if hit and (newest is None or parse_id(hit[0][0]) > newest[0]):  # type: ignore[operator]
                        newest = (parse_id(hit[0][0]), hit[0][1])  # type: ignore[assignment]
                if newest is not None:
                    t = event_time(newest[1])
            out.append({
                "stream": base, "host": host, "key": key, "seq": seq, "raw": raw,
                "last_event_time": t,
                "behind_s": None if t is None else round(max(0.0, now - t), 3),
            })
    return out


def sample_backfill(r: redis.Redis) -> dict[str, Any]:
    """``backfill:stats`` counters and, per listRepos host, its cursor, done mark and skips."""
    stats = {k: _int(v) for k, v in r.hgetall(streams.BACKFILL_STATS).items()}
    hosts: dict[str, dict[str, Any]] = {}

    def host(h: str) -> dict[str, Any]:
        return hosts.setdefault(h, {"host": h, "cursor": None, "done": None, "skipped": 0, "skipped_ranges": []})

    for kind in ("cursor", "done"):
        prefix = f"{streams.REPO_BACKFILL}:{kind}:"
        for key in r.scan_iter(match=prefix + "*", count=1000):
            if r.type(key) == "string":
                host(key[len(prefix):])[kind] = r.get(key)
    prefix = f"{streams.REPO_BACKFILL}:skipped:"
    for key in r.scan_iter(match=prefix + "*", _type="stream", count=1000):
        h = host(key[len(prefix):])
        h["skipped"] = r.xlen(key)
        h["skipped_ranges"] = [{"id": i, **f} for i, f in r.xrevrange(key, count=5)]
    return {"stats": stats, "listrepos": [hosts[h] for h in sorted(hosts)]}


def take_sample(r: redis.Redis, shard_count: int | None = None, now: float | None = None) -> dict[str, Any]:
    """A snapshot of everything lag.py shows. ``r`` must use ``decode_responses=True``.

    ``shard_count`` ``None`` discovers it from the shard streams (SCAN); ``now`` is the sample's
    wall-clock time (default: the clock now; tests inject it to make rates exact).
    """
    now = time.time() if now is None else now
    discovered = shard_count is None
    if shard_count is None:
        shard_count = discover_shard_count(r) or 1
    rows: list[dict[str, Any]] = []
    for name, base, shard, required in stream_names(r, shard_count):
        rows.extend(sample_stream(r, name, base, shard, required, shard_count, now))
    return {
        "time": now,
        "shard_count": shard_count,
        "shard_count_discovered": discovered,
        "streams": rows,
        "relays": sample_relays(r, shard_count, now),
        "backfill": sample_backfill(r),
    }
