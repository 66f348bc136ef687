-- 0005: thread-gate graph rules as of a reply's seq (fleet/indexing/order.py, rules 6 and 8).
-- A thread gate's follower/following/list rules read follows and list items "as of the reply's
-- seq". A follow or list item deleted before a late reply (or a late re-evaluation) is indexed
-- must still count for it, and one written late must re-evaluate the replies it affects.
-- Follows and list items are written by several code paths (per-event plugins, the bulk path,
-- account deletion), so the database keeps both facts itself, with triggers.

-- Late replies and re-evaluations look up the deleted versions of a post's replies.
CREATE INDEX IF NOT EXISTS fleet_record_history_replyparent_idx ON fleet_record_history USING btree ("replyParent");

-- Thread gates of one account (a late follow re-evaluates the replies in its gated threads),
-- current and deleted.
CREATE INDEX IF NOT EXISTS fleet_thread_gate_creator_idx ON thread_gate USING btree (creator);
CREATE INDEX IF NOT EXISTS fleet_record_history_threadgate_did_idx ON fleet_record_history
    USING btree (split_part(uri, '/', 3)) WHERE uri LIKE '%/app.bsky.feed.threadgate/%';

-- Every follow or list item record that was deleted (by its delete, or with its account):
-- the pair it stated and the seq it was written at (0: backfill or unknown, before every live
-- event). It was current for seq_from <= s < the seq of its deletion, which is the uri's
-- fleet_record_tombstone.seq or, for an account deletion, fleet_account_deletion.seq.
CREATE TABLE IF NOT EXISTS fleet_graph_history (
    uri character varying NOT NULL,
    seq_from bigint NOT NULL,
    did character varying NOT NULL,
    subject character varying,
    list_uri character varying,
    PRIMARY KEY (uri, seq_from)
);
CREATE INDEX IF NOT EXISTS fleet_graph_history_pair_idx ON fleet_graph_history USING btree (did, subject);
CREATE INDEX IF NOT EXISTS fleet_graph_history_list_idx ON fleet_graph_history USING btree (list_uri, subject)
    WHERE list_uri IS NOT NULL;

CREATE OR REPLACE FUNCTION fleet_keep_graph_version() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO fleet_graph_history (uri, seq_from, did, subject, list_uri)
    VALUES (OLD.uri, coalesce(OLD.seq, 0), OLD.did, OLD.json::json ->> 'subject',
            CASE WHEN OLD.uri LIKE '%/app.bsky.graph.listitem/%' THEN OLD.json::json ->> 'list' END)
    ON CONFLICT DO NOTHING;
    RETURN OLD;
END $$;

DROP TRIGGER IF EXISTS fleet_keep_graph_version ON record;
CREATE TRIGGER fleet_keep_graph_version BEFORE DELETE ON record FOR EACH ROW
    WHEN (OLD.uri LIKE '%/app.bsky.graph.follow/%' OR OLD.uri LIKE '%/app.bsky.graph.listitem/%')
    EXECUTE FUNCTION fleet_keep_graph_version();

-- The follow and list_item rows written or removed by the current transaction, for the
-- re-evaluation at the end of its batch (order.graph_changed reads and deletes them before
-- the batch commits, so the table is empty between batches). Unlogged: never needed after a
-- crash (an aborted transaction's rows are invisible anyway).
CREATE UNLOGGED TABLE IF NOT EXISTS fleet_graph_change (
    xid bigint NOT NULL DEFAULT txid_current(),
    uri character varying NOT NULL,
    did character varying NOT NULL,
    subject character varying,
    list_uri character varying,
    created boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS fleet_graph_change_xid_idx ON fleet_graph_change USING btree (xid);

CREATE OR REPLACE FUNCTION fleet_note_follow_change() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO fleet_graph_change (uri, did, subject, created) VALUES (NEW.uri, NEW.creator, NEW."subjectDid", true);
        RETURN NEW;
    END IF;
    INSERT INTO fleet_graph_change (uri, did, subject, created) VALUES (OLD.uri, OLD.creator, OLD."subjectDid", false);
    RETURN OLD;
END $$;

CREATE OR REPLACE FUNCTION fleet_note_list_item_change() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO fleet_graph_change (uri, did, subject, list_uri, created)
        VALUES (NEW.uri, NEW.creator, NEW."subjectDid", NEW."listUri", true);
        RETURN NEW;
    END IF;
    INSERT INTO fleet_graph_change (uri, did, subject, list_uri, created)
    VALUES (OLD.uri, OLD.creator, OLD."subjectDid", OLD."listUri", false);
    RETURN OLD;
END $$;

DROP TRIGGER IF EXISTS fleet_note_graph_change ON follow;
CREATE TRIGGER fleet_note_graph_change AFTER INSERT OR DELETE ON follow FOR EACH ROW
    EXECUTE FUNCTION fleet_note_follow_change();
DROP TRIGGER IF EXISTS fleet_note_graph_change ON list_item;
CREATE TRIGGER fleet_note_graph_change AFTER INSERT OR DELETE ON list_item FOR EACH ROW
    EXECUTE FUNCTION fleet_note_list_item_change();
