-- 0004: history for cross-shard order (fleet/indexing/order.py, "evaluate as of the event's seq").
-- Every version of a post, thread gate or post gate that stopped being current at a known
-- firehose seq (deleted, updated, or its account deleted): a reply, quote or re-evaluation
-- indexed late reads the version that was current at its own seq.
-- seq_from: seq of the write that created the version (NULL: backfill, before every live event);
-- seq_to: seq of the write that ended it (the version is current for seq_from <= s < seq_to).
CREATE TABLE IF NOT EXISTS fleet_record_history (
    uri character varying NOT NULL,
    seq_from bigint,
    seq_to bigint NOT NULL,
    json text NOT NULL,
    "invalidReplyRoot" boolean,
    "replyParent" character varying,
    PRIMARY KEY (uri, seq_to)
);

-- Account deletions with their seq: notifications to the account from events before it are
-- dropped whichever shard indexes them last; those after it are kept.
CREATE TABLE IF NOT EXISTS fleet_account_deletion (
    did character varying PRIMARY KEY,
    seq bigint NOT NULL
);

-- A late post gate re-evaluates the posts embedding its post (quote rows may already be gone).
CREATE INDEX IF NOT EXISTS fleet_post_embed_record_embeduri_idx ON post_embed_record USING btree ("embedUri");
