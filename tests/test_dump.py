"""The canonical dump reproduces the corpus's own files from the corpus's own rows."""

import datetime as dt
import os

import psycopg
import pytest

from fleet.db import dump
from fleet.db.migrate import migrate

from conftest import CORPUS


@pytest.mark.parametrize("corpus", ["small", "edge"])
def test_dump_of_expected_rows_equals_corpus_raw_and_normalized_files(database_url, corpus, tmp_path):
    db_dir = os.path.join(CORPUS, corpus, "db")
    spec = dump.load_spec(os.path.join(db_dir, "tables.json"))
    migrate(database_url, "loaded")
    dump.load_rows(database_url, "loaded", db_dir, spec)
    d = dump.dump(database_url, "loaded", spec)

    raw = dump.compare(d.raw, db_dir, spec)
    assert all(x.ok for x in raw.values()), dump.format_report(raw)
    assert d.raw == dump.read_dir(db_dir), "raw dump is not in the corpus's row order"

    norm = dump.compare(d.normalized, os.path.join(CORPUS, corpus, "db-normalized"), spec)
    assert all(x.ok for x in norm.values()), dump.format_report(norm)
    assert set(norm) == set(d.normalized), "normalised dump has other tables than db-normalized/"

    # our additive column and table are reported, not dumped
    assert "rev" in d.extra_columns["record"]
    assert "fleet_migration" in d.extra_tables

    dump.write(d, str(tmp_path))
    assert dump.read_dir(str(tmp_path / "db-normalized")) == dump.read_dir(os.path.join(CORPUS, corpus, "db-normalized"))


def test_compare_names_missing_extra_and_changed_rows():
    spec = dump.Spec({"t": dump.TableSpec("t", ["k", "v"], ["k"])})
    expected = {"t": ['{"k":"a","v":1}', '{"k":"b","v":2}']}
    got = {"t": ['{"k":"a","v":1}', '{"k":"b","v":3}', '{"k":"c","v":4}']}
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "t.jsonl"), "w") as f:
            f.write("".join(x + "\n" for x in expected["t"]))
        diffs = dump.compare(got, d, spec)
    t = diffs["t"]
    assert not t.ok
    assert t.missing == ['{"k":"b","v":2}']
    assert t.extra == ['{"k":"b","v":3}', '{"k":"c","v":4}']
    assert t.changed == [('["b"]', {"v": (2, 3)})]
    report = dump.format_report(diffs)
    assert "DIFFERS" in report and "changed" in report and '+ {"k":"c","v":4}' in report


def test_canonical_values_follow_the_corpus_format(database_url):
    with psycopg.connect(database_url) as c:
        c.execute(
            "CREATE TABLE v (id bigint PRIMARY KEY, big bigint, ts timestamptz, b bytea, j jsonb, s text, f boolean)"
        )
        c.execute(
            "INSERT INTO v VALUES (1, %s, %s, %s, %s, %s, false)",
            (
                2**60,
                dt.datetime(2025, 3, 2, 14, 40, 57, 123000, tzinfo=dt.timezone(dt.timedelta(hours=2))),
                b"\x01\xab",
                psycopg.types.json.Jsonb({"z": 1, "a": {"y": [1, {"c": 1, "b": 2}], "x": None}}),
                "日本 / \"q\"",
            ),
        )
        c.commit()
    d = dump.dump(database_url, "public")
    assert d.raw["v"] == [
        '{"id":1,"big":"1152921504606846976","ts":"2025-03-02T12:40:57.123Z","b":"x:01ab",'
        '"j":{"a":{"x":null,"y":[1,{"b":2,"c":1}]},"z":1},"s":"日本 / \\"q\\"","f":false}'
    ]


def test_normalization_masks_sortat_only_when_volatile():
    rows = [
        {"uri": "a", "createdAt": "2025-01-01T00:00:00.000Z", "indexedAt": "2026-01-01T00:00:00.000Z", "sortAt": "2025-01-01T00:00:00.000Z"},
        {"uri": "b", "createdAt": "2027-01-01T00:00:00.000Z", "indexedAt": "2026-01-01T00:00:00.000Z", "sortAt": "2026-01-01T00:00:00.000Z"},
    ]
    assert dump.normalize_rows("post", rows, None) == [
        '{"uri":"a","createdAt":"2025-01-01T00:00:00.000Z","indexedAt":"<ts>","sortAt":"2025-01-01T00:00:00.000Z"}',
        '{"uri":"b","createdAt":"2027-01-01T00:00:00.000Z","indexedAt":"<ts>","sortAt":"<ts>"}',
    ]
    notifs = [
        {"id": 7, "sortAt": "2026-11-22T05:23:23.500Z"},
        {"id": 8, "sortAt": "2025-03-02T12:20:21.000Z"},
    ]
    assert dump.normalize_rows("notification", notifs, "2026-11-22T05:23:23.423Z") == [
        '{"id":"<seq>","sortAt":"2025-03-02T12:20:21.000Z"}',
        '{"id":"<seq>","sortAt":"<ts>"}',
    ]
    assert dump.normalize_rows("notification", notifs, "2026-11-22T05:23:23.423Z", dump.SERIAL_RULES)[0].startswith(
        '{"id":"<seq>","sortAt":"2025'
    )
