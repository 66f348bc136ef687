"""Lexicon string formats, each accepting exactly what the official validator accepts.

Ported rule for rule from @atproto/syntax 0.7.7 (the strict checks @atproto/lex-schema uses in
``schema.check``). JavaScript regexes are translated with care: ``$`` there matches only at the
very end (we use ``fullmatch``), ``\\w`` is ASCII, and ``\\s`` is ECMAScript's white-space set,
which is not Python's.
"""

from __future__ import annotations

import re
from typing import Callable

from fleet.indexing.lexicon.cidstr import is_cid_string

# ECMAScript WhiteSpace + LineTerminator (what JS ``\s`` matches).
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"

# --- datetime -------------------------------------------------------------------------------

_DATETIME = re.compile(
    r"([0-9]{4})-(0[1-9]|1[012])-([0-2][0-9]|3[01])T([0-1][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]|60)"
    r"(\.[0-9]+)?(Z|([+-])([0-1][0-9]|2[0-3]):([0-5][0-9]))"
)
_MS_PER_DAY = 86_400_000
_MIN_MS = -62_167_219_200_000  # 0000-01-01T00:00:00.000Z
_MAX_MS = 253_402_300_800_000  # 10000-01-01T00:00:00.000Z (exclusive)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (day may overflow the month)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def is_datetime(s: str) -> bool:
    """RFC 3339 as atproto restricts it, then V8's ``new Date()`` semantics.

    V8 accepts day 29-31 in any month (rolling over into the next), rejects day 00 and second
    60, and keeps milliseconds by truncation; the UTC year must stay within 0000-9999.
    """
    if len(s) > 64 or s.endswith("-00:00"):
        return False
    m = _DATETIME.fullmatch(s)
    if m is None:
        return False
    if s[8:10] == "00" or s[17:19] == "60":
        return False
    if "0001" <= s[:4] <= "9998":
        return True  # an offset or a rolled-over day cannot leave years 0000-9999
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7)
    millis = int((frac[1:] + "00")[:3]) if frac else 0
    ms = (_days_from_civil(year, month, 1) + day - 1) * _MS_PER_DAY
    ms += ((hour * 60 + minute) * 60 + second) * 1000 + millis
    if m.group(9):
        off = int(m.group(10)) * 60 + int(m.group(11))
        ms -= (off if m.group(9) == "+" else -off) * 60_000
    return _MIN_MS <= ms < _MAX_MS


# --- identifiers ----------------------------------------------------------------------------

_DID = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
_HANDLE = re.compile(r"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
_NSID = re.compile(
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"(?:\.[a-zA-Z](?:[a-zA-Z0-9]{0,62})?)"
)
_RECORD_KEY = re.compile(r"[a-zA-Z0-9_~.:-]{1,512}")
_TID = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
_URI = re.compile(rf"[A-Za-z0-9_]+:(?://)?[^{_JS_SPACE}/][^{_JS_SPACE}]*")


def is_did(s: str) -> bool:
    return len(s) <= 2048 and _DID.fullmatch(s) is not None


def is_handle(s: str) -> bool:
    return len(s) <= 253 and _HANDLE.fullmatch(s) is not None


def is_at_identifier(s: str) -> bool:
    if not s:
        return False
    return is_did(s) if s.startswith("did:") else is_handle(s)


def is_nsid(s: str) -> bool:
    return 5 <= len(s) <= 317 and _NSID.fullmatch(s) is not None


def is_record_key(s: str) -> bool:
    return s != "." and s != ".." and _RECORD_KEY.fullmatch(s) is not None


def is_tid(s: str) -> bool:
    return len(s) == 13 and _TID.fullmatch(s) is not None


def is_uri(s: str) -> bool:
    return _URI.fullmatch(s) is not None


# --- at-uri ---------------------------------------------------------------------------------

_ATURI_BAD_CHAR = re.compile(r"[^a-zA-Z0-9._~:@!$&'()*+,;=%/\\\[\]#?-]")
_ATURI = re.compile(
    rf"at://(?P<authority>[^/?#{_JS_SPACE}]+)(?:/(?P<collection>[^/?#{_JS_SPACE}]+)"
    rf"(?:/(?P<rkey>[^/?#{_JS_SPACE}]+))?)?(?P<slash>/)?(?:\?(?P<query>[^#{_JS_SPACE}]*))?"
    rf"(?:#(?P<hash>[^{_JS_SPACE}]*))?"
)
_JSON_POINTER = re.compile(r"/[a-zA-Z0-9._~:@!$&')(*+,;=%\[\]/-]*")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def _decodes_as_uri_component(s: str) -> bool:
    """Whether JS ``decodeURIComponent(s)`` succeeds (s is ASCII here)."""
    if "%" not in s:
        return True
    if s.count("%") != len(_PERCENT.findall(s)):
        return False  # a '%' not followed by two hex digits
    raw = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), s).encode("latin-1")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# A strict subset of valid at-uris covering nearly all real ones (did:plc authority, a plain
# NSID, a TID-like rkey); anything else takes the full check.
_ATURI_COMMON = re.compile(r"at://did:plc:[a-z2-7]{24}(?:/[a-z]{2,20}(?:\.[a-z]{2,20}){1,4}\.[a-zA-Z]{2,40}(?:/[a-z2-7]{13})?)?")


def is_at_uri(s: str) -> bool:
    """Strict at-uri: ``at://authority[/collection[/rkey]][#/json-pointer]``."""
    if _ATURI_COMMON.fullmatch(s) is not None:
        return True
    if len(s) > 8192 or _ATURI_BAD_CHAR.search(s):
        return False
    m = _ATURI.fullmatch(s)
    if m is None:
        return False
    if not is_at_identifier(m.group("authority")):
        return False
    collection = m.group("collection")
    if collection is not None and not is_nsid(collection):
        return False
    frag = m.group("hash")
    if frag is not None and (_JSON_POINTER.fullmatch(frag) is None or not _decodes_as_uri_component(frag)):
        return False
    if m.group("slash") is not None or m.group("query") is not None:
        return False
    rkey = m.group("rkey")
    return rkey is None or is_record_key(rkey)


# --- language (BCP 47) ----------------------------------------------------------------------

_BCP47 = re.compile(
    r"((?P<grandfathered>(en-GB-oed|i-ami|i-bnn|i-default|i-enochian|i-hak|i-klingon|i-lux|i-mingo|"
    r"i-navajo|i-pwn|i-tao|i-tay|i-tsu|sgn-BE-FR|sgn-BE-NL|sgn-CH-DE)|(art-lojban|cel-gaulish|no-bok|"
    r"no-nyn|zh-guoyu|zh-hakka|zh-min|zh-min-nan|zh-xiang))|((?P<language>([A-Za-z]{2,3}(-(?P<extlang>"
    r"[A-Za-z]{3}(-[A-Za-z]{3}){0,2}))?)|[A-Za-z]{4}|[A-Za-z]{5,8})(-(?P<script>[A-Za-z]{4}))?"
    r"(-(?P<region>[A-Za-z]{2}|[0-9]{3}))?(-(?P<variant>[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(-(?P<extension>[0-9A-WY-Za-wy-z](-[A-Za-z0-9]{2,8})+))*(-(?P<privateUseA>[xX](-[A-Za-z0-9]{1,8})+))?)"
    r"|(?P<privateUseB>[xX](-[A-Za-z0-9]{1,8})+))"
)
_ALPHA3 = re.compile(r"[A-Za-z]{3}")
_ALPHA4 = re.compile(r"[A-Za-z]{4}")
_REGION = re.compile(r"[A-Za-z]{2}|[0-9]{3}")
_VARIANT = re.compile(r"[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}")
_SINGLETON = re.compile(r"[0-9A-WYZa-wyz]")
_EXT_PART = re.compile(r"[A-Za-z0-9]{2,8}")
_PRIMARY = re.compile(r"[a-z]{2,3}")


def _has_duplicate_variant_or_singleton(s: str) -> bool:
    subtags = s.split("-")
    i = 1
    if len(subtags[0]) in (2, 3):
        count = 0
        while count < 3 and i < len(subtags) and _ALPHA3.fullmatch(subtags[i]):
            i += 1
            count += 1
    if i < len(subtags) and _ALPHA4.fullmatch(subtags[i]):
        i += 1
    if i < len(subtags) and _REGION.fullmatch(subtags[i]):
        i += 1
    seen: set[str] = set()
    while i < len(subtags) and _VARIANT.fullmatch(subtags[i]):
        key = subtags[i].lower()
        if key in seen:
            return True
        seen.add(key)
        i += 1
    singletons: set[str] = set()
    while i < len(subtags) and _SINGLETON.fullmatch(subtags[i]):
        key = subtags[i].lower()
        if key in singletons:
            return True
        singletons.add(key)
        i += 1
        while i < len(subtags) and _EXT_PART.fullmatch(subtags[i]):
            i += 1
    return False


_LANGUAGE_SEEN: dict[str, bool] = {}  # tags repeat endlessly ("en", "ja"...): remember verdicts


def is_language(s: str) -> bool:
    """BCP 47 tag whose primary language subtag is lower-case (``parseLanguageString``)."""
    verdict = _LANGUAGE_SEEN.get(s)
    if verdict is None:
        if len(_LANGUAGE_SEEN) >= 4096:
            _LANGUAGE_SEEN.clear()
        verdict = _LANGUAGE_SEEN[s] = _is_language(s)
    return verdict


def _is_language(s: str) -> bool:
    m = _BCP47.fullmatch(s)
    if m is None:
        return False
    if not (m.group("grandfathered") or m.group("privateUseB")) and _has_duplicate_variant_or_singleton(s):
        return False
    language = m.group("language")
    return not language or _PRIMARY.fullmatch(language.split("-")[0]) is not None


FORMATS: dict[str, Callable[[str], bool]] = {
    "at-identifier": is_at_identifier,
    "at-uri": is_at_uri,
    "cid": is_cid_string,
    "datetime": is_datetime,
    "did": is_did,
    "handle": is_handle,
    "language": is_language,
    "nsid": is_nsid,
    "record-key": is_record_key,
    "tid": is_tid,
    "uri": is_uri,
}
