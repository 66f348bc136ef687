"""Helpers for the actor/graph/label/handle tests: a migrated schema, an async connection,
the corpus' events, and a real identity server (PLC directory + handle ``/.well-known``)."""

from __future__ import annotations

import json
import os
from typing import Any

import psycopg
from aiohttp import web
from psycopg import sql

from fleet.codec.firehose import iter_frames_file, message_events
from fleet.db.migrate import migrate
from tests.conftest import CORPUS

SCHEMA = "bsky"


def migrated(database_url: str) -> str:
    migrate(database_url, SCHEMA)
    return SCHEMA


async def connect(database_url: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    await conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(SCHEMA)))
    return conn


def corpus_events(name: str) -> list[dict[str, Any]]:
    """Every stream event of the corpus' firehose, in seq order (no collection filter)."""
    with open(os.path.join(CORPUS, name, "firehose.frames"), "rb") as f:
        data = f.read()
    out: list[dict[str, Any]] = []
    for msg in iter_frames_file(data):
        out.extend(message_events(msg)[2])
    return out


def expected_rows(name: str, table: str) -> list[dict[str, Any]]:
    with open(os.path.join(CORPUS, name, "db", table + ".jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


async def table_rows(conn: psycopg.AsyncConnection, table: str, order: str) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.SQL("SELECT * FROM {} ORDER BY {}").format(sql.Identifier(table), sql.Identifier(order)))
        return list(await cur.fetchall())


class IdentityServer:
    """PLC directory (``GET /<did>``) and handle resolution (``/.well-known/atproto-did`` by
    Host) on 127.0.0.1. ``docs`` and ``handles`` can be edited while it runs; ``hits`` counts
    requests by DID or handle."""

    def __init__(self, corpus: str | None = None) -> None:
        self.docs: dict[str, dict] = {}
        self.handles: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        if corpus:
            plc = os.path.join(CORPUS, corpus, "plc")
            for fn in sorted(os.listdir(plc)):
                if not fn.startswith("did_") or not fn.endswith(".json"):
                    continue
                with open(os.path.join(plc, fn)) as f:
                    rec = json.load(f)
                if rec.get("doc"):
                    self.docs[rec["did"]] = rec["doc"]
            with open(os.path.join(CORPUS, corpus, "handles.json")) as f:
                # "did": whom the handle belonged to while the seeding indexed it
                self.handles = {h: v["did"] for h, v in json.load(f).items() if v.get("did")}
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def plc(self, request: web.Request) -> web.StreamResponse:
        did = request.match_info["did"]
        self.hits[did] = self.hits.get(did, 0) + 1
        doc = self.docs.get(did)
        if doc is None:
            return web.json_response({"message": "DID not registered"}, status=404)
        return web.json_response(doc)

    async def wellknown(self, request: web.Request) -> web.StreamResponse:
        host = request.headers.get("Host", "").split(":")[0].lower()
        self.hits[host] = self.hits.get(host, 0) + 1
        did = self.handles.get(host)
        if did is None:
            return web.Response(status=404, text="not found")
        return web.Response(text=did + "\n")

    async def __aenter__(self) -> "IdentityServer":
        app = web.Application()
        app.router.add_get("/.well-known/atproto-did", self.wellknown)
        app.router.add_get("/{did:did:[^/]+}", self.plc)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def set_doc_handle(doc: dict, handle: str) -> dict:
    return {**doc, "alsoKnownAs": [f"at://{handle}"]}
