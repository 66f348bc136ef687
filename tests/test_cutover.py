"""Cutover conformance: tools/conform.py --mode backfill and --mode both on corpus/small and edge.

The real fleet: the replay relay serves listRepos, getRepo (the recorded CARs), PLC and the
firehose; the ingester pages listRepos, a fetcher process fetches every repo, indexers apply
the streams; then the database is compared with the official one (tools/conform_backfill.py).

backfill: every differing row must be explained by a named rule of ``BACKFILL_RULES`` (what
only the firehose's order or history carries: unfetchable accounts, purged-by-delete,
parent-gone, gate-changed-after-post, parent-after-reply, duplicate-order, notifications of
updated or deleted records, superseded-by-invalid); no table-level gap is excused.
both: the firehose and a full backfill at the same time end in the firehose-only state
(normalised, clock values masked), with 1 and 4 shards (fleet/indexing/cutover.py).
"""

from __future__ import annotations

import json
import os

import redis

from tools import conform
from tests.conftest import CORPUS

SMALL = os.path.join(CORPUS, "small")
GONE = {"did:plc:r3bljf6fu3jwuxgaze4everd": "deactivated", "did:plc:lnhjcftjuqg7z36kk4e6t5jq": "takendown"}

EDGE = os.path.join(CORPUS, "edge")


def run(mode: str, redis_url: str, database_url: str, tmp_path, corpus: str = SMALL, shards: int = 1) -> conform.Report:
    opts = conform.Options(corpus=corpus, database_url=database_url, redis_url=redis_url, mode=mode, timeout=180,
                           shards=shards, keep_logs=str(tmp_path / "logs"))
    return conform.conform(opts)


def by_table(report: conform.Report) -> dict[str, conform.TableResult]:
    return {t.table: t for t in report.tables}


def test_backfill_only_run_differs_from_the_official_database_only_in_rows_each_explained_by_a_named_rule(redis_url, database_url, tmp_path):
    report = run("backfill", redis_url, database_url, tmp_path)
    text = report.format()
    assert report.ok, text  # every table: each differing row explained, or none
    r = redis.Redis.from_url(redis_url)
    gone = {k.decode(): json.loads(v)["status"] for k, v in r.hgetall("backfill:gone").items()}
    assert gone == GONE
    t = by_table(report)
    # the records of every fetchable account arrived; the rest is named
    assert "43 missing unfetchable" in t["record"].note
    assert "extra purged-by-delete" in t["feed_item"].note and "extra purged-by-delete" in t["quote"].note
    # posts a gate written after them governs: one row each side per post, never a lost or invented post
    assert "4 missing gate-changed-after-post" in t["post"].note and "4 extra gate-changed-after-post" in t["post"].note
    assert "missing parent-gone" in t["post"].note
    assert t["post"].expected - t["post"].got == 14  # 22 unfetchable + 12 parent-gone + 4 gated missing, 8+12+4 extra


def test_backfill_only_run_of_the_edge_corpus_differs_only_in_rows_each_explained_by_a_named_rule(redis_url, database_url, tmp_path):
    report = run("backfill", redis_url, database_url, tmp_path, corpus=EDGE)
    text = report.format()
    assert report.ok, text
    t = by_table(report)
    for rule in ("gate-changed-after-post", "parent-after-reply", "parent-gone"):
        assert rule in t["post"].note, text
    assert "duplicate-order" in t["duplicate_record"].note and "superseded-by-invalid" in t["profile"].note


def _firehose_only_state(report) -> None:
    """Every table equals the firehose-only state (normalised, clock values masked): posts,
    gates, counts, duplicates (which of an account's same-subject records is the original,
    fleet/indexing/duplicates.py) and notifications; no dead letter."""
    text = report.format()
    assert report.tables and not report.dead_letters, text
    assert report.ok and not report.differing, text


def test_firehose_and_a_full_backfill_at_once_end_in_the_firehose_only_state(redis_url, database_url, tmp_path):
    _firehose_only_state(run("both", redis_url, database_url, tmp_path))


def test_firehose_and_a_full_backfill_at_once_on_four_shards_end_in_the_firehose_only_state(redis_url, database_url, tmp_path):
    _firehose_only_state(run("both", redis_url, database_url, tmp_path, shards=4))


def test_firehose_and_a_full_backfill_at_once_on_edge_end_in_the_firehose_only_state(redis_url, database_url, tmp_path):
    _firehose_only_state(run("both", redis_url, database_url, tmp_path, corpus=EDGE))


def test_firehose_and_a_full_backfill_at_once_on_edge_with_four_shards_end_in_the_firehose_only_state(redis_url, database_url, tmp_path):
    _firehose_only_state(run("both", redis_url, database_url, tmp_path, corpus=EDGE, shards=4))
