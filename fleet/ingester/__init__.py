"""The ingester role: relay firehoses and labelers -> per-shard Redis streams.

Modules: ``main`` (``run(cfg, ctx)``: one subscription per relay/labeler, listRepos if
enabled), ``subscription`` (connect, cursor, reconnect with backoff, idle timeout, frame size
limit), ``firehose`` / ``labels`` (frame -> stream entries, seq gaps), ``writer`` (batches
written with their cursor in one MULTI/EXEC, entry ids, backpressure), ``backoff``,
``metrics``. ``python -m fleet.ingester`` runs the role alone.

Guarantees: an event is in its shard stream (``shard_stream("firehose_live", shard(did, N), N)``,
field ``event`` = JSON) before the relay cursor (``firehose_live:cursor:<host>``) passes its
seq, in the same transaction; a restart resumes from that cursor and cannot lose or repeat a
window. Entry ids are ``<seq>-<n>`` with one relay (replays are refused by Redis even
without the transaction, e.g. on Redis Cluster), auto ids with several (their seqs collide);
label entries likewise in ``label_live``. First start without a stored cursor:
``INGESTER_START_CURSOR`` (``live`` = no cursor = the relay's live tail, or a seq).

Metrics (prometheus default registry; ``source`` = relay or labeler host):

| metric | labels | meaning |
|---|---|---|
| ``rsky_ingester_frames_total`` | source, type | frames read (``#commit``, ``#identity``, ``#account``, ``#sync``, ``#info``, ``#labels``, ``error``) |
| ``rsky_ingester_events_total`` | type, collection | events written (create/update/delete/account/identity/sync/label) |
| ``rsky_ingester_filtered_ops_total`` | source | commit ops dropped by ``INGESTER_COLLECTIONS`` |
| ``rsky_ingester_bad_frames_total`` | source, reason | frames skipped: codec reasons (``fleet/codec/firehose.py``) and ``seq_not_increasing``, ``frame_too_large``, ``frame_too_large_unread`` |
| ``rsky_ingester_bad_ops_total`` | source, reason | ops skipped (``missing_block``, ``unknown_action``, ``bad_path``...) |
| ``rsky_ingester_error_frames_total`` | source, error | error frames (FutureCursor, ConsumerTooSlow...) |
| ``rsky_ingester_info_frames_total`` | source, name | ``#info`` frames (OutdatedCursor) |
| ``rsky_ingester_batch_entries`` | | histogram: entries per Redis transaction |
| ``rsky_ingester_batch_seconds`` | | histogram: time to write one batch |
| ``rsky_ingester_duplicate_entries_total`` | source | entries Redis refused as already written (replayed window) |
| ``rsky_ingester_id_conflicts_total`` | source | refused ids newer than the cursor, rewritten with auto ids |
| ``rsky_ingester_write_errors_total`` | source | failed batch writes (retried; reading stops meanwhile) |
| ``rsky_ingester_stream_length`` | stream | XLEN at the last check |
| ``rsky_ingester_backpressure`` | source | 1 while reading is paused (a stream above the high-water mark) |
| ``rsky_ingester_backpressure_pauses_total`` | source | pauses |
| ``rsky_ingester_connects_total`` | source | WebSocket connections opened |
| ``rsky_ingester_reconnects_total`` | source, cause | connections lost/refused (closed, error_frame, http_NNN, connect_failed, frame_too_large) |
| ``rsky_ingester_seq_gaps_total`` | source | jumps in seq |
| ``rsky_ingester_seq_gap_frames_total`` | source | seq numbers jumped over |
| ``rsky_ingester_cursor`` | source | last seq durably written |

A ``summary`` log line per source every ``SUMMARY_INTERVAL_S``: frames, frames/s, entries/s,
cursor, paused, longest stream.
"""
