-- Counts the changes to a chat's participants. A send that guessed its seq (a node's last seq for the chat) checks under
-- the chat's lock that neither last_seq nor this moved since its snapshot, so the participants it read are current.
ALTER TABLE chats ADD COLUMN participants_version bigint NOT NULL DEFAULT 0;
