"""A faster text dumper for the flat arrays the indexing sends (``unnest(%s::varchar[], ...)``).

psycopg dumps a Python list element by element in Python: about 130 ns per string element in
binary (``%b``) and 3 µs in text (``%s``); a 500-event batch sends some 16,000 elements.
Arrays of strings and of integers are built here with a few C-level string operations instead
(about 80 ns per element with psycopg's own per-parameter work). PostgreSQL parses a text array
somewhat more slowly than a binary one; on the bulk indexing mix the two came out equal or in
favour of text (``tools/bench_indexing_path.py``, alternating runs), and the indexer process
is the busier side. The rules:

* ``["a", 'b"c']`` -> ``{"a","b\\"c"}``: every element quoted, ``\\`` and ``"`` escaped
  (PostgreSQL's array input rules); an empty string stays ``""``, never NULL;
* ``[1, 2]`` -> ``{1,2}``; ``[True, False]`` -> ``{True,False}`` (valid boolean input);
* a list of only ``None`` -> ``{NULL,...}``; strings and ``None`` mixed (a reply's parent
  beside posts without one) -> ``{"a",NULL}``, element by element (~0.2 µs each instead of
  psycopg's ~3 µs).

Anything else (``None`` among numbers, nested lists, other types, a string holding NUL) goes
to psycopg's own ``ListDumper``, so errors stay psycopg's (a NUL is still refused with its
"0x00" message, which ``fleet.indexing.rejected`` relies on).

Per parameter psycopg also asks the dumper for a key (``get_key``), which for a list scans
every element for its types; a list whose first element is a string gets psycopg's key for
string lists at once (the same key and the same oid, unknown, that the scan gives; a list
that is not all strings and ``None`` then fails in ``dump`` with psycopg's own error).

``install()`` registers the dumper for ``list`` in text format (and so for ``%s``) on
psycopg's global adapters; connections opened afterwards use it. ``fleet.db.pool`` and
``fleet.indexing`` call it at import.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg._encodings import conn_encoding
from psycopg.abc import AdaptContext, DumperKey
from psycopg.adapt import PyFormat
from psycopg.types.array import ListDumper

_SEP = "\x00"  # PostgreSQL text never holds NUL, so it cannot be inside an element


class FastListDumper(ListDumper):
    def __init__(self, cls: type, context: AdaptContext | None = None):
        super().__init__(cls, context)
        enc = conn_encoding(self.connection)
        self._encoding = enc if enc != "ascii" else "utf-8"
        self._str_keys: dict[PyFormat, DumperKey] = {}

    def get_key(self, obj: list[Any], format: PyFormat) -> DumperKey:
        if obj and type(obj[0]) is str:
            key = self._str_keys.get(format)
            if key is None:
                key = self._str_keys[format] = super().get_key([""], format)
            return key
        return super().get_key(obj, format)

    def dump(self, obj: list[Any]) -> bytes | None:  # type: ignore[override]
        n = len(obj)
        if not n:
            return b"{}"
        first = obj[0]
        if type(first) is str:
            try:
                s = _SEP.join(obj)
            except TypeError:  # a None or another type among the strings
                return self._with_nulls(obj)
            if s.count(_SEP) != n - 1:  # an element holds NUL: psycopg refuses it
                return self._psycopg(obj)
            if "\\" in s:
                s = s.replace("\\", "\\\\")
            if '"' in s:
                s = s.replace('"', '\\"')
            return ('{"' + s.replace(_SEP, '","') + '"}').encode(self._encoding)
        if type(first) in (int, bool) and set(map(type, obj)) == {type(first)}:
            return ("{" + ",".join(map(str, obj)) + "}").encode()
        if first is None:
            if obj.count(None) == n:
                return ("{" + ",".join(["NULL"] * n) + "}").encode()
            return self._with_nulls(obj)
        return self._psycopg(obj)

    def _with_nulls(self, obj: list[Any]) -> bytes | None:
        """Strings and ``None``; anything else to psycopg."""
        parts = []
        for v in obj:
            if v is None:
                parts.append("NULL")
            elif type(v) is str and "\x00" not in v:
                if "\\" in v:
                    v = v.replace("\\", "\\\\")
                if '"' in v:
                    v = v.replace('"', '\\"')
                parts.append('"' + v + '"')
            else:
                return self._psycopg(obj)
        return ("{" + ",".join(parts) + "}").encode(self._encoding)

    def _psycopg(self, obj: list[Any]) -> bytes | None:
        """psycopg's own dumper for ``obj`` (its errors included: mixed types, NUL)."""
        return ListDumper(list, self._tx).upgrade(obj, PyFormat.TEXT).dump(obj)  # type: ignore[return-value]


_installed = False


def install() -> None:
    """Use ``FastListDumper`` for lists passed with ``%s`` / ``%t`` (idempotent)."""
    global _installed
    if not _installed:
        psycopg.adapters.register_dumper(list, FastListDumper)
        _installed = True


install()
