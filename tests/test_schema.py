"""The migrated schema equals the official one (schema.sql), plus only additive changes."""

import os

import psycopg

from fleet.db.migrate import migrate

from conftest import CORPUS

ADDITIVE_TABLES = {"fleet_migration", "fleet_record_tombstone", "fleet_record_history", "fleet_account_deletion", "fleet_graph_history", "fleet_graph_change"}
ADDITIVE_COLUMNS = {("record", "rev"), ("record", "seq")}
ADDITIVE_INDEXES = {("post", "fleet_post_replyroot_idx"), ("post_embed_record", "fleet_post_embed_record_embeduri_idx")}  # 0003/0004: order re-evaluation
ADDITIVE_INDEXES |= {("thread_gate", "fleet_thread_gate_creator_idx")}  # 0005: a late follow finds the gated threads of its accounts


def _describe(url: str, schema: str) -> dict:
    with psycopg.connect(url) as c:
        cols = c.execute(
            """SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default
               FROM information_schema.columns WHERE table_schema = %s""",
            (schema,),
        ).fetchall()
        idx = c.execute(
            "SELECT tablename, indexname, replace(indexdef, %s, '') FROM pg_indexes WHERE schemaname = %s",
            (schema + ".", schema),
        ).fetchall()
        cons = c.execute(
            """SELECT rel.relname, con.conname, pg_get_constraintdef(con.oid)
               FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
               JOIN pg_namespace n ON n.oid = rel.relnamespace WHERE n.nspname = %s""",
            (schema,),
        ).fetchall()
    return {
        "columns": {(t, c): [x.replace(schema + ".", "") if isinstance(x, str) else x for x in rest] for t, c, *rest in cols},
        "indexes": {(t, i): d for t, i, d in idx},
        "constraints": {(t, n): d.replace(schema + ".", "") for t, n, d in cons},
    }


def _official(database_url: str) -> dict:
    text = open(os.path.join(CORPUS, "small", "db", "schema.sql")).read()
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
        c.execute(text)
    return _describe(database_url, "appview_small")


def test_migrated_schema_equals_official_schema_sql(database_url):
    expected = _official(database_url)
    migrate(database_url, "mine")
    got = _describe(database_url, "mine")
    diffs = []
    for kind in ("columns", "indexes", "constraints"):
        for key, val in expected[kind].items():
            if key not in got[kind]:
                diffs.append(f"missing {kind[:-1]} {key}")
            elif got[kind][key] != val:
                diffs.append(f"{kind[:-1]} {key}: {got[kind][key]!r} != official {val!r}")
        for key in got[kind]:
            if key not in expected[kind] and key[0] not in ADDITIVE_TABLES and key not in ADDITIVE_COLUMNS | ADDITIVE_INDEXES:
                diffs.append(f"extra {kind[:-1]} {key}")
    assert diffs == []


def test_migrations_are_idempotent_and_recorded(database_url):
    first = migrate(database_url, "bsky")
    assert first[0] == "0001_official_schema"
    assert migrate(database_url, "bsky") == []
    with psycopg.connect(database_url) as c:
        n = c.execute("SELECT count(*) FROM bsky.kysely_migration").fetchone()[0]
    assert n == 61


def test_an_official_schema_is_adopted_not_recreated(database_url):
    _official(database_url)
    applied = migrate(database_url, "appview_small")
    assert applied[0] == "0002_fleet_columns" and "0001_official_schema" not in applied


def test_official_seed_rows_are_inserted_once(database_url):
    migrate(database_url, "bsky")
    migrate(database_url, "bsky")
    with psycopg.connect(database_url) as c:
        rows = c.execute("SELECT name, value FROM bsky.view_param ORDER BY name").fetchall()
    assert rows == [("whats_hot_interval", "1day"), ("whats_hot_like_threshold", "2")]
