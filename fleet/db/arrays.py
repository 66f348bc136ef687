"""Faster dumpers for the flat arrays the indexing sends (``unnest(%s::varchar[], ...)``).

psycopg dumps a Python list element by element in Python: about 130 ns per string element in
binary (``%b``) and 3 µs in text (``%t``); a 500-event batch sends some 25,000 elements.

**String lists in ``%s``** (the first element a string) go as a binary ``varchar[]``
(``BinaryStrListDumper``): a header, then per element a length word (from a table for the
common lengths) and its UTF-8 bytes, about 90 ns per element. PostgreSQL then copies each
element instead of scanning it for quotes and escapes: on the benchmark mix the backend ran
6.6 % fewer instructions per event (``array_in`` had been 12 % of them) for 1.5 % more in the
indexer (callgrind, 2026-12-04). ``None`` elements are NULLs; a string holding NUL, or another
type among the strings, goes to psycopg's own text dumper for its error (the "0x00" message
``fleet.indexing.rejected`` relies on, "mixed types").

**Everything else** (``%t``, integer and boolean lists, lists starting with ``None``) is built
as text with a few C-level string operations (about 55 ns per element):

* ``["a", 'b"c']`` -> ``{"a","b\\"c"}``: every element quoted, ``\\`` and ``"`` escaped
  (PostgreSQL's array input rules); an empty string stays ``""``, never NULL;
* ``[1, 2]`` -> ``{1,2}``; ``[True, False]`` -> ``{True,False}`` (valid boolean input);
* a list of only ``None`` -> ``{NULL,...}``; strings and ``None`` mixed (a reply's parent
  beside posts without one) -> ``{"a",NULL}``, element by element (~0.2 µs each instead of
  psycopg's ~3 µs).

Anything else (``None`` among numbers, nested lists, other types, a string holding NUL) goes
to psycopg's own ``ListDumper``, so errors stay psycopg's.

Per parameter psycopg also asks the dumper for a key (``get_key``), which for a list scans
every element for its types; a list whose first element is a string gets a key at once: the
binary dumper's in ``%s``, psycopg's key for string lists in ``%t`` (the same key and the same
oid, unknown, that the scan gives; a list that is not all strings and ``None`` then fails in
``dump`` with psycopg's own error).

``install()`` registers ``FastListDumper`` for ``list`` in text format (and so for ``%s``,
where it hands string lists to the binary dumper) on psycopg's global adapters; connections
opened afterwards use it. ``fleet.db.pool`` and ``fleet.indexing`` call it at import.
"""

from __future__ import annotations

import struct
from typing import Any, NoReturn

import psycopg
from psycopg import pq
from psycopg._encodings import conn_encoding
from psycopg.abc import AdaptContext, DumperKey
from psycopg.adapt import Dumper, PyFormat
from psycopg.types.array import ListDumper

_SEP = "\x00"  # PostgreSQL text never holds NUL, so it cannot be inside an element
VARCHAR_OID, VARCHAR_ARRAY_OID = 1043, 1015
_BINARY_STR_KEY = (list, "fleet-binary-varchar")  # psycopg caches the upgraded dumper by key
_HEADER = struct.Struct("!iiIii")  # ndim, has-nulls, element oid, length, lower bound
_LEN = struct.Struct("!i").pack
_LENS = [_LEN(i) for i in range(4096)]  # the length word of an element shorter than 4 KiB
_NULL = _LEN(-1)
_EMPTY = struct.pack("!iiI", 0, 0, VARCHAR_OID)  # no dimensions


class FastListDumper(ListDumper):
    def __init__(self, cls: type, context: AdaptContext | None = None):
        super().__init__(cls, context)
        enc = conn_encoding(self.connection)
        self._encoding = enc if enc != "ascii" else "utf-8"
        self._str_keys: dict[PyFormat, DumperKey] = {}

    def get_key(self, obj: list[Any], format: PyFormat) -> DumperKey:
        if obj and type(obj[0]) is str:
            if format is PyFormat.AUTO:
                return _BINARY_STR_KEY
            key = self._str_keys.get(format)
            if key is None:
                key = self._str_keys[format] = super().get_key([""], format)
            return key
        return super().get_key(obj, format)

    def upgrade(self, obj: list[Any], format: PyFormat) -> Any:
        if format is PyFormat.AUTO and obj and type(obj[0]) is str:
            return BinaryStrListDumper(list, self._tx)
        return super().upgrade(obj, format)

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


class BinaryStrListDumper(Dumper):
    """A list whose first element is a string, as a binary ``varchar[]`` (``%s`` only).

    PostgreSQL reads a binary array with one length word and a copy per element instead of
    scanning every character for quotes and escapes (``array_in`` was 12 % of the indexing
    backend's instructions, callgrind, 2026-12-04). Strings and ``None`` (-1 length words);
    anything else, and a string holding NUL, goes to psycopg's own text dumper, whose error
    (mixed types, "0x00") is raised. ``install`` registers nothing for it: ``FastListDumper``
    hands it out for string lists in ``%s`` (its ``get_key`` / ``upgrade``)."""

    format = pq.Format.BINARY
    oid = VARCHAR_ARRAY_OID

    def __init__(self, cls: type, context: AdaptContext | None = None):
        super().__init__(cls, context)
        enc = conn_encoding(self.connection)
        self._encoding = enc if enc != "ascii" else "utf-8"
        self._tx = context

    def dump(self, obj: list[Any]) -> bytes | None:  # type: ignore[override]
        try:
            joined = "".join(obj)
        except TypeError:  # None or another type among the strings
            return self._with_nulls(obj)
        if _SEP in joined:
            return _refuse(obj, self._tx)
        enc = self._encoding
        data = list(map(str.encode, obj)) if enc == "utf-8" else [v.encode(enc) for v in obj]
        if not data:  # (psycopg keys an empty list to the text dumper; kept valid all the same)
            return _EMPTY
        sizes = list(map(len, data))
        if max(sizes) < 4096:
            words = list(map(_LENS.__getitem__, sizes))
        else:
            words = list(map(_LEN, sizes))
        parts: list[bytes] = [b""] * (2 * len(data))
        parts[0::2] = words
        parts[1::2] = data
        return _HEADER.pack(1, 0, VARCHAR_OID, len(data), 1) + b"".join(parts)

    def _with_nulls(self, obj: list[Any]) -> bytes | None:
        enc = self._encoding
        parts = [_HEADER.pack(1, 1, VARCHAR_OID, len(obj), 1)]
        for v in obj:
            if v is None:
                parts.append(_NULL)
            elif isinstance(v, str) and _SEP not in v:
                b = v.encode(enc)
                parts.append(_LEN(len(b)))
                parts.append(b)
            else:
                return _refuse(obj, self._tx)
        return b"".join(parts)


def _refuse(obj: list[Any], tx: Any) -> NoReturn:
    """psycopg's own text dump of ``obj``, for its error (mixed types, NUL)."""
    ListDumper(list, tx).upgrade(obj, PyFormat.TEXT).dump(obj)  # raises for what the binary dump refused
    raise psycopg.DataError(f"cannot dump a list of strings holding {sorted({type(v).__name__ for v in obj})} as varchar[]")


_installed = False


def install() -> None:
    """Use ``FastListDumper`` for lists passed with ``%s`` / ``%t`` (idempotent)."""
    global _installed
    if not _installed:
        psycopg.adapters.register_dumper(list, FastListDumper)
        _installed = True


install()
