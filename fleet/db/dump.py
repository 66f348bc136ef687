"""Canonical dump of an AppView schema, and comparison with a corpus's expected tables.

The format is the corpus's (``corpus/<name>/db/NORMALIZATION.md``): one JSON object per row
and line, columns in table order, timestamps as ISO strings, bigint as JSON numbers (strings
beyond 2^53), jsonb with keys sorted, bytea as ``"x:<hex>"``. The raw dump (``db/``) is sorted
by primary key; the normalised dump (``db-normalized/``) masks volatile values (``MASK_RULES``)
and is re-sorted by JSON text.

    from fleet.db import dump
    spec = dump.load_spec("tests/fixtures/corpus/small/db/tables.json")
    d = dump.dump(database_url, "bsky", spec)
    dump.write(d, "out/")                       # out/db/*.jsonl, out/db-normalized/*.jsonl
    diffs = dump.compare(d.normalized, "tests/fixtures/corpus/small/db-normalized", spec)
    print(dump.format_report(diffs))

``python -m fleet.db.dump --database-url URL --schema S --tables corpus/db/tables.json --out DIR
[--compare corpus/db-normalized]`` does the same from the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

# Column treatments of NORMALIZATION.md: "*" applies to every table; a table entry overrides.
MASK_RULES: dict[str, dict[str, str]] = {
    "*": {
        "indexedAt": "ts",
        "sortAt": "sortAt",
        "sortedAt": "sortAt",
        "updatedAt": "ts",
        "deletedAt": "ts",
        "lastSeen": "ts",
    },
    "notification": {"id": "seq"},
    "did_cache": {"updatedAt": "ts", "doc": "drop"},
    "moderation_action": {"id": "seq"},
    "moderation_event": {"id": "seq"},
    "moderation_report": {"id": "seq"},
    "moderation_subject_status": {"id": "seq"},
    "subscription": {"state": "drop"},
}
# Only what the database itself generates (serial ids, cursor bookkeeping): the rules for
# comparing firehose-carried rows with the raw db/ dump, indexedAt included.
SERIAL_RULES: dict[str, dict[str, str]] = {
    t: {c: r for c, r in cols.items() if r in ("seq", "drop")} for t, cols in MASK_RULES.items() if t != "*"
}
OMITTED_FROM_NORMALIZED = ("kysely_migration", "kysely_migration_lock")
MAX_SAFE_INT = 2**53 - 1


@dataclass
class TableSpec:
    name: str
    columns: list[str]
    primary_key: list[str]


@dataclass
class Spec:
    tables: dict[str, TableSpec]
    volatile_after: str | None = None


@dataclass
class Dump:
    raw: dict[str, list[str]]  # table -> lines, sorted by primary key
    normalized: dict[str, list[str]]  # table -> masked lines, sorted by text
    extra_tables: list[str] = field(default_factory=list)  # in the schema, not in the spec
    extra_columns: dict[str, list[str]] = field(default_factory=dict)  # additive columns left out


def load_spec(tables_json: str) -> Spec:
    """Tables, columns (in order) and primary keys from a corpus's ``db/tables.json``."""
    with open(tables_json, encoding="utf-8") as f:
        data = json.load(f)
    tables = {
        name: TableSpec(name, [c["name"] for c in t["columns"]], list(t.get("primaryKey") or []))
        for name, t in data["tables"].items()
    }
    return Spec(tables, data.get("volatileAfter"))


def spec_from_database(conn: psycopg.Connection, schema: str) -> Spec:
    """The spec of whatever tables ``schema`` holds (when no corpus spec is at hand)."""
    cols = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
        "ORDER BY table_name, ordinal_position",
        (schema,),
    ).fetchall()
    pks = conn.execute(
        """SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc
           JOIN information_schema.key_column_usage kcu
             ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
           WHERE tc.table_schema = %s AND tc.constraint_type = 'PRIMARY KEY'
           ORDER BY tc.table_name, kcu.ordinal_position""",
        (schema,),
    ).fetchall()
    tables: dict[str, TableSpec] = {}
    for t, c in cols:
        tables.setdefault(t, TableSpec(t, [], [])).columns.append(c)
    for t, c in pks:
        tables[t].primary_key.append(c)
    return Spec(tables)


# -- values -----------------------------------------------------------------------------------


def _iso(ts: dt.datetime) -> str:
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.timezone.utc).replace(tzinfo=None)
    frac = f"{ts.microsecond // 1000:03d}" if ts.microsecond % 1000 == 0 else f"{ts.microsecond:06d}"
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"


def _sorted_json(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _sorted_json(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sorted_json(x) for x in v]
    return v


def canonical_value(v: Any, is_json: bool = False) -> Any:
    """A database value as the corpus writes it in JSON."""
    if v is None:
        return None
    if is_json:
        return _sorted_json(v)
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if -MAX_SAFE_INT <= v <= MAX_SAFE_INT else str(v)
    if isinstance(v, decimal.Decimal):
        return canonical_value(int(v)) if v == v.to_integral_value() else str(v)
    if isinstance(v, dt.datetime):
        return _iso(v)
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "x:" + bytes(v).hex()
    return v


def line(row: Mapping[str, Any]) -> str:
    """The canonical JSON text of one row (keys in the row's order)."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


# -- dumping ----------------------------------------------------------------------------------


def dump_table(conn: psycopg.Connection, schema: str, table: TableSpec) -> list[dict[str, Any]]:
    """Every row of ``table`` as canonical values, columns in spec order, sorted by primary key."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    q = sql.SQL("SELECT {} FROM {}.{}").format(cols, sql.Identifier(schema), sql.Identifier(table.name))
    with conn.cursor() as cur:
        cur.execute(q)
        json_cols = {d.name for d in cur.description or [] if d.type_code in (114, 3802)}  # json, jsonb
        rows = [
            {c: canonical_value(v, c in json_cols) for c, v in zip(table.columns, r)} for r in cur.fetchall()
        ]
    return sort_raw(rows, table.primary_key)


def _key_part(v: Any) -> tuple:
    return (0, "") if v is None else ((1, v) if isinstance(v, (int, float)) else (2, str(v)))


def sort_raw(rows: list[dict[str, Any]], primary_key: list[str]) -> list[dict[str, Any]]:
    """Rows by primary key (then by text), as the corpus's raw ``db/`` files are sorted."""
    return sorted(rows, key=lambda r: (tuple(_key_part(r.get(k)) for k in primary_key), line(r)))


def normalize_rows(
    table: str,
    rows: Iterable[Mapping[str, Any]],
    volatile_after: str | None,
    rules: Mapping[str, Mapping[str, str]] = MASK_RULES,
) -> list[str]:
    """Masked lines of ``table``, re-sorted by their JSON text (NORMALIZATION.md)."""
    treat = {**rules.get("*", {}), **rules.get(table, {})}
    out = []
    for row in rows:
        masked: dict[str, Any] = {}
        for col, v in row.items():
            how = treat.get(col)
            if how == "drop":
                continue
            if how in ("ts", "seq") and v is not None:
                v = "<ts>" if how == "ts" else "<seq>"
            elif how == "sortAt" and v is not None:
                # Volatile when it is the row's indexedAt, or a clock time of the recording
                # itself (a createdAt stamped during seeding, or a table without indexedAt).
                if ("indexedAt" in row and v == row["indexedAt"]) or (
                    volatile_after is not None and str(v) >= volatile_after
                ):
                    v = "<ts>"
            masked[col] = v
        out.append(line(masked))
    out.sort()
    return out


def dump(database_url: str, schema: str, spec: Spec | None = None) -> Dump:
    """Dump every table of ``spec`` (default: every table of ``schema``) raw and normalised.

    Columns the schema has beyond the spec (our additive ones, e.g. ``record.rev``) are left
    out so the dump compares with the official one; they and extra tables are reported.
    """
    with psycopg.connect(database_url) as conn:
        present = spec_from_database(conn, schema)
        spec = spec or present
        raw: dict[str, list[str]] = {}
        normalized: dict[str, list[str]] = {}
        extra_columns: dict[str, list[str]] = {}
        for name, table in spec.tables.items():
            if name not in present.tables:
                raise LookupError(f"table {schema}.{name} does not exist")
            rows = dump_table(conn, schema, table)
            raw[name] = [line(r) for r in rows]
            if name not in OMITTED_FROM_NORMALIZED:
                normalized[name] = normalize_rows(name, rows, spec.volatile_after)
            more = [c for c in present.tables[name].columns if c not in table.columns]
            if more:
                extra_columns[name] = more
        extra_tables = sorted(set(present.tables) - set(spec.tables))
    return Dump(raw, normalized, extra_tables, extra_columns)


def write(d: Dump, out_dir: str) -> None:
    """``out_dir/db/<table>.jsonl`` and ``out_dir/db-normalized/<table>.jsonl`` (empty tables: empty files)."""
    for sub, tables in (("db", d.raw), ("db-normalized", d.normalized)):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
        for name, lines in tables.items():
            with open(os.path.join(out_dir, sub, name + ".jsonl"), "w", encoding="utf-8") as f:
                f.write("".join(x + "\n" for x in lines))


def read_dir(path: str) -> dict[str, list[str]]:
    """``<table>.jsonl`` files of a dump directory -> {table: lines}."""
    out = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".jsonl"):
            with open(os.path.join(path, name), encoding="utf-8") as f:
                out[name[:-6]] = f.read().splitlines()
    return out


# -- loading (tests, tools) -----------------------------------------------------------------


def load_rows(database_url: str, schema: str, db_dir: str, spec: Spec) -> dict[str, int]:
    """Insert a corpus's raw ``db/<table>.jsonl`` rows into a migrated ``schema``; {table: rows}."""
    counts = {}
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
        info = conn.execute(
            "SELECT table_name || '.' || column_name, data_type, is_generated FROM information_schema.columns "
            "WHERE table_schema = %s",
            (schema,),
        ).fetchall()
        types = {k: t for k, t, _ in info}
        generated = {k for k, _, g in info if g == "ALWAYS"}  # e.g. sortAt: computed by Postgres
        for name, table in spec.tables.items():
            path = os.path.join(db_dir, name + ".jsonl")
            if not os.path.exists(path):
                continue
            with open(path, encoding="utf-8") as f:
                rows = [json.loads(x) for x in f if x.strip()]
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(name)))
            if not rows:
                counts[name] = 0
                continue
            columns = [c for c in table.columns if f"{name}.{c}" not in generated]
            is_json = [types.get(f"{name}.{c}") in ("json", "jsonb") for c in columns]
            q = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(name),
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                sql.SQL(", ").join(sql.Placeholder() for _ in columns),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    q,
                    [
                        [Jsonb(r[c]) if j and r[c] is not None else r[c] for c, j in zip(columns, is_json)]
                        for r in rows
                    ],
                )
            counts[name] = len(rows)
        conn.commit()
    return counts


# -- comparing --------------------------------------------------------------------------------


@dataclass
class TableDiff:
    table: str
    expected: int
    got: int
    missing: list[str]  # expected lines absent from ours
    extra: list[str]  # our lines absent from the expected
    changed: list[tuple[str, dict[str, tuple[Any, Any]]]] = field(default_factory=list)  # key -> {col: (expected, got)}

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


def _pair_changes(missing: list[str], extra: list[str], pk: list[str]) -> list[tuple[str, dict[str, tuple[Any, Any]]]]:
    """Missing and extra rows with the same (unmasked) primary key, shown column by column."""
    if not pk:
        return []

    def key(r: dict[str, Any]) -> str | None:
        vals = [r.get(k) for k in pk]
        if any(v in ("<ts>", "<seq>") for v in vals):
            return None
        return json.dumps(vals, ensure_ascii=False)

    got = {}
    for x in extra:
        r = json.loads(x)
        k = key(r)
        if k is not None:
            got.setdefault(k, r)
    out = []
    for x in missing:
        r = json.loads(x)
        k = key(r)
        if k is not None and k in got:
            g = got[k]
            cols = {c: (r.get(c), g.get(c)) for c in {**r, **g} if r.get(c) != g.get(c)}
            out.append((k, cols))
    return out


def compare(
    got: str | Mapping[str, list[str]],
    expected_dir: str,
    spec: Spec | None = None,
    tables: Iterable[str] | None = None,
) -> dict[str, TableDiff]:
    """Compare a dump (a directory of ``.jsonl`` files or {table: lines}) with ``expected_dir``.

    Rows are compared as a multiset of JSON lines; every expected table is compared (a table
    missing from ``got`` counts as empty). ``tables`` restricts the comparison.
    """
    ours = read_dir(got) if isinstance(got, str) else dict(got)
    theirs = read_dir(expected_dir)
    names = list(tables) if tables is not None else sorted(theirs)
    out = {}
    for name in names:
        exp = Counter(theirs.get(name, []))
        have = Counter(ours.get(name, []))
        missing = sorted((exp - have).elements())
        extra = sorted((have - exp).elements())
        pk = spec.tables[name].primary_key if spec and name in spec.tables else []
        out[name] = TableDiff(
            name, sum(exp.values()), sum(have.values()), missing, extra, _pair_changes(missing, extra, pk)
        )
    return out


CLOCK_VALUE = "<clock>"


def mask_clock_values(tables: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Mask the values the official indexer takes from its wall clock, in a dump's JSON lines.

    No replay can reproduce them, so both sides are masked before comparing:
    - ``profile.createdAt`` of a profile record without ``createdAt``: the official plugin
      stores ``new Date()`` at indexing; we store the event's time (the closest reproducible
      value);
    - ``op_thread_reply.deletedAt``: the official sets ``new Date()`` when the reply is
      deleted; we use the delete event's time.
    Everything else is left as it is. Works on raw and normalised dumps alike.
    """
    out = dict(tables)
    clock_profiles = set()
    for text in tables.get("record", []):
        if "app.bsky.actor.profile/self" not in text:
            continue
        row = json.loads(text)
        if not str(row.get("uri", "")).endswith("/app.bsky.actor.profile/self"):
            continue
        try:
            rec = json.loads(row.get("json") or "{}")
        except ValueError:
            continue
        if not isinstance(rec, dict) or "createdAt" not in rec:
            clock_profiles.add(row["uri"])

    def remask(table: str, fn) -> None:
        if table in tables:
            rows = [json.loads(x) for x in tables[table]]
            out[table] = sorted(line(fn(r)) for r in rows)

    def profile(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("uri") in clock_profiles and r.get("createdAt") is not None:
            r["createdAt"] = CLOCK_VALUE
        return r

    def op_reply(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("deletedAt") is not None:
            r["deletedAt"] = CLOCK_VALUE
        return r

    remask("profile", profile)
    remask("op_thread_reply", op_reply)
    return out


def format_report(diffs: Mapping[str, TableDiff], show: int = 5, width: int = 240) -> str:
    """A per-table result table, then the first ``show`` differences of each differing table."""
    lines = [f"{'table':32} {'expected':>8} {'got':>8} {'missing':>8} {'extra':>8}  result"]
    for name, d in diffs.items():
        lines.append(
            f"{name:32} {d.expected:8} {d.got:8} {len(d.missing):8} {len(d.extra):8}  {'ok' if d.ok else 'DIFFERS'}"
        )
    for name, d in diffs.items():
        if d.ok:
            continue
        lines.append(f"\n== {name}: {len(d.missing)} missing, {len(d.extra)} extra")
        paired = set()
        for key, cols in d.changed[:show]:
            paired.add(key)
            lines.append(f"  changed {key}: " + ", ".join(f"{c}: {e!r} -> {g!r}" for c, (e, g) in cols.items())[:width])
        for x in d.missing[:show]:
            lines.append("  - " + x[:width])
        for x in d.extra[:show]:
            lines.append("  + " + x[:width])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fleet.db.dump", description="canonical dump of an AppView schema")
    p.add_argument("--database-url", required=True)
    p.add_argument("--schema", default="bsky")
    p.add_argument("--tables", help="corpus db/tables.json (default: every table of the schema)")
    p.add_argument("--out", help="write OUT/db and OUT/db-normalized")
    p.add_argument("--compare", help="a db-normalized/ directory to compare the normalised dump with")
    a = p.parse_args(argv)
    spec = load_spec(a.tables) if a.tables else None
    d = dump(a.database_url, a.schema, spec)
    if a.out:
        write(d, a.out)
    if a.compare:
        diffs = compare(d.normalized, a.compare, spec)
        print(format_report(diffs))
        return 0 if all(x.ok for x in diffs.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
