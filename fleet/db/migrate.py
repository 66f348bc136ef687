"""Schema migrations: the official AppView schema plus our additive changes.

Migrations are the ``migrations/NNNN_name.sql`` files, applied in order, each once, in one
transaction, under an advisory lock (several processes may start at once). They run with
``search_path`` set to the target schema, so the schema name is configuration. Applying them
again is a no-op. A schema already created by the official AppView (it has
``kysely_migration`` but not ``fleet_migration``) is adopted: 0001 is recorded as applied.

    python -m fleet.db.migrate --database-url URL --schema bsky
"""

from __future__ import annotations

import argparse
import os
import sys

import psycopg
from psycopg import sql

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")
LOCK_ID = 0x72736B79  # "rsky"


def migration_files() -> list[tuple[str, str]]:
    names = sorted(f for f in os.listdir(MIGRATIONS_DIR) if f.endswith(".sql"))
    return [(n[:-4], os.path.join(MIGRATIONS_DIR, n)) for n in names]


def migrate(database_url: str, schema: str) -> list[str]:
    """Apply pending migrations to ``schema``; returns the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
            official = conn.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'kysely_migration'",
                (schema,),
            ).fetchone()
            ours = conn.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'fleet_migration'",
                (schema,),
            ).fetchone()
            conn.execute(
                'CREATE TABLE IF NOT EXISTS fleet_migration (name text PRIMARY KEY, "appliedAt" timestamptz NOT NULL DEFAULT now())'
            )
            if official and not ours:
                conn.execute("INSERT INTO fleet_migration (name) VALUES ('0001_official_schema') ON CONFLICT DO NOTHING")
            done = {r[0] for r in conn.execute("SELECT name FROM fleet_migration")}
            for name, path in migration_files():
                if name in done:
                    continue
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                with conn.transaction():
                    conn.execute(text)  # type: ignore[arg-type]  # trusted file of the package
                    conn.execute("INSERT INTO fleet_migration (name) VALUES (%s)", (name,))
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    return applied_now


def main(argv: list[str] | None = None) -> int:
    from .. import exitcodes
    from ..config import ConfigError, load

    p = argparse.ArgumentParser(prog="rsky-migrate", description="apply the AppView schema migrations")
    p.add_argument("--database-url")
    p.add_argument("--schema")
    a = p.parse_args(argv)
    try:
        cfg = load()
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    url = a.database_url or cfg.DATABASE_URL
    schema = a.schema or cfg.DATABASE_SCHEMA
    try:
        names = migrate(url, schema)
    except psycopg.OperationalError as e:
        print(f"cannot reach PostgreSQL: {e}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    print(f"schema={schema} applied={','.join(names) or 'nothing (up to date)'}")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
