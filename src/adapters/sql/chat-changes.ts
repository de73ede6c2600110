import {
  type ChatRecord,
  type Fanout,
  type InboxEntry,
  type ModifyOutcome,
  type NewChat,
  type ParticipantChange,
  participantsOf,
  type Receipt,
} from "../../ports/db.js";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";
import { type ReceiptRow, toReceipt } from "./receipts.js";

export type ChatRow = {
  chat_id: string;
  name: string;
  created_at: Date;
  last_seq: bigint;
};

/** A chat row and its participants' receipts, sorted by user id. */
export function toChatRecord(row: ChatRow, receipts: Receipt[]): ChatRecord {
  return {
    chatId: row.chat_id,
    name: row.name,
    createdAt: row.created_at,
    lastSeq: row.last_seq,
    receipts,
  };
}

/** Code-unit order, which is what the "C" collation of the user id columns sorts by for these ids. */
function sorted(userIds: Iterable<string>): string[] {
  return [...userIds].sort();
}

/** Db.createChat: the chat, its participants and the CREATED update in one transaction. */
export function createChat(
  driver: SqlDriver,
  input: NewChat,
  encodeUpdate: (chat: ChatRecord) => Uint8Array,
): Promise<{ chat: ChatRecord; fanout: Fanout }> {
  const participantUserIds = sorted(new Set(input.participantUserIds));
  return driver.transaction(async (tx) => {
    const [row] = await tx.query<ChatRow>(
      `WITH chat AS (
         INSERT INTO chats (chat_id, name, created_at) VALUES ($1::uuid, $2::text, $3::timestamptz)
         RETURNING chat_id, name, created_at, last_seq
       ), participants AS (
         INSERT INTO chat_participants (chat_id, user_id) SELECT chat_id, unnest($4::text[]) FROM chat
       )
       SELECT * FROM chat`,
      [input.chatId, input.name, input.createdAt, participantUserIds],
    );
    const chat = toChatRecord(
      row!,
      participantUserIds.map((userId) => ({ userId, deliveredSeq: 0n, readSeq: 0n })),
    );
    const body = encodeUpdate(chat);
    const entries = await storeChatUpdate(tx, {
      chatId: chat.chatId,
      messageId: input.updateMessageId,
      at: input.createdAt,
      body,
      recipientUserIds: participantUserIds,
    });
    return { chat, fanout: { body, entries } };
  });
}

/** Db.modifyParticipants: locks the chat row (as sends do), then changes the participants and stores the update. */
export function modifyParticipants(
  driver: SqlDriver,
  change: ParticipantChange,
  encodeUpdate: (chat: ChatRecord) => Uint8Array,
): Promise<ModifyOutcome> {
  return driver.transaction(async (tx): Promise<ModifyOutcome> => {
    const [row] = await tx.query<ChatRow>(
      "SELECT chat_id, name, created_at, last_seq FROM chats WHERE chat_id = $1::uuid FOR UPDATE",
      [change.chatId],
    );
    if (!row) return { kind: "chat_not_found" };
    // Read after the lock, so a change committed while this one waited is seen.
    const receipts = (
      await tx.query<ReceiptRow>(
        "SELECT user_id, delivered_seq, read_seq FROM chat_participants WHERE chat_id = $1::uuid ORDER BY user_id",
        [row.chat_id],
      )
    ).map(toReceipt);
    const before = receipts.map((r) => r.userId);
    if (!before.includes(change.actorUserId)) return { kind: "not_participant" };

    const present = before.includes(change.userId);
    if (present === (change.operation === "add")) return { kind: "unchanged", chat: toChatRecord(row, receipts) };
    if (change.operation === "add" && before.length >= change.maxParticipants) return { kind: "too_many_participants" };

    // A user added starts at the chat's last seq: nothing sent before reaches them, so nothing is unread.
    const added: Receipt = { userId: change.userId, deliveredSeq: row.last_seq, readSeq: row.last_seq };
    const after =
      change.operation === "add"
        ? [...receipts, added].sort((a, b) => (a.userId < b.userId ? -1 : 1)) // code-unit order, as "C" sorts
        : receipts.filter((r) => r.userId !== change.userId);
    // The version tells a send that guessed its seq that the participants it read may be stale (store-messages.ts).
    await tx.query(
      `WITH participant AS (
         ${
           change.operation === "add"
             ? `INSERT INTO chat_participants (chat_id, user_id, delivered_seq, read_seq)
                VALUES ($1::uuid, $2::text, $3::bigint, $3::bigint)`
             : "DELETE FROM chat_participants WHERE chat_id = $1::uuid AND user_id = $2::text"
         }
       )
       UPDATE chats SET participants_version = participants_version + 1 WHERE chat_id = $1::uuid`,
      change.operation === "add" ? [row.chat_id, change.userId, row.last_seq] : [row.chat_id, change.userId],
    );
    const chat = toChatRecord(row, after);
    const body = encodeUpdate(chat);
    const entries = await storeChatUpdate(tx, {
      chatId: chat.chatId,
      messageId: change.updateMessageId,
      at: change.at,
      body,
      // Everyone before or after the change: the removed user hears of the removal too.
      recipientUserIds: change.operation === "add" ? participantsOf(chat) : before,
    });
    return { kind: "changed", chat, fanout: { body, entries } };
  });
}

interface ChatUpdate {
  chatId: string;
  messageId: string;
  at: Date;
  body: Uint8Array;
  recipientUserIds: readonly string[];
}

/**
 * Stores a chat update as a messages row without seq or sender (the body says who changed what) and one inbox entry per
 * device of the recipients.
 */
async function storeChatUpdate(tx: SqlQuery, update: ChatUpdate): Promise<InboxEntry[]> {
  const rows = await tx.query<{ device_key: bigint; event_id: bigint }>(
    `WITH fanout AS (
       SELECT d.device_key, nextval('inbox_event_id_seq') AS event_id
         FROM (SELECT device_key FROM devices WHERE user_id = ANY($4::text[]) ORDER BY device_key) d
     ), inbox_rows AS (
       INSERT INTO inbox (device_key, event_id, created_at, chat_id, message_id)
       SELECT device_key, event_id, $3::timestamptz, $1::uuid, $2::uuid FROM fanout
     ), message_row AS (
       INSERT INTO messages (chat_id, message_id, created_at, body)
       VALUES ($1::uuid, $2::uuid, $3::timestamptz, $5::bytea)
     )
     SELECT device_key, event_id FROM fanout ORDER BY event_id`,
    [update.chatId, update.messageId, update.at, update.recipientUserIds, update.body],
  );
  return rows.map((row) => ({ deviceKey: String(row.device_key), eventId: row.event_id }));
}
