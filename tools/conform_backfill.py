"""The backfill modes of ``tools/conform.py``: ``--mode backfill`` and ``--mode both``.

    python tools/conform.py --mode backfill --corpus tests/fixtures/corpus/small --database-url URL --redis-url URL
    python tools/conform.py --mode both ...

``conform.py`` calls :func:`register` with itself; this module adds two :class:`Mode` entries.
The replay relay serves the corpus with every DID document's PDS pointing at the relay, so
``getRepo`` is answered from the recorded CARs (``repos/<did>.car``, errors as recorded).

**backfill** — no firehose. The ingester pages ``listRepos`` into ``repo_backfill``, one fetcher
process (``python -m fleet.fetcher``) fetches every repo into the backfill shard streams, the
indexers apply them. The run is fed when listRepos is done and ``repo_backfill`` is empty with
nothing pending. The result is compared with ``db-normalized/`` (``indexedAt`` comes from the
clock; clock values masked on both sides by ``fleet.db.dump.mask_clock_values``, as in
``conform.compare_db``) and every difference must be explained by one rule of
:data:`BACKFILL_RULES` (the firehose's record history, decoded from ``firehose.frames``, is what
the order rules check):

- *unfetchable* — a row naming an account whose repo cannot be fetched: deactivated and
  taken-down accounts (getRepo refuses them, recorded in ``backfill:gone``) and deleted ones
  (not listed); the firehose alone carries their history;
- the per-table rules for what only events carry (listed in the rules with their reason).

Anything else is reported as DIFFERS, with the rows.

**both** — the firehose from cursor 0 and a full backfill (listRepos + fetcher) at the same
time, then the same comparison as ``--mode firehose`` on the normalised dump: the cutover must
end in the firehose-only state (no resurrected deletes, no undone updates, no doubled counts or
notifications). The raw comparison is off: a row the backfill wrote first keeps the clock's
``indexedAt`` (the rev guard refuses the firehose's older create), which ``db/`` cannot match.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from fleet import streams

GONE_KEY = "backfill:gone"  # fleet.fetcher.main.GONE_KEY (not imported: keeps this tool light)


@dataclass(frozen=True)
class Rule:
    name: str
    reason: str
    explains: Callable[[str, str, dict[str, Any], "Context"], bool]  # (table, side, row, context) -> bool


@dataclass
class Context:
    unfetchable: set[str]  # DIDs a backfill cannot bring
    expected_posts: set[str]  # post uris of db/ (the firehose's final state)
    our_posts: dict[str, dict[str, Any]]  # our post rows by uri
    history: dict[str, list[tuple[int, str, Any, Any]]] = field(default_factory=dict)  # uri -> [(seq, action, cid, record)]
    duplicates: set[str] = field(default_factory=set)  # uris in a duplicate_record row of either side

    def created(self, uri: str) -> Optional[int]:
        """Seq of the firehose's first create of ``uri`` (None: never created in the firehose)."""
        return next((seq for seq, action, _, _ in self.history.get(uri, []) if action == "create"), None)

    def record(self, uri: str) -> Any:
        """The firehose's first version of ``uri``."""
        return next((rec for _, action, _, rec in self.history.get(uri, []) if action != "delete"), None)


def _names_unfetchable(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    text = json.dumps(row)
    return any(did in text for did in c.unfetchable)


def _purged_by_a_delete(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    if side != "extra":
        return False
    if table == "feed_item" and row.get("type") == "repost":
        return row.get("postUri") not in c.expected_posts
    if table == "quote":
        return row.get("subject") not in c.expected_posts
    return False


def _reply_without_its_parent(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    uri = row.get("uri") if table == "post" else row.get("recordUri") if table == "notification" and row.get("reason") == "reply" else None
    post = c.our_posts.get(uri or "")
    if post is None or not post.get("replyRoot"):
        return False
    return post["replyRoot"] not in c.our_posts or post["replyParent"] not in c.our_posts


def _post_of(table: str, row: dict[str, Any]) -> Optional[str]:
    if table == "post":
        return row.get("uri")
    if table == "notification" and "/app.bsky.feed.post/" in str(row.get("recordUri")):
        return row.get("recordUri")
    return None


def _post_ref(uri: Any, collection: str) -> Optional[str]:
    """The gate of post ``uri`` (same account, same rkey)."""
    if not isinstance(uri, str) or "/app.bsky.feed.post/" not in uri:
        return None
    return uri.replace("/app.bsky.feed.post/", f"/{collection}/")


def _embedded_posts(rec: Any) -> list[str]:
    embed = rec.get("embed") if isinstance(rec, dict) else None
    if not isinstance(embed, dict):
        return []
    inner = embed.get("record")
    if isinstance(inner, dict) and isinstance(inner.get("record"), dict):  # recordWithMedia
        inner = inner["record"]
    uri = inner.get("uri") if isinstance(inner, dict) else None
    return [uri] if isinstance(uri, str) else []


def _gate_changed_after(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    uri = _post_of(table, row)
    seq = c.created(uri or "")
    if seq is None:
        return False
    rec = c.record(uri or "")
    reply = rec.get("reply") if isinstance(rec, dict) and isinstance(rec.get("reply"), dict) else {}
    root = (reply.get("root") or {}).get("uri") if isinstance(reply.get("root"), dict) else None
    gates = [_post_ref(root, "app.bsky.feed.threadgate"), _post_ref(uri, "app.bsky.feed.threadgate")] + [_post_ref(u, "app.bsky.feed.postgate") for u in _embedded_posts(rec)]
    return any(s > seq for g in gates if g for s, _, _, _ in c.history.get(g, []))


def _parent_after_reply(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    uri = _post_of(table, row)
    for _ in range(6):  # the post or an ancestor was written before its own parent or root
        seq = c.created(uri or "")
        rec = c.record(uri or "")
        reply = rec.get("reply") if isinstance(rec, dict) and isinstance(rec.get("reply"), dict) else None
        if seq is None or reply is None:
            return False
        refs = [(reply.get(k) or {}).get("uri") if isinstance(reply.get(k), dict) else None for k in ("parent", "root")]
        if any((c.created(r) or 0) > seq for r in refs if isinstance(r, str)):
            return True
        uri = refs[0]
    return False


def _duplicate_order(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    if table == "duplicate_record":
        return True
    return table == "notification" and row.get("recordUri") in c.duplicates


def _notification_of_updated_record(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    uri = row.get("recordUri") if table == "notification" else None
    return any(action == "update" for _, action, _, _ in c.history.get(uri or "", []))


def _notification_of_deleted_record(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    ops = c.history.get(row.get("recordUri") or "", []) if table == "notification" and side == "missing" else []
    return bool(ops) and ops[-1][1] == "delete"


def _superseded_by_invalid(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    if side != "missing" or not isinstance(row.get("uri"), str) or not isinstance(row.get("cid"), str):
        return False
    versions = [cid for _, action, cid, _ in c.history.get(row["uri"], []) if action != "delete"]
    return bool(versions) and versions[-1] != row["cid"]


BACKFILL_RULES: list[Rule] = [
    Rule(
        "unfetchable",
        "the row names an account whose getRepo fails (deactivated, taken down) or that is not listed "
        "(deleted): only the firehose carries its history, its deletion included",
        _names_unfetchable,
    ),
    Rule(
        "purged-by-delete",
        "a feed_item of a repost, or a quote, of a post deleted before the backfill: the firehose's delete "
        "purged it, a backfill never sees the subject so nothing purges it",
        _purged_by_a_delete,
    ),
    Rule(
        "parent-gone",
        "a reply (or its reply notification) whose root or parent was deleted or belongs to an unfetchable "
        "account: the firehose saw the parent exist, a backfill never does (invalidReplyRoot)",
        _reply_without_its_parent,
    ),
    Rule(
        "gate-changed-after-post",
        "a post (or its notification) whose thread gate (of its root, or its own) or post gate (of a post it quotes) was "
        "created, updated or deleted after the post in the firehose: the official judged it by the gate as it "
        "was at the post's seq; a backfill has no order between repos and sees only the final gate",
        _gate_changed_after,
    ),
    Rule(
        "parent-after-reply",
        "a reply (or its notification) written before its parent or root existed, or below such a reply: the "
        "official flagged it invalidReplyRoot at its seq and never re-evaluates; a backfill sees the parent exist",
        _parent_after_reply,
    ),
    Rule(
        "duplicate-order",
        "duplicate_record rows (and the notifications of those records): which of an account's same-subject "
        "likes/reposts/follows/blocks/list items came first, and the rows left pointing to a deleted original "
        "after a promotion, are firehose history; a backfill sees only the surviving records, in MST order",
        _duplicate_order,
    ),
    Rule(
        "notification-of-updated-record",
        "a notification of a record updated in the firehose: the official keeps the first version's "
        "notification on update (like/follow/repost notifsForDelete with a replacement deletes nothing and "
        "adds nothing); a backfill sees only the last version and notifies for it",
        _notification_of_updated_record,
    ),
    Rule(
        "notification-of-deleted-record",
        "a notification the official kept for a record deleted later in the firehose (e.g. a like deleted in a "
        "commit with other ops); a backfill never sees the record",
        _notification_of_deleted_record,
    ),
    Rule(
        "superseded-by-invalid",
        "a record whose latest version is invalid for its lexicon: the official skipped that update and kept the "
        "older valid version, which only the firehose carries (the repo holds the invalid one, also skipped)",
        _superseded_by_invalid,
    ),
]


def listed_dids(corpus: str) -> set[str]:
    out: set[str] = set()
    for path in sorted(glob.glob(os.path.join(corpus, "listRepos", "*.json"))):
        with open(path, encoding="utf-8") as f:
            out.update(r["did"] for r in json.load(f)["response"]["repos"])
    return out


def corpus_dids(corpus: str) -> set[str]:
    return {os.path.basename(p)[: -len(".json")].replace("_", ":") for p in glob.glob(os.path.join(corpus, "plc", "*.json"))}


def unfetchable_dids(corpus: str, redis: Any) -> set[str]:
    """Accounts a backfill cannot bring: recorded as gone by the fetcher, or never listed."""
    gone = {k.decode() for k in redis.hkeys(GONE_KEY)}
    return gone | (corpus_dids(corpus) - listed_dids(corpus))


# -- feeding ------------------------------------------------------------------------------------


def _backfill_env(run: Any) -> dict[str, str]:
    return {
        "INGESTER_LISTREPOS": "true",
        "INGESTER_LISTREPOS_HOSTS": run.relay_url,
        "INGESTER_LISTREPOS_PAGE_SIZE": "10",
        "FETCHER_RETRY_BACKOFF_S": "0.2",
        "FETCHER_TIMEOUT_S": "10",
    }


def start_backfill(run: Any) -> None:
    run._spawn("ingester", "fleet.ingester", run.env(INGESTER_RELAY_HOSTS="", **_backfill_env(run)))
    run._spawn("fetcher-1", "fleet.fetcher", run.env(FETCHER_INSTANCE="1", **_backfill_env(run)))


def start_both(run: Any) -> None:
    run._spawn("ingester", "fleet.ingester", run.env(**_backfill_env(run)))
    run._spawn("fetcher-1", "fleet.fetcher", run.env(FETCHER_INSTANCE="1", **_backfill_env(run)))


def backfill_fed(run: Any) -> bool:
    """listRepos done, and every queued repo fetched (entries are deleted once done/gone/failed)."""
    r = run.redis
    if not any(True for _ in r.scan_iter(match=streams.listrepos_done_key("*"))):
        return False
    if r.xlen(streams.REPO_BACKFILL):
        return False
    try:
        groups = r.xinfo_groups(streams.REPO_BACKFILL)
    except Exception:  # the stream does not exist: nothing was ever queued
        return True
    return all(int(g["pending"]) == 0 for g in groups)


def both_fed(run: Any) -> bool:
    return run.ingester_cursor() >= run.last_seq and backfill_fed(run)


# -- comparing ------------------------------------------------------------------------------------


def firehose_history(corpus: str) -> dict[str, list[tuple[int, str, Any, Any]]]:
    """Every record op of the corpus's firehose: ``{uri: [(seq, action, cid, record)]}`` in seq order."""
    from fleet.codec.firehose import iter_frames_file, message_events

    out: dict[str, list[tuple[int, str, Any, Any]]] = {}
    with open(os.path.join(corpus, "firehose.frames"), "rb") as f:
        data = f.read()
    for msg in iter_frames_file(data):
        try:
            _, seq, events = message_events(msg)
        except Exception:  # noqa: BLE001 - a frame the fleet skips carries nothing to explain
            continue
        for ev in events:
            if ev.get("type") in ("create", "update", "delete") and seq is not None:
                uri = f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}"
                out.setdefault(uri, []).append((seq, ev["type"], ev.get("cid"), ev.get("record")))
    return out


def compare_backfill(conform: Any, opts: Any) -> list[Any]:
    """The normalised dump against ``db-normalized/`` (clock values masked on both sides, as
    ``conform.compare_db``); each difference explained by a rule or DIFFERS."""
    import redis as syncredis

    from fleet.db import dump

    r = syncredis.Redis.from_url(opts.redis_url)
    try:
        unfetchable = unfetchable_dids(opts.corpus, r)
    finally:
        r.close()
    spec = dump.load_spec(os.path.join(opts.corpus, "db", "tables.json"))
    d = dump.dump(opts.database_url, opts.schema, spec)
    if opts.dump:
        dump.write(d, opts.dump)
    names = [t for t in sorted(d.normalized) if t not in conform.DEVIATIONS]
    ours = dump.mask_clock_values(d.normalized)
    expected = dump.mask_clock_values(dump.read_dir(os.path.join(opts.corpus, "db-normalized")))
    norm = {n: conform._compare_lines(n, ours[n], expected.get(n, []), spec) for n in names}
    expected_posts = {json.loads(x)["uri"] for x in expected.get("post", [])}
    dupes = {v for x in ours.get("duplicate_record", []) + expected.get("duplicate_record", [])
             for k, v in json.loads(x).items() if k in ("uri", "duplicateOf")}  # fmt: skip
    ctx = Context(
        unfetchable,
        expected_posts,
        {r["uri"]: r for r in (json.loads(x) for x in ours.get("post", []))},
        firehose_history(opts.corpus),
        dupes,
    )
    results = []
    for name in names:
        diff = norm[name]
        counts: dict[str, int] = {}
        details: list[str] = []
        for side, lines in (("missing", diff.missing), ("extra", diff.extra)):
            for text in lines:
                row = json.loads(text)
                rule = next((rl for rl in BACKFILL_RULES if rl.explains(name, side, row, ctx)), None)
                if rule is None:
                    details.append(("- " if side == "missing" else "+ ") + text[:300])
                else:
                    counts[f"{side} {rule.name}"] = counts.get(f"{side} {rule.name}", 0) + 1
        note = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        results.append(conform.TableResult(name, diff.expected, diff.got, "DIFFERS" if details else "ok", "-", note, details))
    results += _compare_aggregates(conform, opts, spec, d.raw, unfetchable)
    results.sort(key=lambda t: t.table)
    return results


def _compare_aggregates(conform: Any, opts: Any, spec: Any, ours_raw: dict[str, list[str]], unfetchable: set[str]) -> list[Any]:
    """conform's aggregate check; then a missing/extra key or a count difference is explained
    when the subject belongs to an unfetchable account or when our count equals the recount
    of our own rows (the backfill lacks exactly the unfetchable accounts' likes, follows...)."""
    out = []
    for res in conform.compare_aggregates(opts, spec, ours_raw):
        kept = []
        explained = 0
        ours = {json.loads(x)[spec.tables[res.table].primary_key[0]] for x in ours_raw.get(res.table, [])}
        without_rows = 0
        counted = _counted_subjects(ours_raw)
        for line in res.details:
            if " but a recount gives " in line:  # our count is not exact: never explained
                kept.append(line)
            elif any(did in line for did in unfetchable) or ", db/ has " in line:
                explained += 1
            elif line.startswith("missing key ") and line[len("missing key "):] not in ours | counted:
                # the official writes an aggregate row at the first like/repost/reply/quote it
                # indexes and keeps it after that row is gone (deleted, or its account deleted);
                # a backfill never sees such rows, so it writes no aggregate (our recount is exact)
                without_rows += 1
            else:
                kept.append(line)
        res.details = kept
        res.normalized = "DIFFERS" if kept else "ok"
        res.note += (f"; {explained} difference(s) from unfetchable accounts' rows (counts checked against our recount)"
                     f"; {without_rows} missing key(s) agg-without-rows")
        out.append(res)
    return out


def _counted_subjects(ours_raw: dict[str, list[str]]) -> set[str]:
    """Every key some row of ours counts for (a missing aggregate key among them is a bug)."""
    cols = {"like": ("subject",), "repost": ("subject",), "post": ("replyParent", "creator"), "quote": ("subject",),
            "follow": ("creator", "subjectDid")}  # fmt: skip
    out: set[str] = set()
    for table, names in cols.items():
        for x in ours_raw.get(table, []):
            row = json.loads(x)
            out.update(row[n] for n in names if isinstance(row.get(n), str))
    return out


def register(conform: Any) -> None:
    """Add ``backfill`` and ``both`` to ``conform.MODES`` (called by conform.py with itself)."""
    relay = {"pds_endpoint": "self"}
    conform.MODES["backfill"] = conform.Mode(
        "backfill", compare_raw=False, start=start_backfill, fed=backfill_fed, relay_options=relay,
        compare=lambda opts: compare_backfill(conform, opts),
    )
    conform.MODES["both"] = conform.Mode("both", compare_raw=False, start=start_both, fed=both_fed, relay_options=relay)
