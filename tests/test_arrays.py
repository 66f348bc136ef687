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


def test_a_string_list_gets_the_key_and_oid_psycopgs_scan_gives_in_text():
    from psycopg.adapt import PyFormat, Transformer

    fast = Transformer()
    for values in (["a", "b"], ["a", None], [None, "a"]):
        d = fast.get_dumper(values, PyFormat.TEXT)
        assert isinstance(d, arrays.FastListDumper)
        assert d.oid == 0  # unknown, as psycopg's own ListDumper gives for str elements
        assert d.get_key(values, PyFormat.TEXT) == (list, str)
    d = fast.get_dumper([None, "a"], PyFormat.AUTO)  # first element not a string: text, as before
    assert isinstance(d, arrays.FastListDumper) and d.oid == 0


def test_a_string_list_in_percent_s_is_sent_as_a_binary_varchar_array(conn):
    from psycopg.adapt import PyFormat, Transformer

    d = Transformer().get_dumper(["a", None], PyFormat.AUTO)
    assert isinstance(d, arrays.BinaryStrListDumper)
    assert d.oid == arrays.VARCHAR_ARRAY_OID and d.format == psycopg.pq.Format.BINARY
    assert conn.execute("SELECT pg_typeof(%s)::text", (["a", "b"],)).fetchone()[0] == "character varying[]"
    # the exact bytes of array_send: 1 dimension, no nulls, varchar elements, 2 elements from 1
    assert d.dump(["ab", ""]) == b"\0\0\0\x01\0\0\0\0\0\0\x04\x13\0\0\0\x02\0\0\0\x01\0\0\0\x02ab\0\0\0\0"
    assert d.dump(["a", None]) == b"\0\0\0\x01\0\0\0\x01\0\0\x04\x13\0\0\0\x02\0\0\0\x01\0\0\0\x01a\xff\xff\xff\xff"


def test_binary_string_lists_round_trip_long_unicode_and_null(conn):
    long = ["x" * 5000, "ü" * 3000, "short"]  # lengths past the 4 KiB table, multi-byte UTF-8
    for values in (long, STRINGS, [*STRINGS, None, ""], ["a", None, None, "b"], ["only"]):
        assert _roundtrip(conn, values, "varchar[]") == values
        assert _roundtrip(conn, values, "text[]") == values
    got = conn.execute("SELECT u FROM unnest(%s::varchar[]) WITH ORDINALITY AS t(u, o) ORDER BY o", (long,)).fetchall()
    assert [r[0] for r in got] == long
    assert conn.execute("SELECT 'b'::text = ANY(%s)", (["a", "b"],)).fetchone()[0] is True
