-- 0003: additive objects for rev-guarded deletes and cross-shard order (fleet/indexing/order.py).
-- record.seq: the firehose seq of the write that produced the row (NULL: backfill or official);
-- cross-account rules (thread gates, post gates, reply validity) are evaluated as of this seq.
ALTER TABLE record ADD COLUMN IF NOT EXISTS seq bigint;

-- A deleted record's uri with the rev of the delete, so an older create or update arriving
-- later (a backfill, a replay) does not resurrect it.
CREATE TABLE IF NOT EXISTS fleet_record_tombstone (
    uri character varying PRIMARY KEY,
    did character varying NOT NULL,
    rev character varying NOT NULL,
    seq bigint,
    "deletedAt" character varying NOT NULL
);

-- A late thread gate re-evaluates the replies already indexed in its thread.
CREATE INDEX IF NOT EXISTS fleet_post_replyroot_idx ON post USING btree ("replyRoot");
