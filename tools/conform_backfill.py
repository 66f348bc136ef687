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
clock) and every difference must be explained by one rule of :data:`BACKFILL_RULES`:

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
from dataclasses import dataclass
from typing import Any, Callable

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
    changed_only: dict[str, set[str]]  # table -> uris whose missing/extra rows differ only in allowed columns


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


def _profile_created_at(table: str, side: str, row: dict[str, Any], c: Context) -> bool:
    return table == "profile" and row.get("uri") in c.changed_only.get("profile", set())


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
        "createdAt-from-clock",
        "a profile record without createdAt: the official takes indexedAt, which is the clock in a backfill",
        _profile_created_at,
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


def compare_backfill(conform: Any, opts: Any) -> list[Any]:
    """The normalised dump against ``db-normalized/``; each difference explained by a rule or DIFFERS."""
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
    norm = dump.compare(d.normalized, os.path.join(opts.corpus, "db-normalized"), spec, tables=names)
    with open(os.path.join(opts.corpus, "db-normalized", "post.jsonl"), encoding="utf-8") as f:
        expected_posts = {json.loads(x)["uri"] for x in f if x.strip()}
    ctx = Context(
        unfetchable,
        expected_posts,
        {r["uri"]: r for r in (json.loads(x) for x in d.normalized.get("post", []))},
        {"profile": _differ_only_in(norm["profile"], {"createdAt"})} if "profile" in norm else {},
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


def _differ_only_in(diff: Any, columns: set[str]) -> set[str]:
    """uris present as a missing and an extra row that differ only in ``columns``."""
    def by_uri(lines: list[str]) -> dict[str, dict[str, Any]]:
        return {r["uri"]: r for r in (json.loads(x) for x in lines)}

    miss, extra = by_uri(diff.missing), by_uri(diff.extra)
    return {u for u in miss.keys() & extra.keys() if {k for k in miss[u] if miss[u][k] != extra[u].get(k)} <= columns}


def _compare_aggregates(conform: Any, opts: Any, spec: Any, ours_raw: dict[str, list[str]], unfetchable: set[str]) -> list[Any]:
    """conform's aggregate check; then a missing/extra key or a count difference is explained
    when the subject belongs to an unfetchable account or when our count equals the recount
    of our own rows (the backfill lacks exactly the unfetchable accounts' likes, follows...)."""
    out = []
    for res in conform.compare_aggregates(opts, spec, ours_raw):
        kept = []
        explained = 0
        for line in res.details:
            if " but a recount gives " in line:  # our count is not exact: never explained
                kept.append(line)
            elif any(did in line for did in unfetchable) or ", db/ has " in line:
                explained += 1
            else:
                kept.append(line)
        res.details = kept
        res.normalized = "DIFFERS" if kept else "ok"
        res.note += f"; {explained} difference(s) from unfetchable accounts' rows (counts checked against our recount)"
        out.append(res)
    return out


def register(conform: Any) -> None:
    """Add ``backfill`` and ``both`` to ``conform.MODES`` (called by conform.py with itself)."""
    relay = {"pds_endpoint": "self"}
    conform.MODES["backfill"] = conform.Mode(
        "backfill", compare_raw=False, start=start_backfill, fed=backfill_fed, relay_options=relay,
        compare=lambda opts: compare_backfill(conform, opts),
    )
    conform.MODES["both"] = conform.Mode("both", compare_raw=False, start=start_both, fed=both_fed, relay_options=relay)
