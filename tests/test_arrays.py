"""fleet/db/arrays.py: the fast list dumper round-trips through a real PostgreSQL as psycopg's own."""

from __future__ import annotations

import psycopg
import pytest

from fleet.db import arrays

STRINGS = ["plain", "", 'quote " inside', "back\\slash", "both \\\" mixed", "{braces}", "comma,here", "NULL", "null",
           " spaced ", "tab\there", "new\nline", "ünïcödé ✓ 𝄞", "at://did:plc:abc/app.bsky.feed.like/3l"]  # fmt: skip


@pytest.fixture
def conn(database_url):
    arrays.install()
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def _roundtrip(conn, values, cast: str):
    return conn.execute(f"SELECT %s::{cast}", (values,)).fetchone()[0]


def test_strings_round_trip_exactly_with_every_character_postgres_array_syntax_cares_about(conn):
    assert _roundtrip(conn, STRINGS, "varchar[]") == STRINGS
    assert _roundtrip(conn, STRINGS, "text[]") == STRINGS
    got = conn.execute("SELECT u FROM unnest(%s::varchar[]) WITH ORDINALITY AS t(u, o) ORDER BY o", (STRINGS,)).fetchall()
    assert [r[0] for r in got] == STRINGS


def test_the_empty_string_is_not_null_and_null_is_null(conn):
    assert _roundtrip(conn, ["", "x"], "varchar[]") == ["", "x"]
    assert _roundtrip(conn, [None, None], "varchar[]") == [None, None]
    assert _roundtrip(conn, ["a", None, ""], "varchar[]") == ["a", None, ""]  # mixed: psycopg's own dumper


def test_integers_and_booleans(conn):
    big = [0, -1, 2**62, -(2**62), 7]
    assert _roundtrip(conn, big, "bigint[]") == big
    assert _roundtrip(conn, [1, 2, 3], "int[]") == [1, 2, 3]
    assert _roundtrip(conn, [True, False, True], "bool[]") == [True, False, True]
    assert _roundtrip(conn, [], "varchar[]") == []


def test_a_nul_character_is_refused_as_psycopg_refuses_it(conn):
    with pytest.raises(psycopg.DataError, match="0x00"):
        _roundtrip(conn, ["ok", "bad\x00byte"], "varchar[]")


def test_the_dumper_is_the_fast_one():
    d = arrays.FastListDumper(list)
    assert d.dump(['a"b', "c\\d", ""]) == b'{"a\\"b","c\\\\d",""}'
    assert d.dump([1, 22, -3]) == b"{1,22,-3}"
    assert d.dump([None, None]) == b"{NULL,NULL}"


def test_strings_mixed_with_null_round_trip(conn):
    values = [None, *STRINGS, None, "x", None]
    assert _roundtrip(conn, values, "varchar[]") == values
    assert _roundtrip(conn, ["a", None, ""], "varchar[]") == ["a", None, ""]
    d = arrays.FastListDumper(list)
    assert d.dump(["a", None, 'b"']) == b'{"a",NULL,"b\\""}'
    assert d.dump([None, "c\\d"]) == b'{NULL,"c\\\\d"}'


def test_mixed_types_and_nul_after_null_keep_psycopgs_errors(conn):
    with pytest.raises(psycopg.DataError, match="0x00"):
        _roundtrip(conn, [None, "bad\x00byte"], "varchar[]")
    with pytest.raises(psycopg.DataError, match="mixed types"):
        _roundtrip(conn, ["a", 1], "varchar[]")
    with pytest.raises(psycopg.DataError, match="mixed types"):
        _roundtrip(conn, [None, "a", 1], "varchar[]")


def test_a_string_list_gets_the_key_and_oid_psycopgs_scan_gives():
    from psycopg.adapt import PyFormat, Transformer

    fast = Transformer()
    for fmt in (PyFormat.AUTO, PyFormat.TEXT):
        for values in (["a", "b"], ["a", None], [None, "a"]):
            d = fast.get_dumper(values, fmt)
            assert isinstance(d, arrays.FastListDumper)
            assert d.oid == 0  # unknown, as psycopg's own ListDumper gives for str elements
            assert d.get_key(values, fmt) == (list, str)
