"""subscribeLabels frames -> ``label_live`` entries.

A ``#labels`` frame ``{seq, labels: [...]}`` becomes one entry per label,
``event={"type": "label", "seq": <seq>, "label": {...}}`` with the label in atproto JSON (the
signature as ``{"$bytes": ...}``), id ``<seq>-<n>`` (``*`` with several labelers), cursor in
``label_live:cursor:<host>``. ``#info`` is logged; error frames reconnect.
"""

from __future__ import annotations

from typing import Any

import cbrrr

from ..codec.atjson import dumps
from ..codec.firehose import ErrorFrame
from ..log import Logger
from ..streams import LABEL_LIVE
from .firehose import SeqTracker
from .writer import StreamWriter


def decode_label_frame(msg: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, body) with the body in atproto JSON form. Raises ValueError."""
    try:
        parts = list(cbrrr.decode_multi_dag_cbor_in_violation_of_the_spec(msg, atjson_mode=True))
    except Exception as e:  # noqa: BLE001 - cbrrr raises several types
        raise ValueError(f"undecodable frame: {e}") from None
    if len(parts) != 2 or not isinstance(parts[0], dict) or not isinstance(parts[1], dict):
        raise ValueError("not a header and body")
    return parts[0], parts[1]


class LabelHandler(SeqTracker):
    def __init__(self, *, source: str, writer: StreamWriter, log: Logger, seq_ids: bool, last_seq: int | None) -> None:
        super().__init__(source, writer, log, last_seq)
        self.seq_ids = seq_ids

    def __call__(self, msg: bytes) -> None:
        writer = self.writer
        if len(msg) > self.max_frame:
            return self.oversized(msg)
        try:
            header, body = decode_label_frame(msg)
        except ValueError as e:
            writer.tally[("BAD_FRAMES", "undecodable")] += 1
            self.log.warning("frame_skipped", source=self.source, reason="undecodable", error=str(e))
            return
        if header.get("op") == -1:
            writer.tally[("FRAMES", "error")] += 1
            raise ErrorFrame(str(body.get("error")), str(body.get("message")))
        t = header.get("t")
        writer.tally[("FRAMES", str(t))] += 1
        seq = body.get("seq")
        if t == "#info":
            writer.tally[("INFO_FRAMES", str(body.get("name")))] += 1
            self.log.warning("info_frame", source=self.source, name=body.get("name"), message=body.get("message"))
            return
        if t != "#labels" or not isinstance(seq, int) or not isinstance(body.get("labels"), list):
            writer.tally[("BAD_FRAMES", "invalid")] += 1
            self.log.warning("frame_skipped", source=self.source, reason="invalid", type=t, seq=seq)
            return
        if not self.accept(seq):
            return
        for n, label in enumerate(body["labels"]):
            if not isinstance(label, dict):
                writer.tally[("BAD_OPS", "bad_label")] += 1
                continue
            writer.add(LABEL_LIVE, f"{seq}-{n}" if self.seq_ids else "*", dumps({"type": "label", "seq": seq, "label": label}))
            writer.events_tally[("label", "")] += 1
        writer.advance(seq)
