"""Cutover conformance: tools/conform.py --mode backfill and --mode both on corpus/small.

The real fleet: the replay relay serves listRepos, getRepo (the recorded CARs), PLC and the
firehose; the ingester pages listRepos, a fetcher process fetches every repo, an indexer applies
the streams; then the database is compared with the official one (tools/conform_backfill.py).

backfill: every difference must be explained by a rule of ``BACKFILL_RULES`` (unfetchable
accounts, rows purged by deletes the backfill never sees, replies whose parent was deleted,
profile createdAt from the clock). both: the firehose and a full backfill at the same time must
end in the firehose-only state (normalised).

Known gaps, outside the fetcher (named so that a fix or a regression makes these tests fail):
- ``post``/``notification``: a thread gate or post gate written *after* a reply or quote in the
  firehose governs it in a backfill: a backfill has no order between records of different
  repos, and backfilled records count as existing before every live event
  (``fleet/indexing/order.py``, seq 0). Four posts of small (``GATED_LATER``): their
  ``violatesThreadGate``/``violatesEmbeddingRules`` and their reply/quote notifications.
  (Replies backfilled before their parent are re-evaluated when the parent arrives: that gap
  is closed.)
- ``post_agg``: rows the official keeps for posts whose likes/reposts the backfill never sees
  (deleted before it, or from unfetchable accounts): missing keys, counts 0 or from those rows.
- ``profile`` (both only): a profile without ``createdAt`` written first by the backfill keeps
  the clock's time as createdAt (the firehose's older create is refused by the rev guard).
"""

from __future__ import annotations

import json
import os

import redis

from tools import conform
from tests.conftest import CORPUS

SMALL = os.path.join(CORPUS, "small")
GONE = {"did:plc:r3bljf6fu3jwuxgaze4everd": "deactivated", "did:plc:lnhjcftjuqg7z36kk4e6t5jq": "takendown"}

BACKFILL_KNOWN_GAPS = {"post", "notification", "post_agg"}
BOTH_KNOWN_GAPS = {"post", "notification", "post_agg", "profile"}  # which appear depends on timing
GATED_LATER = {"3n2uur2ndu22w", "3n2uuqybf6s2w", "3n2uuqyiqk22w", "3n2uur23y6s2w"}  # rkeys of the posts


def run(mode: str, redis_url: str, database_url: str, tmp_path) -> conform.Report:
    opts = conform.Options(corpus=SMALL, database_url=database_url, redis_url=redis_url, mode=mode, timeout=180,
                           keep_logs=str(tmp_path / "logs"))
    return conform.conform(opts)


def by_table(report: conform.Report) -> dict[str, conform.TableResult]:
    return {t.table: t for t in report.tables}


def test_backfill_only_run_matches_the_official_database_except_explained_rows_and_the_known_indexing_gaps(redis_url, database_url, tmp_path):
    report = run("backfill", redis_url, database_url, tmp_path)
    text = report.format()
    assert report.tables, text  # the run finished (no timeout, no crashed process)
    assert not report.dead_letters, text
    r = redis.Redis.from_url(redis_url)
    gone = {k.decode(): json.loads(v)["status"] for k, v in r.hgetall("backfill:gone").items()}
    assert gone == GONE
    t = by_table(report)
    # the records of every fetchable account arrived; the rest is named
    assert t["record"].normalized == "ok" and "43 missing unfetchable" in t["record"].note
    assert t["like"].normalized == "ok" and t["follow"].normalized == "ok" and t["repost"].normalized == "ok"
    assert t["feed_item"].normalized == "ok" and "extra purged-by-delete" in t["feed_item"].note
    assert t["quote"].normalized == "ok" and "extra purged-by-delete" in t["quote"].note
    assert t["profile"].normalized == "ok" and "createdAt-from-clock" in t["profile"].note
    assert set(report.differing) == BACKFILL_KNOWN_GAPS, text
    # what differs in post and notification is only the posts a later gate governs: one row
    # each side per post, never a lost or invented post, never a late parent's flag
    rows = [d for d in t["post"].details if d.startswith(("- ", "+ "))]
    assert len(rows) == 2 * len(GATED_LATER) and all(any(k in d for k in GATED_LATER) for d in rows), text
    assert all(any(k in d for k in GATED_LATER) for d in t["notification"].details if d.startswith(("- ", "+ "))), text
    assert t["post"].expected - t["post"].got == 14  # 22 unfetchable + 12 parent-gone missing, 8+12 extra, pairwise


def test_firehose_and_a_full_backfill_at_once_end_in_the_firehose_only_state_except_the_known_indexing_gaps(redis_url, database_url, tmp_path):
    report = run("both", redis_url, database_url, tmp_path)
    text = report.format()
    assert report.tables, text
    assert not report.dead_letters, text
    t = by_table(report)
    for name in ("record", "like", "follow", "repost", "feed_item", "quote", "actor", "actor_sync", "post_embed_image",
                 "post_embed_record", "list_item", "profile_agg"):
        assert t[name].ok, (name, text)
    assert t["post"].expected == t["post"].got  # nothing resurrected, nothing lost: only flags differ
    assert set(report.differing) <= BOTH_KNOWN_GAPS, text
