-- 0001: the official AppView schema (@atproto/bsky 0.0.280 Kysely migrations, up to
-- _20260904T130000000Z), as pg_dump prints it. Runs with search_path set to the target schema;
-- tables are unqualified so the schema name is configuration (DATABASE_SCHEMA).
-- Requires the pg_trgm extension (created in schema public by the migrator).

CREATE TABLE activity_subscription (
    creator character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    key character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    post boolean NOT NULL,
    reply boolean NOT NULL
);

CREATE TABLE actor (
    did character varying NOT NULL,
    handle character varying,
    "indexedAt" character varying NOT NULL,
    "takedownRef" character varying,
    "upstreamStatus" character varying,
    "trustedVerifier" boolean DEFAULT false NOT NULL,
    "ageAssuranceStatus" text,
    "ageAssuranceLastInitiatedAt" character varying,
    "ageAssuranceAccess" text,
    "ageAssuranceCountryCode" text,
    "ageAssuranceRegionCode" text
);

CREATE TABLE actor_block (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

CREATE TABLE actor_state (
    did character varying NOT NULL,
    "lastSeenNotifs" character varying NOT NULL,
    "priorityNotifs" boolean DEFAULT false NOT NULL
);

CREATE TABLE actor_sync (
    did character varying NOT NULL,
    "commitCid" character varying NOT NULL,
    "repoRev" character varying
);

CREATE TABLE post (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    text character varying NOT NULL,
    "replyRoot" character varying,
    "replyRootCid" character varying,
    "replyParent" character varying,
    "replyParentCid" character varying,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    langs jsonb,
    "invalidReplyRoot" boolean,
    "violatesThreadGate" boolean,
    tags jsonb,
    "violatesEmbeddingRules" boolean,
    "hasThreadGate" boolean,
    "hasPostGate" boolean
);

CREATE TABLE post_agg (
    uri character varying NOT NULL,
    "likeCount" bigint DEFAULT 0 NOT NULL,
    "replyCount" bigint DEFAULT 0 NOT NULL,
    "repostCount" bigint DEFAULT 0 NOT NULL,
    "quoteCount" bigint DEFAULT 0 NOT NULL,
    "bookmarkCount" bigint DEFAULT 0 NOT NULL
);

CREATE TABLE view_param (
    name character varying NOT NULL,
    value character varying
);

CREATE MATERIALIZED VIEW algo_whats_hot_view AS
 SELECT post.uri,
    post.cid,
    round(((1000000)::numeric * ((post_agg."likeCount")::numeric / (((EXTRACT(epoch FROM age(now(), ((post."indexedAt")::timestamp without time zone)::timestamp with time zone)) / (3600)::numeric) + (2)::numeric) ^ 1.8)))) AS score
   FROM (post
     JOIN post_agg ON (((post_agg.uri)::text = (post.uri)::text)))
  WHERE (((post."indexedAt")::text > ( SELECT to_char((now() - (view_param.value)::interval), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'::text) AS val
           FROM view_param
          WHERE ((view_param.name)::text = 'whats_hot_interval'::text))) AND (post."replyParent" IS NULL) AND (post_agg."likeCount" > ( SELECT (view_param.value)::integer AS val
           FROM view_param
          WHERE ((view_param.name)::text = 'whats_hot_like_threshold'::text))))
  WITH NO DATA;

CREATE TABLE blob_takedown (
    did character varying NOT NULL,
    cid character varying NOT NULL,
    "takedownRef" character varying NOT NULL
);

CREATE TABLE bookmark (
    creator character varying NOT NULL,
    key character varying NOT NULL,
    "subjectUri" character varying NOT NULL,
    "subjectCid" character varying NOT NULL,
    "indexedAt" character varying NOT NULL
);

CREATE TABLE did_cache (
    did character varying NOT NULL,
    doc jsonb NOT NULL,
    "updatedAt" bigint NOT NULL
);

CREATE TABLE draft (
    creator character varying NOT NULL,
    key character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "updatedAt" character varying NOT NULL,
    payload text NOT NULL
);

CREATE TABLE duplicate_record (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    "duplicateOf" character varying NOT NULL,
    "indexedAt" character varying NOT NULL
);

CREATE TABLE feed_generator (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "feedDid" character varying NOT NULL,
    "displayName" character varying,
    description character varying,
    "descriptionFacets" character varying,
    "avatarCid" character varying,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

CREATE TABLE feed_item (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    type character varying NOT NULL,
    "postUri" character varying NOT NULL,
    "originatorDid" character varying NOT NULL,
    "sortAt" character varying NOT NULL
);

CREATE TABLE follow (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

CREATE TABLE kysely_migration (
    name character varying(255) NOT NULL,
    "timestamp" character varying(255) NOT NULL
);

CREATE TABLE kysely_migration_lock (
    id character varying(255) NOT NULL,
    is_locked integer DEFAULT 0 NOT NULL
);

CREATE TABLE label (
    src character varying NOT NULL,
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    val character varying NOT NULL,
    neg boolean NOT NULL,
    cts character varying NOT NULL,
    exp character varying
);

CREATE TABLE labeler (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

CREATE TABLE "like" (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    subject character varying NOT NULL,
    "subjectCid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    via character varying,
    "viaCid" character varying
);

CREATE TABLE list (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    name character varying NOT NULL,
    purpose character varying NOT NULL,
    description character varying,
    "descriptionFacets" character varying,
    "avatarCid" character varying,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

CREATE TABLE list_block (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

CREATE TABLE list_item (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    "listUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

CREATE TABLE list_mute (
    "listUri" character varying NOT NULL,
    "mutedByDid" character varying NOT NULL,
    "createdAt" character varying NOT NULL
);

CREATE TABLE moderation_action (
    id integer NOT NULL,
    action character varying NOT NULL,
    "subjectType" character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    "subjectUri" character varying,
    "subjectCid" character varying,
    reason text NOT NULL,
    "createdAt" character varying NOT NULL,
    "createdBy" character varying NOT NULL,
    "reversedAt" character varying,
    "reversedBy" character varying,
    "reversedReason" text,
    "createLabelVals" character varying,
    "negateLabelVals" character varying,
    "durationInHours" integer,
    "expiresAt" character varying
);

CREATE SEQUENCE moderation_action_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE moderation_action_id_seq OWNED BY moderation_action.id;

CREATE TABLE moderation_action_subject_blob (
    "actionId" integer NOT NULL,
    cid character varying NOT NULL
);

CREATE TABLE moderation_event (
    id integer NOT NULL,
    action character varying NOT NULL,
    "subjectType" character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    "subjectUri" character varying,
    "subjectCid" character varying,
    comment text,
    meta jsonb,
    "createdAt" character varying NOT NULL,
    "createdBy" character varying NOT NULL,
    "reversedAt" character varying,
    "reversedBy" character varying,
    "durationInHours" integer,
    "expiresAt" character varying,
    "reversedReason" text,
    "createLabelVals" character varying,
    "negateLabelVals" character varying,
    "legacyRefId" integer
);

CREATE SEQUENCE moderation_event_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE moderation_event_id_seq OWNED BY moderation_event.id;

CREATE TABLE moderation_report (
    id integer NOT NULL,
    "subjectType" character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    "subjectUri" character varying,
    "subjectCid" character varying,
    "reasonType" character varying NOT NULL,
    reason text,
    "reportedByDid" character varying NOT NULL,
    "createdAt" character varying NOT NULL
);

CREATE SEQUENCE moderation_report_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE moderation_report_id_seq OWNED BY moderation_report.id;

CREATE TABLE moderation_report_resolution (
    "reportId" integer NOT NULL,
    "actionId" integer NOT NULL,
    "createdBy" character varying NOT NULL,
    "createdAt" character varying NOT NULL
);

CREATE TABLE moderation_subject_status (
    id integer NOT NULL,
    did character varying NOT NULL,
    "recordPath" character varying DEFAULT ''::character varying NOT NULL,
    "blobCids" jsonb,
    "recordCid" character varying,
    "reviewState" character varying NOT NULL,
    comment character varying,
    "muteUntil" character varying,
    "lastReviewedAt" character varying,
    "lastReviewedBy" character varying,
    "lastReportedAt" character varying,
    takendown boolean DEFAULT false NOT NULL,
    "suspendUntil" character varying,
    "createdAt" character varying NOT NULL,
    "updatedAt" character varying NOT NULL
);

CREATE SEQUENCE moderation_subject_status_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE moderation_subject_status_id_seq OWNED BY moderation_subject_status.id;

CREATE TABLE mute (
    "subjectDid" character varying NOT NULL,
    "mutedByDid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "onlyReposts" boolean DEFAULT false NOT NULL,
    "onlyQuoteposts" boolean DEFAULT false NOT NULL
);

CREATE TABLE notification (
    id bigint NOT NULL,
    did character varying NOT NULL,
    "recordUri" character varying NOT NULL,
    "recordCid" character varying NOT NULL,
    author character varying NOT NULL,
    reason character varying NOT NULL,
    "reasonSubject" character varying,
    "sortAt" character varying NOT NULL
);

CREATE SEQUENCE notification_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE notification_id_seq OWNED BY notification.id;

CREATE TABLE notification_push_token (
    did character varying NOT NULL,
    platform character varying NOT NULL,
    token character varying NOT NULL,
    "appId" character varying NOT NULL
);

CREATE TABLE op_thread_reply (
    "rootUri" character varying NOT NULL,
    "parentUri" character varying NOT NULL,
    uri character varying NOT NULL,
    "deletedAt" character varying
);

CREATE TABLE post_embed_external (
    "postUri" character varying NOT NULL,
    uri character varying NOT NULL,
    title character varying NOT NULL,
    description character varying NOT NULL,
    "thumbCid" character varying
);

CREATE TABLE post_embed_gallery_image (
    "postUri" character varying NOT NULL,
    "position" character varying NOT NULL,
    "imageCid" character varying NOT NULL,
    alt character varying NOT NULL
);

CREATE TABLE post_embed_image (
    "postUri" character varying NOT NULL,
    "position" character varying NOT NULL,
    "imageCid" character varying NOT NULL,
    alt character varying NOT NULL
);

CREATE TABLE post_embed_record (
    "postUri" character varying NOT NULL,
    "embedUri" character varying NOT NULL,
    "embedCid" character varying NOT NULL
);

CREATE TABLE post_embed_video (
    "postUri" character varying NOT NULL,
    "videoCid" character varying NOT NULL,
    alt character varying
);

CREATE TABLE post_gate (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "postUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL
);

CREATE TABLE private_data (
    "actorDid" character varying NOT NULL,
    namespace character varying NOT NULL,
    key character varying NOT NULL,
    payload text NOT NULL,
    "indexedAt" character varying NOT NULL,
    "updatedAt" character varying NOT NULL
);

CREATE TABLE profile (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "displayName" character varying,
    description character varying,
    "avatarCid" character varying,
    "bannerCid" character varying,
    "indexedAt" character varying NOT NULL,
    "joinedViaStarterPackUri" character varying,
    "createdAt" character varying NOT NULL,
    "pinnedPost" character varying,
    "pinnedPostCid" character varying
);

CREATE TABLE profile_agg (
    did character varying NOT NULL,
    "followersCount" bigint DEFAULT 0 NOT NULL,
    "followsCount" bigint DEFAULT 0 NOT NULL,
    "postsCount" bigint DEFAULT 0 NOT NULL
);

CREATE TABLE quote (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    subject character varying NOT NULL,
    "subjectCid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

CREATE TABLE record (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    did character varying NOT NULL,
    json text NOT NULL,
    "indexedAt" character varying NOT NULL,
    "takedownRef" character varying,
    tags jsonb
);

CREATE TABLE reference_list_opt_out (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

CREATE TABLE repost (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    subject character varying NOT NULL,
    "subjectCid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    via character varying,
    "viaCid" character varying
);

CREATE TABLE starter_pack (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    name character varying
);

CREATE TABLE subscription (
    service character varying NOT NULL,
    method character varying NOT NULL,
    state character varying NOT NULL
);

CREATE TABLE suggested_feed (
    uri character varying NOT NULL,
    "order" integer NOT NULL
);

CREATE TABLE suggested_follow (
    did character varying NOT NULL,
    "order" integer NOT NULL
);

CREATE TABLE tagged_suggestion (
    tag character varying NOT NULL,
    subject character varying NOT NULL,
    "subjectType" character varying NOT NULL
);

CREATE TABLE thread_gate (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "postUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL
);

CREATE TABLE thread_mute (
    "rootUri" character varying NOT NULL,
    "mutedByDid" character varying NOT NULL,
    "createdAt" character varying NOT NULL
);

CREATE TABLE verification (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    rkey character varying NOT NULL,
    creator character varying NOT NULL,
    subject character varying NOT NULL,
    handle character varying NOT NULL,
    "displayName" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortedAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL
);

ALTER TABLE ONLY moderation_action ALTER COLUMN id SET DEFAULT nextval('moderation_action_id_seq'::regclass);

ALTER TABLE ONLY moderation_event ALTER COLUMN id SET DEFAULT nextval('moderation_event_id_seq'::regclass);

ALTER TABLE ONLY moderation_report ALTER COLUMN id SET DEFAULT nextval('moderation_report_id_seq'::regclass);

ALTER TABLE ONLY moderation_subject_status ALTER COLUMN id SET DEFAULT nextval('moderation_subject_status_id_seq'::regclass);

ALTER TABLE ONLY notification ALTER COLUMN id SET DEFAULT nextval('notification_id_seq'::regclass);

ALTER TABLE ONLY activity_subscription
    ADD CONSTRAINT activity_subscription_pkey PRIMARY KEY (creator, key);

ALTER TABLE ONLY activity_subscription
    ADD CONSTRAINT activity_subscription_unique_creator_subject_did UNIQUE (creator, "subjectDid");

ALTER TABLE ONLY actor_block
    ADD CONSTRAINT actor_block_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY actor_block
    ADD CONSTRAINT actor_block_unique_subject UNIQUE (creator, "subjectDid");

ALTER TABLE ONLY actor
    ADD CONSTRAINT actor_handle_key UNIQUE (handle);

ALTER TABLE ONLY actor
    ADD CONSTRAINT actor_pkey PRIMARY KEY (did);

ALTER TABLE ONLY actor_state
    ADD CONSTRAINT actor_state_pkey PRIMARY KEY (did);

ALTER TABLE ONLY actor_sync
    ADD CONSTRAINT actor_sync_pkey PRIMARY KEY (did);

ALTER TABLE ONLY blob_takedown
    ADD CONSTRAINT blob_takedown_pkey PRIMARY KEY (did, cid);

ALTER TABLE ONLY bookmark
    ADD CONSTRAINT bookmark_pkey PRIMARY KEY (creator, key);

ALTER TABLE ONLY bookmark
    ADD CONSTRAINT bookmark_unique_uri_creator UNIQUE ("subjectUri", creator);

ALTER TABLE ONLY did_cache
    ADD CONSTRAINT did_cache_pkey PRIMARY KEY (did);

ALTER TABLE ONLY draft
    ADD CONSTRAINT draft_pkey PRIMARY KEY (creator, key);

ALTER TABLE ONLY duplicate_record
    ADD CONSTRAINT duplicate_record_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY feed_generator
    ADD CONSTRAINT feed_generator_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY feed_item
    ADD CONSTRAINT feed_item_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY follow
    ADD CONSTRAINT follow_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY follow
    ADD CONSTRAINT follow_unique_subject UNIQUE (creator, "subjectDid");

ALTER TABLE ONLY kysely_migration_lock
    ADD CONSTRAINT kysely_migration_lock_pkey PRIMARY KEY (id);

ALTER TABLE ONLY kysely_migration
    ADD CONSTRAINT kysely_migration_pkey PRIMARY KEY (name);

ALTER TABLE ONLY label
    ADD CONSTRAINT label_pkey PRIMARY KEY (src, uri, cid, val);

ALTER TABLE ONLY labeler
    ADD CONSTRAINT labeler_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY "like"
    ADD CONSTRAINT like_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY "like"
    ADD CONSTRAINT like_unique_subject UNIQUE (subject, creator);

ALTER TABLE ONLY list_block
    ADD CONSTRAINT list_block_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY list_block
    ADD CONSTRAINT list_block_unique_subject UNIQUE (creator, "subjectUri");

ALTER TABLE ONLY list_item
    ADD CONSTRAINT list_item_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY list_item
    ADD CONSTRAINT list_item_unique_subject_in_list UNIQUE ("listUri", "subjectDid");

ALTER TABLE ONLY list_mute
    ADD CONSTRAINT list_mute_pkey PRIMARY KEY ("mutedByDid", "listUri");

ALTER TABLE ONLY list
    ADD CONSTRAINT list_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY moderation_action
    ADD CONSTRAINT moderation_action_pkey PRIMARY KEY (id);

ALTER TABLE ONLY moderation_action_subject_blob
    ADD CONSTRAINT moderation_action_subject_blob_pkey PRIMARY KEY ("actionId", cid);

ALTER TABLE ONLY moderation_event
    ADD CONSTRAINT moderation_event_pkey PRIMARY KEY (id);

ALTER TABLE ONLY moderation_report
    ADD CONSTRAINT moderation_report_pkey PRIMARY KEY (id);

ALTER TABLE ONLY moderation_report_resolution
    ADD CONSTRAINT moderation_report_resolution_pkey PRIMARY KEY ("reportId", "actionId");

ALTER TABLE ONLY moderation_subject_status
    ADD CONSTRAINT moderation_status_unique_idx UNIQUE (did, "recordPath");

ALTER TABLE ONLY moderation_subject_status
    ADD CONSTRAINT moderation_subject_status_pkey PRIMARY KEY (id);

ALTER TABLE ONLY mute
    ADD CONSTRAINT mute_pkey PRIMARY KEY ("mutedByDid", "subjectDid");

ALTER TABLE ONLY notification
    ADD CONSTRAINT notification_pkey PRIMARY KEY (id);

ALTER TABLE ONLY notification_push_token
    ADD CONSTRAINT notification_push_token_pkey PRIMARY KEY (did, token);

ALTER TABLE ONLY op_thread_reply
    ADD CONSTRAINT op_thread_reply_pkey PRIMARY KEY ("rootUri", uri);

ALTER TABLE ONLY post_agg
    ADD CONSTRAINT post_agg_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY post_embed_external
    ADD CONSTRAINT post_embed_external_pkey PRIMARY KEY ("postUri");

ALTER TABLE ONLY post_embed_gallery_image
    ADD CONSTRAINT post_embed_gallery_image_pkey PRIMARY KEY ("postUri", "position");

ALTER TABLE ONLY post_embed_image
    ADD CONSTRAINT post_embed_image_pkey PRIMARY KEY ("postUri", "position");

ALTER TABLE ONLY post_embed_record
    ADD CONSTRAINT post_embed_record_pkey PRIMARY KEY ("postUri", "embedUri");

ALTER TABLE ONLY post_embed_video
    ADD CONSTRAINT post_embed_video_pkey PRIMARY KEY ("postUri");

ALTER TABLE ONLY post_gate
    ADD CONSTRAINT post_gate_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY post_gate
    ADD CONSTRAINT "post_gate_postUri_key" UNIQUE ("postUri");

ALTER TABLE ONLY post
    ADD CONSTRAINT post_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY private_data
    ADD CONSTRAINT private_data_pkey PRIMARY KEY ("actorDid", namespace, key);

ALTER TABLE ONLY profile_agg
    ADD CONSTRAINT profile_agg_pkey PRIMARY KEY (did);

ALTER TABLE ONLY profile
    ADD CONSTRAINT profile_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY quote
    ADD CONSTRAINT quote_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY record
    ADD CONSTRAINT record_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY reference_list_opt_out
    ADD CONSTRAINT reference_list_opt_out_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY reference_list_opt_out
    ADD CONSTRAINT reference_list_opt_out_unique_subject UNIQUE (creator, "subjectUri");

ALTER TABLE ONLY repost
    ADD CONSTRAINT repost_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY repost
    ADD CONSTRAINT repost_unique_subject UNIQUE (creator, subject);

ALTER TABLE ONLY starter_pack
    ADD CONSTRAINT starter_pack_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY subscription
    ADD CONSTRAINT subscription_pkey PRIMARY KEY (service, method);

ALTER TABLE ONLY suggested_feed
    ADD CONSTRAINT suggested_feed_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY suggested_follow
    ADD CONSTRAINT suggested_follow_pkey PRIMARY KEY (did);

ALTER TABLE ONLY tagged_suggestion
    ADD CONSTRAINT tagged_suggestion_pkey PRIMARY KEY (tag, subject);

ALTER TABLE ONLY thread_gate
    ADD CONSTRAINT thread_gate_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY thread_gate
    ADD CONSTRAINT "thread_gate_postUri_key" UNIQUE ("postUri");

ALTER TABLE ONLY thread_mute
    ADD CONSTRAINT thread_mute_pkey PRIMARY KEY ("rootUri", "mutedByDid");

ALTER TABLE ONLY verification
    ADD CONSTRAINT verification_pkey PRIMARY KEY (uri);

ALTER TABLE ONLY verification
    ADD CONSTRAINT verification_unique_subject_creator UNIQUE (subject, creator);

ALTER TABLE ONLY view_param
    ADD CONSTRAINT view_param_pkey PRIMARY KEY (name);

CREATE INDEX actor_block_subjectdid_idx ON actor_block USING btree ("subjectDid");

CREATE INDEX actor_handle_tgrm_idx ON actor USING gist (handle public.gist_trgm_ops);

CREATE INDEX algo_whats_hot_view_cursor_idx ON algo_whats_hot_view USING btree (score, cid);

CREATE UNIQUE INDEX algo_whats_hot_view_uri_idx ON algo_whats_hot_view USING btree (uri);

CREATE INDEX draft_creator_updated_at_key_idx ON draft USING btree (creator, "updatedAt", key);

CREATE INDEX duplicate_record_duplicate_of_idx ON duplicate_record USING btree ("duplicateOf");

CREATE INDEX feed_generator_creator_index ON feed_generator USING btree (creator);

CREATE INDEX feed_item_cursor_idx ON feed_item USING btree ("sortAt", cid);

CREATE INDEX feed_item_originator_cursor_idx ON feed_item USING btree ("originatorDid", "sortAt", cid);

CREATE INDEX feed_item_post_uri_idx ON feed_item USING btree ("postUri");

CREATE INDEX follow_creator_cursor_idx ON follow USING btree (creator, "sortAt", cid);

CREATE INDEX follow_subject_cursor_idx ON follow USING btree ("subjectDid", "sortAt", cid);

CREATE INDEX label_cts_idx ON label USING btree (cts);

CREATE INDEX label_uri_index ON label USING btree (uri);

CREATE INDEX labeler_order_by_idx ON labeler USING btree ("sortAt", cid);

CREATE INDEX like_creator_cursor_idx ON "like" USING btree (creator, "sortAt", cid);

CREATE INDEX like_subject_sort_at_creator_idx ON "like" USING btree (subject, "sortAt" DESC) INCLUDE (creator);

CREATE INDEX list_creator_idx ON list USING btree (creator);

CREATE INDEX list_item_creator_idx ON list_item USING btree (creator);

CREATE INDEX list_item_subject_idx ON list_item USING btree ("subjectDid");

CREATE INDEX moderation_action_subject_blob_cid_idx ON moderation_action_subject_blob USING btree (cid);

CREATE INDEX moderation_report_resolution_action_id_idx ON moderation_report_resolution USING btree ("actionId");

CREATE INDEX moderation_subject_status_blob_cids_idx ON moderation_subject_status USING gin ("blobCids");

CREATE INDEX notification_author_idx ON notification USING btree (author);

CREATE INDEX notification_did_sortat_idx ON notification USING btree (did, "sortAt");

CREATE INDEX notification_record_idx ON notification USING btree ("recordUri");

CREATE INDEX post_creator_cursor_idx ON post USING btree (creator, "sortAt", cid);

CREATE INDEX post_order_by_idx ON post USING btree ("sortAt", cid);

CREATE INDEX post_replyparent_idx ON post USING btree ("replyParent") INCLUDE (uri);

CREATE INDEX profile_creator_idx ON profile USING btree (creator);

CREATE INDEX profile_display_name_tgrm_idx ON profile USING gist ("displayName" public.gist_trgm_ops);

CREATE INDEX profile_starter_pack_joined_idx ON profile USING btree ("joinedViaStarterPackUri", "createdAt");

CREATE INDEX quote_subject_cursor_idx ON quote USING btree (subject, "sortAt", cid);

CREATE INDEX record_did_idx ON record USING btree (did);

CREATE INDEX repost_order_by_idx ON repost USING btree ("sortAt", cid);

CREATE INDEX repost_subject_idx ON repost USING btree (subject);

CREATE INDEX starter_pack_creator_order_by_idx ON starter_pack USING btree (creator, "sortAt", cid);

CREATE INDEX starter_pack_name_tgrm_idx ON starter_pack USING gist (name public.gist_trgm_ops);

ALTER TABLE ONLY moderation_action_subject_blob
    ADD CONSTRAINT "moderation_action_subject_blob_actionId_fkey" FOREIGN KEY ("actionId") REFERENCES moderation_action(id);

ALTER TABLE ONLY moderation_report_resolution
    ADD CONSTRAINT "moderation_report_resolution_actionId_fkey" FOREIGN KEY ("actionId") REFERENCES moderation_action(id);

ALTER TABLE ONLY moderation_report_resolution
    ADD CONSTRAINT "moderation_report_resolution_reportId_fkey" FOREIGN KEY ("reportId") REFERENCES moderation_report(id);

-- The official migrator's bookkeeping, so the official AppView served from this database sees
-- its migrations as applied and does not try to run them again.
INSERT INTO kysely_migration (name, "timestamp") VALUES
('_20230309T045948368Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230408T152211201Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230417T210628672Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230420T211446071Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230427T194702079Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230605T144730094Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230607T211442112Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230608T155101190Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230608T201813132Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230608T205147239Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230609T153623961Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230609T232122649Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230610T203555962Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230611T215300060Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230620T161134972Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230627T212437895Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230629T220835893Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230703T045536691Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230720T164800037Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230807T035309811Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230808T172902639Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230810T203349843Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230817T195936007Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230830T205507322Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230904T211011773Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230906T222220386Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230920T213858047Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20230929T192920807Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20231003T202833377Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20231220T225126090Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240124T023719200Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240226T225725627Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240530T170337073Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240606T171229898Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240606T222548219Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240719T203853939Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240723T220700077Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240723T220703655Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240801T193939827Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240808T224251220Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240829T211238293Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20240831T134810923Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20241114T153108102Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250116T222618297Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250207T174822012Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250404T163421487Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250526T023712742Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250528T221913281Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250602T190357447Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250611T140649895Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250627T025331240Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250812T183735692Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20250813T174955711Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20251120T004738098Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20260112T133951271Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20260604T224952774Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20260618T200000000Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20260729T223157563Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20260819T170000000Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20260827T200000000Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
('_20260904T130000000Z', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
ON CONFLICT DO NOTHING;

INSERT INTO kysely_migration_lock (id, is_locked) VALUES ('migration_lock', 0) ON CONFLICT DO NOTHING;

-- Seed rows of the official migration 20230608T155101190Z-algo-whats-hot-view.
INSERT INTO view_param (name, value) VALUES ('whats_hot_like_threshold', '2'), ('whats_hot_interval', '1day');
