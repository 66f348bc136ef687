"""Prometheus metrics of the ingester (default registry; the table is in ``fleet/ingester/__init__.py``).

The hot path counts in plain integers (:class:`Tally`); they are added to these metrics once
per batch, so a frame costs no lock or label lookup.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram

FRAMES = Counter("rsky_ingester_frames", "frames read, by source and frame type", ["source", "type"])
EVENTS = Counter("rsky_ingester_events", "events written to the streams, by event type and collection", ["type", "collection"])
FILTERED = Counter("rsky_ingester_filtered_ops", "commit ops dropped by INGESTER_COLLECTIONS", ["source"])
BAD_FRAMES = Counter("rsky_ingester_bad_frames", "frames skipped, by reason", ["source", "reason"])
BAD_OPS = Counter("rsky_ingester_bad_ops", "commit ops skipped, by reason", ["source", "reason"])
ERROR_FRAMES = Counter("rsky_ingester_error_frames", "error frames received (the relay closes after one)", ["source", "error"])
INFO_FRAMES = Counter("rsky_ingester_info_frames", "#info frames received", ["source", "name"])
BATCH_SIZE = Histogram("rsky_ingester_batch_entries", "stream entries per Redis transaction", buckets=(1, 10, 50, 100, 250, 500, 1000, 5000))
BATCH_SECONDS = Histogram("rsky_ingester_batch_seconds", "time to write one batch (MULTI..EXEC)", buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5))
DUPLICATES = Counter("rsky_ingester_duplicate_entries", "entries Redis refused as already written (a replayed window)", ["source"])
ID_CONFLICTS = Counter("rsky_ingester_id_conflicts", "entries refused although newer than the cursor (foreign ids in the stream); rewritten with an auto id", ["source"])
WRITE_ERRORS = Counter("rsky_ingester_write_errors", "failed batch writes (retried, never dropped)", ["source"])
STREAM_LENGTH = Gauge("rsky_ingester_stream_length", "length of each output stream at the last check", ["stream"])
BACKPRESSURE = Gauge("rsky_ingester_backpressure", "1 while reading is paused because a stream is above INGESTER_HIGH_WATER_MARK", ["source"])
PAUSES = Counter("rsky_ingester_backpressure_pauses", "times reading was paused", ["source"])
CONNECTS = Counter("rsky_ingester_connects", "WebSocket connections opened", ["source"])
RECONNECTS = Counter("rsky_ingester_reconnects", "connections lost or refused, by cause", ["source", "cause"])
SEQ_GAPS = Counter("rsky_ingester_seq_gaps", "jumps in seq (frames missing between two frames)", ["source"])
SEQ_GAP_FRAMES = Counter("rsky_ingester_seq_gap_frames", "seq numbers skipped over by gaps", ["source"])
CURSOR = Gauge("rsky_ingester_cursor", "last seq durably written with its batch", ["source"])

__all__ = ["Tally"] + [n for n in dir() if n.isupper()]
