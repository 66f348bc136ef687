"""Lexicon documents (``schemas/*.json``) -> one compiled checker per def, refs resolved once.

The documents are the protocol's lexicons as @atproto/bsky 0.0.280 compiled them (from the
atproto repository's ``lexicons/``; ``app.bsky.graph.referencelistoptout`` and the newer
``app.bsky.graph.defs`` from the @atproto/api 0.20.44 schema dictionary, which is what 0.0.280
was built with). ``tests/test_lexicon.py`` checks the compiled structure against a dump of the
official compiled schemas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet.indexing.lexicon import compile as c

SCHEMA_DIR = Path(__file__).with_name("schemas")


class LexiconError(ValueError):
    """A lexicon document is missing, malformed or refers to something that does not exist."""


def type_name(doc_id: str, name: str) -> str:
    return doc_id if name == "main" else f"{doc_id}#{name}"


def split_ref(ref: str, doc_id: str) -> tuple[str, str]:
    """``#x`` / ``nsid`` / ``nsid#x`` / ``lex:nsid#x`` -> (doc id, def name)."""
    if ref.startswith("lex:"):
        ref = ref[4:]
    if ref.startswith("#"):
        return doc_id, ref[1:]
    nsid, _, name = ref.partition("#")
    return nsid, name or "main"


class Registry:
    """Compiles defs on demand; every def is compiled at most once."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs
        self._compiled: dict[tuple[str, str], c.Checker] = {}
        self._building: dict[tuple[str, str], list[c.Checker]] = {}

    def checker(self, doc_id: str, name: str = "main") -> c.Checker:
        key = (doc_id, name)
        done = self._compiled.get(key)
        if done is not None:
            return done
        if key in self._building:  # a cycle: call through a cell filled when the def is done
            cell = self._building[key]
            return lambda v: cell[0](v)
        self._building[key] = cell = []
        try:
            fn = self._compile_def(doc_id, name)
        finally:
            del self._building[key]
        cell.append(fn)
        self._compiled[key] = fn
        return fn

    def _def(self, doc_id: str, name: str) -> dict[str, Any]:
        doc = self.docs.get(doc_id)
        if doc is None:
            raise LexiconError(f"no lexicon document {doc_id}")
        d = doc.get("defs", {}).get(name)
        if d is None:
            raise LexiconError(f"no def {name!r} in {doc_id}")
        return d

    def _compile_def(self, doc_id: str, name: str) -> c.Checker:
        d = self._def(doc_id, name)
        t = d.get("type")
        if t == "record":
            if name != "main":
                raise LexiconError(f"{doc_id}#{name}: a record must be the main def")
            return c.record(doc_id, self._object(d["record"], doc_id))
        if t == "object":
            return c.typed_object(type_name(doc_id, name), self._object(d, doc_id))
        if t == "token":
            return c.token(type_name(doc_id, name))
        return self._field(d, doc_id)

    def _object(self, d: dict[str, Any], doc_id: str) -> c.Checker:
        props = d.get("properties", {})
        required = set(d.get("required", []))
        nullable = set(d.get("nullable", []))
        for key in required | nullable:
            if key not in props:
                raise LexiconError(f"{doc_id}: required/nullable property {key!r} is not defined")
        plan: c.Props = []
        for key, pd in props.items():
            fn = self._field(pd, doc_id)
            if key in nullable:
                fn = c.nullable(fn)
            plan.append((key, fn, key in required))
        return c.obj(plan)

    def _field(self, d: dict[str, Any], doc_id: str) -> c.Checker:
        t = d.get("type")
        if t == "unknown":
            return c.lex_map()
        if t in ("boolean", "integer", "string"):
            const, values = d.get("const"), d.get("enum")
            if const is not None:
                if values is not None and const not in values:
                    return c.never()
                return c.literal(const)
            if values is not None:
                if not values:
                    return c.never()
                return c.literal(values[0]) if len(values) == 1 else c.enum(list(values))
            if t == "boolean":
                return c.boolean()
            if t == "integer":
                return c.integer(d.get("minimum"), d.get("maximum"))
            fmt = d.get("format")
            if fmt is not None and fmt not in c.FORMATS:
                raise LexiconError(f"{doc_id}: unknown string format {fmt!r}")
            return c.string(d.get("minLength"), d.get("maxLength"), d.get("minGraphemes"), d.get("maxGraphemes"), fmt)
        if t == "bytes":
            return c.bytes_(d.get("minLength"), d.get("maxLength"))
        if t == "blob":
            return c.blob(d.get("accept"), d.get("maxSize"))
        if t == "cid-link":
            return c.cid_link()
        if t == "array":
            return c.array(self._field(d["items"], doc_id), d.get("minLength"), d.get("maxLength"))
        if t == "ref":
            return self.checker(*split_ref(d["ref"], doc_id))
        if t == "union":
            refs = d.get("refs", [])
            closed = bool(d.get("closed", False))
            if not refs and closed:
                return c.never()
            members = {}
            for ref in refs:
                rid, rname = split_ref(ref, doc_id)
                members[type_name(rid, rname)] = self.checker(rid, rname)
            return c.typed_union(members, closed)
        raise LexiconError(f"{doc_id}: unsupported field type {t!r}")


def load_documents(directory: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        docs[doc["id"]] = doc
    return docs
