"""Conformance: the real fleet (replay relay -> ingester -> N indexer processes -> PostgreSQL)
reproduces the official AppView database of both corpora, also when every event is delivered
twice and when indexers are SIGKILLed at random moments and restarted.

Deliberate deviations are compared their own way, as tools/conform.py DEVIATIONS says:
post_agg and profile_agg (exact counts where the official ones go stale after an account
deletion).
"""

from __future__ import annotations

import os

import psycopg
import pytest

from fleet.db import dump
from fleet.db.migrate import migrate
from tools import conform

from conftest import CORPUS

RUNS = [
    pytest.param(1, False, False, id="1-shard"),
    pytest.param(4, False, False, id="4-shards"),
    pytest.param(4, True, False, id="4-shards-every-event-twice"),
    pytest.param(1, False, True, id="1-shard-indexers-killed"),
    pytest.param(4, False, True, id="4-shards-indexers-killed"),
    pytest.param(4, True, True, id="4-shards-twice-and-killed"),
]


@pytest.mark.parametrize("corpus", ["small", "edge"])
@pytest.mark.parametrize("shards,twice,kill", RUNS)
def test_firehose_run_equals_the_official_database(corpus, shards, twice, kill, redis_url, database_url, tmp_path):
    opts = conform.Options(
        corpus=os.path.join(CORPUS, corpus),
        database_url=database_url,
        redis_url=redis_url,
        shards=shards,
        schema="bsky",
        dump=str(tmp_path / "dump"),
        deliver_twice=twice,
        kill_indexers=kill,
        seed=7,
        timeout=180,
    )
    report = conform.conform(opts)
    assert report.error is None or report.tables, report.format()
    if kill:
        assert report.kills >= 1, "no indexer was killed: the run ended before the first kill"
    assert report.ok, report.format()
    assert sorted(os.listdir(tmp_path / "dump")) == ["db", "db-normalized"]


def test_deviations_are_listed_with_reasons():
    assert set(conform.DEVIATIONS) == {"post_agg", "profile_agg"}
    for name, dv in conform.DEVIATIONS.items():
        assert len(dv.reason) > 40 and dv.comparison, name


def _load_official(database_url: str, corpus: str) -> tuple[conform.Options, dump.Spec]:
    opts = conform.Options(corpus=os.path.join(CORPUS, corpus), database_url=database_url, redis_url="", schema="official")
    spec = dump.load_spec(os.path.join(opts.corpus, "db", "tables.json"))
    migrate(database_url, "official")
    dump.load_rows(database_url, "official", os.path.join(opts.corpus, "db"), spec)
    return opts, spec


def test_comparison_flags_the_official_stale_counts_and_accepts_exact_ones(database_url):
    """The official database itself fails only on its stale aggregate counts; once those are
    recounted, every table passes and the differences are reported as the documented deviation."""
    opts, _ = _load_official(database_url, "edge")
    results = {t.table: t for t in conform.compare_db(opts)}
    assert {t for t, r in results.items() if not r.ok} <= {"post_agg", "profile_agg"}
    assert any("recount gives" in d for r in results.values() for d in r.details)

    from fleet.indexing.aggregates import RECOUNT_SQL

    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("SET search_path TO official")
        for (table, col), q in RECOUNT_SQL.items():
            key = "uri" if table == "post_agg" else "did"
            c.execute(f'UPDATE {table} SET "{col}" = 0')  # noqa: S608 (constants)
            c.execute(f'UPDATE {table} t SET "{col}" = r.n FROM ({q}) AS r(k, n) WHERE t.{key} = r.k')  # noqa: S608
    results = {t.table: t for t in conform.compare_db(opts)}
    assert all(r.ok for r in results.values()), "\n".join(d for r in results.values() for d in r.details)


def test_comparison_names_a_missing_row_and_a_changed_value(database_url):
    opts, _ = _load_official(database_url, "small")
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("SET search_path TO official")
        c.execute('DELETE FROM "like" WHERE uri = (SELECT min(uri) FROM "like")')
        c.execute("UPDATE post SET text = 'changed' WHERE uri = (SELECT min(uri) FROM post)")
    results = {t.table: t for t in conform.compare_db(opts)}
    assert results["like"].normalized == "DIFFERS" and results["like"].raw == "DIFFERS"
    assert any("1 missing, 0 extra" in d for d in results["like"].details)
    assert any("changed" in d and "'changed'" in d for d in results["post"].details)
