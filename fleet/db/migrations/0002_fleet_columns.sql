-- 0002: additive columns the fleet needs (never a renamed or missing official column).
-- record.rev: the repo revision of the write that produced the row; writes are rev-guarded
-- so an older event never overwrites a newer one. NULL for rows written by the official indexer.
ALTER TABLE record ADD COLUMN IF NOT EXISTS rev character varying;
