"""subscribeRepos frames -> entries of the shard streams (``firehose_live[:k]``).

The handler is called once per WebSocket message, in order, from the subscription's read
loop; it never awaits. Each event becomes ``XADD <shard stream of its DID> <seq>-<n> event
<json>`` (n = index of the event within its frame; ``*`` when several relays feed the same
streams) and the frame's ``seq`` moves the writer's pending cursor, so frames that yield no
event (filtered, #info, bad) are also covered by the next cursor write.
"""

from __future__ import annotations

from typing import Any, Callable

import libipld

from ..codec.atjson import dumps
from ..codec.firehose import ErrorFrame, FrameError, OpError, collection_filter, decode_info, message_events
from ..log import Logger
from ..shard import shard
from ..streams import FIREHOSE_LIVE, shard_stream
from .writer import StreamWriter


class SeqTracker:
    """Seq bookkeeping shared by the firehose and label handlers: order, gaps, skips."""

    def __init__(self, source: str, writer: StreamWriter, log: Logger, last_seq: int | None) -> None:
        self.source = source
        self.writer = writer
        self.log = log
        self.last_seq = last_seq
        self.max_frame = 1 << 62

    def accept(self, seq: int) -> bool:
        """Whether a frame with ``seq`` is new; counts and logs gaps and regressions."""
        last = self.last_seq
        if last is not None:
            if seq <= last:
                self.writer.tally[("BAD_FRAMES", "seq_not_increasing")] += 1
                self.log.warning("seq_not_increasing", source=self.source, seq=seq, last_seq=last)
                return False
            if seq > last + 1:
                self.writer.tally[("SEQ_GAPS",)] += 1
                self.writer.tally[("SEQ_GAP_FRAMES",)] += seq - last - 1
                self.log.warning("seq_gap", source=self.source, after=last, seq=seq, missing=seq - last - 1)
        self.last_seq = seq
        return True

    def skip_unread(self, seq: int) -> None:
        """A frame we could not read at all is stepped over (counted by the caller)."""
        self.writer.tally[("BAD_FRAMES", "frame_too_large_unread")] += 1
        self.last_seq = seq
        self.writer.advance(seq)

    def oversized(self, msg: bytes) -> None:
        """A message over the frame limit (read on a raised-limit connection): count, skip by seq."""
        self.writer.tally[("BAD_FRAMES", "frame_too_large")] += 1
        seq = None
        try:
            body = libipld.decode_dag_cbor_multi(msg)[1]
            seq = body.get("seq") if isinstance(body, dict) and isinstance(body.get("seq"), int) else None
        except Exception:  # noqa: BLE001 - an oversized frame may also be garbage
            pass
        self.log.warning("frame_skipped", source=self.source, reason="frame_too_large", bytes=len(msg), seq=seq)
        if seq is not None and self.accept(seq):
            self.writer.advance(seq)


class FirehoseHandler(SeqTracker):
    def __init__(
        self,
        *,
        source: str,
        writer: StreamWriter,
        log: Logger,
        shard_count: int,
        collections: list[str],
        seq_ids: bool,
        last_seq: int | None,
    ) -> None:
        super().__init__(source, writer, log, last_seq)
        self.shard_count = shard_count
        self.streams = [shard_stream(FIREHOSE_LIVE, k, shard_count) for k in range(shard_count)]
        self.seq_ids = seq_ids
        self._stream_of: dict[str, str] = {}  # did -> shard stream (sha256 per event is measurable)
        tally = writer.tally
        base_keep = collection_filter(collections)
        filtered_key = ("FILTERED",)

        def keep(collection: str) -> bool:
            if base_keep(collection):
                return True
            tally[filtered_key] += 1
            return False

        self.keep: Callable[[str], bool] = keep

    def on_op_error(self, e: OpError, base: dict[str, Any]) -> None:
        self.writer.tally[("BAD_OPS", e.reason)] += 1
        self.log.warning("op_skipped", source=self.source, reason=e.reason, seq=base.get("seq"), did=base.get("did"), error=str(e))

    def __call__(self, msg: bytes) -> None:
        writer = self.writer
        if len(msg) > self.max_frame:
            return self.oversized(msg)
        try:
            t, seq, events = message_events(msg, self.keep, self.on_op_error)
        except ErrorFrame:
            writer.tally[("FRAMES", "error")] += 1
            raise
        except FrameError as e:
            writer.tally[("BAD_FRAMES", e.reason)] += 1
            self.log.warning("frame_skipped", source=self.source, reason=e.reason, seq=e.seq, did=e.did, error=str(e), bytes=len(msg))
            if e.seq is not None and self.accept(e.seq):
                writer.advance(e.seq)
            return
        writer.tally[("FRAMES", t)] += 1
        if seq is None:
            if t == "#info":
                name, message = decode_info(msg)
                writer.tally[("INFO_FRAMES", name or "")] += 1
                self.log.warning("info_frame", source=self.source, name=name, message=message)
            return
        if not self.accept(seq):
            return
        if events:
            add = writer.add
            ev_tally = writer.events_tally
            n_shards = self.shard_count
            streams = self.streams
            stream_of = self._stream_of
            for n, ev in enumerate(events):
                did = ev["did"]
                stream = stream_of.get(did)
                if stream is None:
                    if len(stream_of) >= 200_000:
                        stream_of.clear()
                    stream = stream_of[did] = streams[shard(did, n_shards)]
                add(stream, f"{seq}-{n}" if self.seq_ids else "*", dumps(ev))
                ev_tally[(ev["type"], ev.get("collection", ""))] += 1
        writer.advance(seq)
