-- An attachment lives for its lifetime after the latest message that carried it, not after its first upload: a
-- forward or a re-send of the same bytes weeks later must not lose its media before the message itself goes.
ALTER TABLE attachments ADD COLUMN kept_at timestamptz;
UPDATE attachments SET kept_at = created_at;
ALTER TABLE attachments ALTER COLUMN kept_at SET NOT NULL;
DROP INDEX attachments_created_at_idx;
CREATE INDEX attachments_kept_at_idx ON attachments (kept_at);
