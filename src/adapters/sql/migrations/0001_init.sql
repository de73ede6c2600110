-- Palaver's schema (docs/architecture.md: "Storage"). Runs on Postgres and on PGlite. A migration runs as one transaction: no
-- BEGIN/COMMIT here.

-- A device is known by the key given to its (user, device name) pair the first time it was seen.
CREATE TABLE devices (
  device_key   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id      text COLLATE "C" NOT NULL,
  device_name  text COLLATE "C" NOT NULL,
  created_at   timestamptz NOT NULL,
  -- Why the device must resync on its next connect (its unacked events were dropped); cleared when taken.
  resync_cause text CHECK (resync_cause IN ('retention', 'inbox_overflow')),
  UNIQUE (user_id, device_name)
);

CREATE TABLE chats (
  chat_id    uuid PRIMARY KEY,
  name       text NOT NULL,
  created_at timestamptz NOT NULL,
  -- The seq of the chat's latest message; sends lock this row to take the next one.
  last_seq   bigint NOT NULL DEFAULT 0
);

CREATE TABLE chat_participants (
  chat_id uuid NOT NULL REFERENCES chats,
  -- "C" collation: sorted by code point, as the participant lists the API returns.
  user_id text COLLATE "C" NOT NULL,
  PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX chat_participants_user_idx ON chat_participants (user_id, chat_id);

-- Idempotency of sends: (sending device, client_message_id) → the first result. Its own table because a
-- partitioned table's unique keys must include the partition key.
CREATE TABLE sent_messages (
  sender_device_key bigint NOT NULL,
  client_message_id text NOT NULL,
  chat_id           uuid NOT NULL,
  message_id        uuid NOT NULL,
  seq               bigint NOT NULL,
  sent_at           timestamptz NOT NULL,
  PRIMARY KEY (sender_device_key, client_message_id)
);
CREATE INDEX sent_messages_sent_at_idx ON sent_messages (sent_at);

CREATE TABLE attachments (
  attachment_id    uuid PRIMARY KEY,
  uploader_user_id text COLLATE "C" NOT NULL,
  sha256           bytea NOT NULL,
  size_bytes       bigint NOT NULL,
  content_type     text NOT NULL,
  file_name        text NOT NULL,
  object_key       text NOT NULL,
  created_at       timestamptz NOT NULL,
  uploaded_at      timestamptz,
  UNIQUE (uploader_user_id, sha256, size_bytes)
);
CREATE INDEX attachments_created_at_idx ON attachments (created_at);

-- Chats an attachment was sent in: who may download it. No foreign key, so a send racing the attachment's expiry
-- cannot fail its whole batch; expiry deletes these rows with the attachment.
CREATE TABLE attachment_chats (
  attachment_id uuid NOT NULL,
  chat_id       uuid NOT NULL,
  PRIMARY KEY (attachment_id, chat_id)
);

-- Messages and chat updates (no seq, no sender), one partition per UTC day (messages_pYYYYMMDD), created ahead and
-- dropped whole by retention. Keyed by chat, so the table can be sharded by chat later.
CREATE TABLE messages (
  chat_id           uuid NOT NULL,
  message_id        uuid NOT NULL,
  created_at        timestamptz NOT NULL,
  seq               bigint,
  sender_user_id    text COLLATE "C",
  sender_device_key bigint,
  client_message_id text,
  -- The encoded event, as the features hand it over.
  body              bytea NOT NULL,
  PRIMARY KEY (chat_id, message_id, created_at)
) PARTITION BY RANGE (created_at);

-- Event ids of all inboxes. Taken while the chat row is locked, so a device's events of one chat increase in commit
-- order; that needs CACHE 1 (the default): a per-session cache would hand out ids out of order.
CREATE SEQUENCE inbox_event_id_seq CACHE 1;

-- What each device has not acked yet; created_at is the message's, so both land in the same day's partition.
-- Keyed by device, so the table can be sharded by device later.
CREATE TABLE inbox (
  device_key bigint NOT NULL,
  event_id   bigint NOT NULL,
  created_at timestamptz NOT NULL,
  chat_id    uuid NOT NULL,
  message_id uuid NOT NULL,
  PRIMARY KEY (device_key, event_id, created_at)
) PARTITION BY RANGE (created_at);
-- Whether a message still has inbox entries (acks delete the message after its last one).
CREATE INDEX inbox_message_idx ON inbox (message_id);
