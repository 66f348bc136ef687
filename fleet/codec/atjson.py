"""Records as atproto JSON, byte for byte as the official AppView stores ``record.json``.

DAG-CBOR is decoded with cbrrr in its atjson mode, which keeps the CBOR tag 42 distinction:
CID links become ``{"$link": "bafy..."}`` and byte strings ``{"$bytes": "<base64>"}``
(libipld returns both as ``bytes``). Key order is the DAG-CBOR order the decoder returns;
keys are never sorted. Dumped with ujson without ASCII or ``/`` escaping, this equals the
official text for every record of both corpora.
"""

from __future__ import annotations

from typing import Any

import cbrrr
import orjson
import ujson

_orjson_dumps = orjson.dumps
_orjson_loads = orjson.loads


class RecordDecodeError(ValueError):
    """A record block is not valid DAG-CBOR or not a JSON object."""


def decode_record(raw: bytes) -> dict[str, Any]:
    """DAG-CBOR record bytes -> atproto-JSON dict (``$link``/``$bytes`` kept apart)."""
    try:
        obj = cbrrr.decode_dag_cbor(raw, atjson_mode=True)
    except Exception as e:  # cbrrr raises CbrrrDecodeError, ValueError, EOFError...
        raise RecordDecodeError(str(e) or type(e).__name__) from None
    if not isinstance(obj, dict):
        raise RecordDecodeError("record is not a map")
    return obj


def dumps(obj: Any) -> str:
    """The canonical text of a record (what ``record.json`` holds)."""
    return ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False)


def loads(text: str | bytes) -> Any:
    return ujson.loads(text)


def loads_stream_entry(raw: bytes) -> Any:
    """``loads(raw)`` for a stream entry's JSON, faster: orjson parses it (2-3 times quicker than
    ujson) and its result is kept only when orjson writes it back as exactly ``raw``, which is
    the case for every entry this fleet's ingester and fetcher write (``dumps``,
    ``dump_record_bytes``: every event of both corpora and of the benchmark mix). Anything else
    (another producer's spacing or escapes; an integer orjson reads as a float, below -2^63 or
    beyond 2^64, whose text then differs) is parsed by ujson, the reference, as before."""
    try:
        obj = _orjson_loads(raw)
    except ValueError:  # orjson.JSONDecodeError: ujson decides (and raises its own error)
        return ujson.loads(raw)
    if _orjson_dumps(obj) != raw:
        return ujson.loads(raw)
    return obj


def dump_record_bytes(obj: Any) -> bytes:
    """``dumps(obj).encode()``, faster: orjson writes the same text for everything cbrrr's atjson
    mode returns (str, int, bool, None, list, dict; every code point checked against ujson);
    what orjson refuses (an int beyond 64 bits, nesting past its depth limit) is left to
    :func:`dumps`, which stays the reference."""
    try:
        return _orjson_dumps(obj)
    except TypeError:  # orjson.JSONEncodeError
        return dumps(obj).encode()
