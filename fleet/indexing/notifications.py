"""Notification writes of one batch, in the official order: deletes before creations.

The official processor deletes the notifications of a removed record (``recordUri in
toDelete``) and inserts the new ones inside the write's transaction, dropping those whose
thread the recipient muted. Here a batch collects both and ``flush`` applies them with one
``DELETE`` and one multi-row ``INSERT``; a delete also cancels the notifications the same batch
queued for that record, and an unindexed account (``drop_actor``) those to or from it, also when
a batch applied one event per savepoint merges each event's buffer into the batch's
(``extend_from``), so the result equals applying each event in turn.

Metrics: ``rsky_indexing_notifications_total{op}`` (op = insert, delete, muted).
"""

from __future__ import annotations

from typing import Any, Iterable

from prometheus_client import Counter

from .plugin import Notif

NOTIFS = Counter("rsky_indexing_notifications_total", "notifications written or deleted", ["op"])


class NotifBuffer:
    def __init__(self) -> None:
        self.pending: list[Notif] = []
        self.deleted: set[str] = set()
        self.dropped: set[str] = set()  # accounts unindexed (``drop_actor``): what a merge must drop too

    def add(self, notifs: Iterable[Notif]) -> None:
        self.pending.extend(notifs)

    def delete_for(self, record_uris: Iterable[str]) -> None:
        uris = set(record_uris)
        if not uris:
            return
        self.deleted |= uris
        self.pending = [n for n in self.pending if n.recordUri not in uris]

    def drop_actor(self, did: str) -> None:
        """An account was unindexed: its queued notifications (to or from it) go too."""
        self.dropped.add(did)
        self.pending = [n for n in self.pending if n.did != did and n.author != did]

    def extend_from(self, other: "NotifBuffer") -> None:
        """``other`` (a later event's) after this one: its deletes and unindexed accounts apply to
        what this one queued, then its notifications are queued."""
        self.delete_for(other.deleted)
        for did in sorted(other.dropped):
            self.drop_actor(did)
        self.pending.extend(other.pending)

    async def flush(self, tx: Any) -> None:
        if self.deleted:
            cur = await tx.execute('DELETE FROM notification WHERE "recordUri" = ANY(%s)', (sorted(self.deleted),))
            NOTIFS.labels("delete").inc(max(cur.rowcount, 0))
            self.deleted = set()
        pending = await _drop_thread_muted(tx, self.pending)
        self.pending = []
        if not pending:
            return
        cols = [[getattr(n, f) for n in pending] for f in ("did", "recordUri", "recordCid", "author", "reason", "reasonSubject", "sortAt")]
        await tx.execute(
            'INSERT INTO notification (did, "recordUri", "recordCid", author, reason, "reasonSubject", "sortAt") '
            "SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[])",
            cols,
        )
        NOTIFS.labels("insert").inc(len(pending))


async def _drop_thread_muted(tx: Any, notifs: list[Notif]) -> list[Notif]:
    """The official ``filterNotifsForThreadMutes``: one query for the whole batch."""
    idx = [i for i, n in enumerate(notifs) if n.reasonSubject and not n.reasonSubject.startswith("did:")]
    if not idx:
        return notifs
    row = await (await tx.execute("SELECT EXISTS (SELECT 1 FROM thread_mute)")).fetchone()
    if not row[0]:
        return notifs
    cur = await tx.execute(
        "SELECT n.i FROM unnest(%s::int[], %s::varchar[], %s::varchar[]) AS n(i, did, subject) "
        "JOIN post p ON p.uri = n.subject "
        'JOIN thread_mute m ON m."mutedByDid" = n.did AND m."rootUri" = coalesce(p."replyRoot", p.uri)',
        ([i for i in idx], [notifs[i].did for i in idx], [notifs[i].reasonSubject for i in idx]),
    )
    muted = {r[0] for r in await cur.fetchall()}
    NOTIFS.labels("muted").inc(len(muted))
    return [n for i, n in enumerate(notifs) if i not in muted]
