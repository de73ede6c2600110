-- Receipts (issue: read state and typing): how far each participant has received and read each chat, kept on the
-- participant's row, so a receipt costs an update of one row and never a stored event.
--   delivered_seq: every message up to it reached one of the user's devices (an ack), or the user sent it;
--   read_seq:      the user marked the chat read up to it, or sent a message there (sending implies having read);
--   last_sent_seq: the seq of the user's latest message in the chat: whom a read receipt concerns.
ALTER TABLE chat_participants
  ADD COLUMN delivered_seq bigint NOT NULL DEFAULT 0,
  ADD COLUMN read_seq      bigint NOT NULL DEFAULT 0,
  ADD COLUMN last_sent_seq bigint NOT NULL DEFAULT 0;

-- An inbox entry's message seq (null for a chat update): an ack moves its user's delivered_seq without reading the
-- message.
ALTER TABLE inbox ADD COLUMN seq bigint;

-- Whom a receipt concerns: the participants whose latest message is past the reader's old read_seq, found without
-- reading every participant of a large group.
CREATE INDEX chat_participants_last_sent_idx ON chat_participants (chat_id, last_sent_seq);

-- What was sent before the upgrade counts as received and read: otherwise every old chat would show its whole history
-- unread, most of it long deleted.
UPDATE chat_participants p SET delivered_seq = c.last_seq, read_seq = c.last_seq FROM chats c WHERE c.chat_id = p.chat_id;
