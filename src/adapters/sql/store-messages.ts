import type { InboxEntry, PendingSend, SendOutcome } from "../../ports/db.js";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";

/**
 * Locks the batch's chats in chat_id order, the order every writer of chats rows uses, so batches and participant
 * changes never deadlock. The lock also serializes sends to a chat: seqs are gap-free and the idempotency and
 * membership reads that follow see everything committed before.
 */
const LOCK_CHATS = `
  SELECT chat_id, last_seq FROM chats WHERE chat_id = ANY($1::uuid[]) ORDER BY chat_id FOR UPDATE`;

/** Per send, in batch order: the stored result of an earlier send with its idempotency key, and membership. */
const CHECK_SENDS = `
  SELECT s.message_id, s.seq, s.sent_at,
         EXISTS (SELECT 1 FROM chat_participants p WHERE p.chat_id = x.chat_id AND p.user_id = x.user_id) AS member
    FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::text[]) WITH ORDINALITY
         AS x(device_key, client_message_id, chat_id, user_id, i)
    LEFT JOIN sent_messages s ON s.sender_device_key = x.device_key AND s.client_message_id = x.client_message_id
   ORDER BY x.i`;

/**
 * Writes the accepted sends in one statement: messages, idempotency keys, attachment links, the chats' last seq, and
 * one inbox entry per device of every participant but the sending one. Event ids are taken in batch order, so a
 * device's events of one chat follow the seqs. Returns the inbox entries.
 */
const WRITE_SENDS = `
  WITH sends AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                         $7::timestamptz[], $8::bytea[]) WITH ORDINALITY
           AS s(chat_id, message_id, seq, sender_user_id, sender_device_key, client_message_id, created_at, body, i)
  ), fanout AS (
    SELECT r.*, nextval('inbox_event_id_seq') AS event_id
      FROM (SELECT s.i, d.device_key, s.chat_id, s.message_id, s.created_at
              FROM sends s
              JOIN chat_participants p ON p.chat_id = s.chat_id
              JOIN devices d ON d.user_id = p.user_id
             WHERE d.device_key <> s.sender_device_key
             ORDER BY s.i, d.device_key) r
  ), inbox_rows AS (
    INSERT INTO inbox (device_key, event_id, created_at, chat_id, message_id)
    SELECT device_key, event_id, created_at, chat_id, message_id FROM fanout
  ), message_rows AS (
    -- A message no device will read (its participants have no other device yet) is not kept: its seq and idempotency
    -- key are all that is needed of it.
    INSERT INTO messages (chat_id, message_id, created_at, seq, sender_user_id, sender_device_key, client_message_id,
                          body)
    SELECT chat_id, message_id, created_at, seq, sender_user_id, sender_device_key, client_message_id, body
      FROM sends s
     WHERE EXISTS (SELECT 1 FROM fanout f WHERE f.i = s.i)
  ), key_rows AS (
    -- A conflict here is the same key sent to another chat at the same moment: the caller's bug, not the batch's.
    INSERT INTO sent_messages (sender_device_key, client_message_id, chat_id, message_id, seq, sent_at)
    SELECT sender_device_key, client_message_id, chat_id, message_id, seq, created_at FROM sends
    ON CONFLICT DO NOTHING
  ), chat_rows AS (
    UPDATE chats c SET last_seq = m.seq
      FROM (SELECT chat_id, max(seq) AS seq FROM sends GROUP BY chat_id) m
     WHERE c.chat_id = m.chat_id
  ), attachment_rows AS (
    INSERT INTO attachment_chats (attachment_id, chat_id)
    SELECT * FROM unnest($9::uuid[], $10::uuid[])
    ON CONFLICT DO NOTHING
  )
  SELECT i, device_key, event_id FROM fanout ORDER BY event_id`;

type CheckRow = { message_id: string | null; seq: bigint | null; sent_at: Date | null; member: boolean };

interface Accepted {
  send: PendingSend;
  seq: bigint;
  outcome: Extract<SendOutcome, { kind: "stored" }>;
}

/** Db.storeMessages: the whole batch in one transaction of three statements. */
export function storeMessages(driver: SqlDriver, sends: readonly PendingSend[]): Promise<SendOutcome[]> {
  if (sends.length === 0) return Promise.resolve([]);
  return driver.transaction(async (tx) => {
    // Both statements go out at once (one round trip instead of two while the batch holds its locks). Postgres still
    // runs them in order, and the check's snapshot is taken when it starts, after the locks are held.
    const [lastSeqs, checks] = await Promise.all([
      lockChats(tx, sends),
      tx.query<CheckRow>(CHECK_SENDS, [
        sends.map((s) => s.senderDeviceKey),
        sends.map((s) => s.clientMessageId),
        sends.map((s) => s.chatId),
        sends.map((s) => s.senderUserId),
      ]),
    ]);

    // Decided in batch order, so a key repeated within the batch is a duplicate of its first send.
    const stored = new Map<string, { messageId: string; seq: bigint; sentAt: Date }>();
    const accepted: Accepted[] = [];
    const outcomes = sends.map((send, i): SendOutcome => {
      const key = `${send.senderDeviceKey}/${send.clientMessageId}`;
      const check = checks[i]!;
      const earlier =
        check.message_id !== null
          ? { messageId: check.message_id, seq: check.seq!, sentAt: check.sent_at! }
          : stored.get(key);
      if (earlier) return { kind: "duplicate", ...earlier };
      const chatKey = send.chatId.toLowerCase();
      const lastSeq = lastSeqs.get(chatKey);
      if (lastSeq === undefined) return { kind: "chat_not_found" };
      if (!check.member) return { kind: "not_participant" };

      const seq = lastSeq + 1n;
      lastSeqs.set(chatKey, seq);
      const outcome = {
        kind: "stored" as const,
        messageId: send.messageId,
        seq,
        sentAt: send.sentAt,
        fanout: { body: send.encode(seq), entries: [] as InboxEntry[], sentAtMs: send.sentAt.getTime() },
      };
      stored.set(key, { messageId: send.messageId, seq, sentAt: send.sentAt });
      accepted.push({ send, seq, outcome });
      return outcome;
    });

    if (accepted.length > 0) {
      const inboxRows = await tx.query<{ i: bigint; device_key: bigint; event_id: bigint }>(
        WRITE_SENDS,
        writeParams(accepted),
      );
      for (const row of inboxRows) {
        const { outcome } = accepted[Number(row.i) - 1]!;
        outcome.fanout.entries.push({ deviceKey: String(row.device_key), eventId: row.event_id });
      }
    }
    return outcomes;
  });
}

/** Locks the chats and returns each existing one's last seq, by lower-case chat id (Postgres prints uuids so). */
async function lockChats(tx: SqlQuery, sends: readonly PendingSend[]): Promise<Map<string, bigint>> {
  const chatIds = [...new Set(sends.map((s) => s.chatId.toLowerCase()))];
  const rows = await tx.query<{ chat_id: string; last_seq: bigint }>(LOCK_CHATS, [chatIds]);
  return new Map(rows.map((row) => [row.chat_id, row.last_seq]));
}

function writeParams(accepted: readonly Accepted[]): unknown[] {
  const links = accepted.flatMap(({ send }) => send.attachmentIds.map((attachmentId) => [attachmentId, send.chatId]));
  return [
    accepted.map(({ send }) => send.chatId),
    accepted.map(({ send }) => send.messageId),
    accepted.map(({ seq }) => seq),
    accepted.map(({ send }) => send.senderUserId),
    accepted.map(({ send }) => send.senderDeviceKey),
    accepted.map(({ send }) => send.clientMessageId),
    accepted.map(({ send }) => send.sentAt),
    accepted.map(({ outcome }) => outcome.fanout.body),
    links.map(([attachmentId]) => attachmentId),
    links.map(([, chatId]) => chatId),
  ];
}
