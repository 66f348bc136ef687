"""Compile lexicon documents into checker closures with the official ``schema.check`` semantics.

A checker is ``check(value) -> None`` that raises :class:`Invalid` (message + path) on the first
problem, in the order the official validator looks. Each lexicon def compiles once; refs are
resolved at compile time, so checking a record is plain closure calls with no lookups by name.

The rules follow @atproto/lex-schema 0.2.7 as @atproto/lex-builder compiles lexicons for
@atproto/bsky 0.0.280, in ``validate`` mode with ``strict`` on:

- object: properties checked in declaration order; unknown keys allowed; a missing required key
  fails; ``nullable`` admits null; an optional key must be absent, not null (unless nullable).
- named object defs are typed objects: ``$type``, when present, must be the def's own type.
- record: its object, then ``$type`` must equal the collection NSID.
- union: the value must be an object with ``$type``; a listed type is validated as that def; an
  unlisted type fails a closed union and passes an open one if it is a string (not validated).
- string: UTF-8 ``minLength``/``maxLength``, grapheme ``minGraphemes``/``maxGraphemes``, then
  ``format``; ``const`` and ``enum`` replace everything else; ``knownValues``/``default`` have
  no effect in validation.
- integer: a JS safe integer with ``minimum``/``maximum``; ``const``/``enum`` likewise.
- blob: strictly typed ``{$type: "blob", ref, mimeType, size}`` with no other key, ``ref`` a CIDv1
  with the raw codec, ``mimeType`` containing "/", then ``accept`` and ``maxSize`` (legacy
  ``{cid, mimeType}`` blobs fail).
- unknown: any object whose values are all data-model values; cid-link: a CID; bytes: bytes with
  ``minLength``/``maxLength``.

Data model (atproto JSON as fleet.codec.atjson decodes it): a CID is ``{"$link": str}``, bytes
``{"$bytes": str}``; neither counts as an object.
"""

from __future__ import annotations

import base64
from typing import Any, Callable

from fleet.indexing.lexicon.cidstr import RAW_CODEC, parse_cid
from fleet.indexing.lexicon.formats import FORMATS
from fleet.indexing.lexicon.graphemes import grapheme_len

Checker = Callable[[Any], None]
MAX_SAFE_INTEGER = 2**53 - 1
_MISSING = object()


class Invalid(Exception):
    """First validation problem: ``message`` and the ``path`` (innermost first while raising)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str | int] = []

    def where(self) -> str:
        out = "$"
        for part in reversed(self.path):
            out += f"[{part}]" if isinstance(part, int) else f".{part}"
        return out


# --- data model -----------------------------------------------------------------------------


def is_object(v: Any) -> bool:
    """A JSON object that is not a CID (``$link``) or bytes (``$bytes``) wrapper."""
    return type(v) is dict and not (len(v) == 1 and ("$link" in v or "$bytes" in v))


def cid_of(v: Any) -> tuple[int, int] | None:
    """(version, codec) when ``v`` is a CID link ``{"$link": "..."}``, else None."""
    if type(v) is dict and len(v) == 1:
        link = v.get("$link")
        if type(link) is str:
            return parse_cid(link)
    return None


def bytes_len(v: Any) -> int | None:
    """Byte length when ``v`` is ``{"$bytes": "<base64>"}``, else None."""
    if type(v) is dict and len(v) == 1:
        b64 = v.get("$bytes")
        if type(b64) is str:
            try:
                return len(base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True))
            except ValueError:
                return None
    return None


def as_integer(v: Any) -> int | None:
    """The value as a JS safe integer (integral floats count, as in JS), else None."""
    t = type(v)
    if t is int:
        return v if -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER else None
    if t is float and v.is_integer() and -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
        return int(v)
    return None


def is_lex_value(v: Any) -> bool:
    """Whether ``v`` is an atproto data-model value (what an ``unknown`` field may hold)."""
    t = type(v)
    if t is str or t is bool or v is None:
        return True
    if t is int:
        return -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER
    if t is float:
        return v.is_integer() and -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER
    if t is list:
        return all(is_lex_value(x) for x in v)
    if t is dict:
        if len(v) == 1 and ("$link" in v or "$bytes" in v):
            return cid_of(v) is not None or bytes_len(v) is not None
        return all(is_lex_value(x) for x in v.values())
    return False


def describe(v: Any) -> str:
    if v is None:
        return "null"
    if type(v) is dict:
        if cid_of(v) is not None:
            return "cid"
        if bytes_len(v) is not None:
            return "bytes"
        return "object"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _same_value(a: Any, b: Any) -> bool:
    """JS ``===`` between data-model scalars (True is not 1)."""
    if type(a) is bool or type(b) is bool:
        return a is b
    if type(a) is str or type(b) is str:
        return type(a) is type(b) and a == b
    ia, ib = as_integer(a), as_integer(b)
    return ia is not None and ia == ib


# --- leaf checkers --------------------------------------------------------------------------


def never() -> Checker:
    def check(v: Any) -> None:
        raise Invalid(f"expected nothing (never), got {describe(v)}")

    return check


def literal(value: Any) -> Checker:
    def check(v: Any) -> None:
        if not _same_value(v, value):
            raise Invalid(f"expected {value!r}, got {_short(v)}")

    return check


def enum(values: list[Any]) -> Checker:
    def check(v: Any) -> None:
        if not any(_same_value(v, x) for x in values):
            raise Invalid(f"expected one of {values!r}, got {_short(v)}")

    return check


def token(value: str) -> Checker:
    def check(v: Any) -> None:
        if type(v) is not str:
            raise Invalid(f"expected token {value!r}, got {describe(v)}")
        if v != value:
            raise Invalid(f"expected token {value!r}, got {_short(v)}")

    return check


def boolean() -> Checker:
    def check(v: Any) -> None:
        if type(v) is not bool:
            raise Invalid(f"expected boolean, got {describe(v)}")

    return check


def integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    def check(v: Any) -> None:
        n = as_integer(v)
        if n is None:
            raise Invalid(f"expected integer, got {describe(v)} {_short(v)}")
        if minimum is not None and n < minimum:
            raise Invalid(f"integer {n} is below the minimum {minimum}")
        if maximum is not None and n > maximum:
            raise Invalid(f"integer {n} is above the maximum {maximum}")

    return check


def string(
    min_length: int | None = None,
    max_length: int | None = None,
    min_graphemes: int | None = None,
    max_graphemes: int | None = None,
    fmt: str | None = None,
) -> Checker:
    is_format = FORMATS[fmt] if fmt is not None else None
    if min_length is None and max_length is None and min_graphemes is None and max_graphemes is None:
        if is_format is None:

            def check_plain(v: Any) -> None:
                if type(v) is not str:
                    raise Invalid(f"expected string, got {describe(v)}")

            return check_plain

        def check_format(v: Any) -> None:
            if type(v) is not str:
                raise Invalid(f"expected string, got {describe(v)}")
            if not is_format(v):
                raise Invalid(f"invalid {fmt} (got {_short(v)})")

        return check_format

    def check(v: Any) -> None:
        if type(v) is not str:
            raise Invalid(f"expected string, got {describe(v)}")
        if min_length is not None or max_length is not None:
            size = len(v) if v.isascii() else len(v.encode("utf-8"))
            if min_length is not None and size < min_length:
                raise Invalid(f"string is {size} UTF-8 bytes, below the minimum {min_length}")
            if max_length is not None and size > max_length:
                raise Invalid(f"string is {size} UTF-8 bytes, above the maximum {max_length}")
        graphemes = -1
        if min_graphemes is not None:
            graphemes = grapheme_len(v)
            if graphemes < min_graphemes:
                raise Invalid(f"string is {graphemes} graphemes, below the minimum {min_graphemes}")
        if max_graphemes is not None and len(v) > max_graphemes:  # graphemes <= code points
            if graphemes < 0:
                graphemes = grapheme_len(v)
            if graphemes > max_graphemes:
                raise Invalid(f"string is {graphemes} graphemes, above the maximum {max_graphemes}")
        if is_format is not None and not is_format(v):
            raise Invalid(f"invalid {fmt} (got {_short(v)})")

    return check


def bytes_(min_length: int | None = None, max_length: int | None = None) -> Checker:
    def check(v: Any) -> None:
        n = bytes_len(v)
        if n is None:
            raise Invalid(f"expected bytes, got {describe(v)}")
        if min_length is not None and n < min_length:
            raise Invalid(f"bytes length {n} is below the minimum {min_length}")
        if max_length is not None and n > max_length:
            raise Invalid(f"bytes length {n} is above the maximum {max_length}")

    return check


def cid_link() -> Checker:
    def check(v: Any) -> None:
        if cid_of(v) is None:
            raise Invalid(f"expected cid, got {describe(v)}")

    return check


def _mime_accepted(mime: str, accept: list[str]) -> bool:
    if "*/*" in accept or mime in accept:
        return True
    return any(a.endswith("/*") and mime.startswith(a[:-1]) for a in accept)


_BLOB_KEYS = frozenset(("$type", "mimeType", "ref", "size"))


def blob(accept: list[str] | None = None, max_size: int | None = None) -> Checker:
    def check(v: Any) -> None:
        if not is_object(v) or v.get("$type", _MISSING) is _MISSING:
            raise Invalid(f"expected blob, got {describe(v)}")  # legacy {cid, mimeType} fails strict
        mime = v.get("mimeType")
        size = v.get("size")
        if (
            v["$type"] != "blob"
            or type(mime) is not str
            or "/" not in mime
            or type(size) is not int  # a float size never arrives: atjson mode refuses floats
            or not 0 <= size <= MAX_SAFE_INTEGER
            or not _BLOB_KEYS.issuperset(v)
        ):
            raise Invalid("expected blob (typed blob ref with $type, ref, mimeType, size only)")
        ref = cid_of(v.get("ref"))
        if ref is None or ref[0] != 1 or ref[1] != RAW_CODEC:
            raise Invalid("expected blob (ref must be a raw CIDv1)")
        if accept is not None and not _mime_accepted(mime, accept):  # JS: [] is truthy
            raise Invalid(f"blob mimeType {mime!r} not in {accept!r}")
        if max_size is not None and size > max_size:
            raise Invalid(f"blob size {size} is above the maximum {max_size}")

    return check


def lex_map() -> Checker:
    def check(v: Any) -> None:
        if not is_object(v):
            raise Invalid(f"expected object, got {describe(v)}")
        for key, x in v.items():
            if not is_lex_value(x):
                err = Invalid(f"not a data-model value: {describe(x)}")
                err.path.append(key)
                raise err

    return check


# --- containers -----------------------------------------------------------------------------


def nullable(inner: Checker) -> Checker:
    def check(v: Any) -> None:
        if v is not None:
            inner(v)

    return check


def array(items: Checker, min_length: int | None = None, max_length: int | None = None) -> Checker:
    def check(v: Any) -> None:
        if type(v) is not list:
            raise Invalid(f"expected array, got {describe(v)}")
        if min_length is not None and len(v) < min_length:
            raise Invalid(f"array has {len(v)} items, below the minimum {min_length}")
        if max_length is not None and len(v) > max_length:
            raise Invalid(f"array has {len(v)} items, above the maximum {max_length}")
        i = 0
        try:
            for x in v:
                items(x)
                i += 1
        except Invalid as e:
            e.path.append(i)
            raise

    return check


# (key, checker, required); nullable keys carry a checker that admits null.
Props = list[tuple[str, Checker, bool]]


def obj(props: Props) -> Checker:
    """An object with known properties (unknown keys allowed)."""
    plan = tuple(props)

    def check(v: Any) -> None:
        if type(v) is not dict or (len(v) == 1 and ("$link" in v or "$bytes" in v)):
            raise Invalid(f"expected object, got {describe(v)}")
        get = v.get
        for key, fn, required in plan:
            x = get(key, _MISSING)
            if x is _MISSING:
                if required:
                    raise Invalid(f"missing required key {key!r}")
                continue
            try:
                fn(x)
            except Invalid as e:
                e.path.append(key)
                raise

    return check


def typed_object(type_name: str, body: Checker) -> Checker:
    def check(v: Any) -> None:
        if type(v) is dict:
            t = v.get("$type", _MISSING)
            if t is not _MISSING and t != type_name:
                err = Invalid(f"expected $type {type_name!r}, got {_short(t)}")
                err.path.append("$type")
                raise err
        body(v)

    return check


def record(nsid: str, body: Checker) -> Checker:
    def check(v: Any) -> None:
        body(v)
        if v.get("$type") != nsid:
            err = Invalid(f"expected $type {nsid!r}, got {_short(v.get('$type'))}")
            err.path.append("$type")
            raise err

    return check


def typed_union(members: dict[str, Checker], closed: bool) -> Checker:
    names = sorted(members)

    def check(v: Any) -> None:
        if not is_object(v) or "$type" not in v:
            raise Invalid(f"expected an object with $type (one of {names}), got {describe(v)}")
        t = v["$type"]
        fn = members.get(t) if type(t) is str else None
        if fn is not None:
            fn(v)
            return
        if closed or type(t) is not str:
            err = Invalid(f"$type {_short(t)} is not one of {names}" if closed else f"$type must be a string, got {describe(t)}")
            err.path.append("$type")
            raise err

    return check
