import type { ReadMark, ReadOutcome, Receipt, ReceiptChange } from "../../ports/db.js";
import type { SqlQuery } from "../../ports/sql.js";

export type ReceiptRow = { user_id: string; delivered_seq: bigint; read_seq: bigint };

export function toReceipt(row: ReceiptRow): Receipt {
  return { userId: row.user_id, deliveredSeq: BigInt(row.delivered_seq), readSeq: BigInt(row.read_seq) };
}

/**
 * A chat's receipts (the chat row `c`), sorted by user id, as json of [user, delivered, read] (seqs as text, so json
 * keeps them exact): the drivers parse json alike, arrays not.
 */
export const RECEIPTS_JSON = `
  (SELECT json_agg(json_build_array(q.user_id, q.delivered_seq::text, q.read_seq::text) ORDER BY q.user_id)
     FROM chat_participants q WHERE q.chat_id = c.chat_id)`;

export function receiptsFromJson(json: [string, string, string][] | null): Receipt[] {
  return (json ?? []).map(([userId, delivered, read]) => ({
    userId,
    deliveredSeq: BigInt(delivered),
    readSeq: BigInt(read),
  }));
}

/** How far a user's devices acked a chat: the highest seq among the entries they acked in a batch. */
export interface DeliveredUpTo {
  chatId: string;
  userId: string;
  seq: bigint;
}

/**
 * Moves each (chat, user)'s delivered_seq up to the highest seq its devices acked, in one statement ($1, $2, $3: chat,
 * user, seq; one row per pair). Rows are locked in key order first, as every statement that locks several
 * participants' rows does (ack batches, read marks, the senders' rows in a send), so concurrent ones never deadlock.
 * The receipt as it was is read under the lock: it concerns the participants who sent something after it (their
 * latest message is past it), found through the (chat_id, last_sent_seq) index, as a read's are. Each row found
 * carries its target along, so the update joins only the table's key: a second join to the acked pairs was a nested
 * loop over two CTE scans, quadratic in the batch (a third of a second for a batch of a thousand). The acks name
 * their users (the devices' tokens say who they are): looking each device's user up in `devices` was a hash of the
 * whole table per batch, a third of the statement (bench/README.md).
 */
const ADVANCE_DELIVERED = `
  WITH locked AS MATERIALIZED (
    SELECT p.chat_id, p.user_id, p.delivered_seq AS before, a.seq
      FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS a(chat_id, user_id, seq)
      JOIN chat_participants p ON p.chat_id = a.chat_id AND p.user_id = a.user_id
     WHERE p.delivered_seq < a.seq
     ORDER BY p.chat_id, p.user_id
       FOR UPDATE OF p
  )
  UPDATE chat_participants p SET delivered_seq = l.seq
    FROM locked l
   WHERE p.chat_id = l.chat_id AND p.user_id = l.user_id AND p.delivered_seq < l.seq
  RETURNING p.chat_id, p.user_id, p.delivered_seq, p.read_seq,
            (SELECT json_agg(q.user_id) FROM chat_participants q
              WHERE q.chat_id = p.chat_id AND q.user_id <> p.user_id AND q.last_sent_seq > l.before) AS senders`;

export async function advanceDelivered(db: SqlQuery, acked: readonly DeliveredUpTo[]): Promise<ReceiptChange[]> {
  const highest = new Map<string, DeliveredUpTo>();
  for (const delivered of acked) {
    const key = JSON.stringify([delivered.chatId, delivered.userId]);
    const seen = highest.get(key);
    if (!seen || delivered.seq > seen.seq) highest.set(key, delivered);
  }
  if (highest.size === 0) return [];
  const tops = [...highest.values()];
  const rows = await db.query<ReceiptRow & { chat_id: string; senders: string[] | null }>(ADVANCE_DELIVERED, [
    tops.map((d) => d.chatId),
    tops.map((d) => d.userId),
    tops.map((d) => d.seq),
  ]);
  return rows.map((row) => ({ chatId: row.chat_id, receipt: toReceipt(row), notifyUserIds: row.senders ?? [] }));
}

/**
 * Read marks in one statement: locks the marking participants' rows in key order, moves each (chat, user) to the
 * highest seq marked that the chat has (read implies received), and answers every mark with the receipt after, the
 * chat's last seq, and the receipt's read_seq before (under the lock). A read concerns the users who sent something
 * after that point: those whose latest message is above it (last_sent_seq).
 */
const MARK_READ = `
  WITH marks AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[]) WITH ORDINALITY AS m(chat_id, user_id, seq, i)
  ), locked AS MATERIALIZED (
    SELECT p.chat_id, p.user_id, p.delivered_seq, p.read_seq
      FROM chat_participants p
     WHERE (p.chat_id, p.user_id) IN (SELECT chat_id, user_id FROM marks)
     ORDER BY p.chat_id, p.user_id
       FOR UPDATE OF p
  ), target AS (
    SELECT m.chat_id, m.user_id, max(m.seq) AS seq
      FROM marks m JOIN chats c ON c.chat_id = m.chat_id
     WHERE m.seq <= c.last_seq
     GROUP BY m.chat_id, m.user_id
  ), updated AS (
    UPDATE chat_participants p
       SET read_seq = t.seq, delivered_seq = greatest(p.delivered_seq, t.seq)
      FROM locked l JOIN target t ON t.chat_id = l.chat_id AND t.user_id = l.user_id
     WHERE p.chat_id = l.chat_id AND p.user_id = l.user_id AND p.read_seq < t.seq
    RETURNING p.chat_id, p.user_id, p.delivered_seq, p.read_seq
  )
  SELECT m.i, c.last_seq, l.user_id IS NOT NULL AS member, l.read_seq AS before,
         coalesce(u.delivered_seq, l.delivered_seq) AS delivered_seq, coalesce(u.read_seq, l.read_seq) AS read_seq,
         u.chat_id IS NOT NULL AS moved,
         CASE WHEN u.chat_id IS NOT NULL THEN
           (SELECT json_agg(q.user_id) FROM chat_participants q
             WHERE q.chat_id = m.chat_id AND q.user_id <> m.user_id AND q.last_sent_seq > l.read_seq)
         END AS senders
    FROM marks m
    LEFT JOIN chats c ON c.chat_id = m.chat_id
    LEFT JOIN locked l ON l.chat_id = m.chat_id AND l.user_id = m.user_id
    LEFT JOIN updated u ON u.chat_id = m.chat_id AND u.user_id = m.user_id
   ORDER BY m.i`;

type MarkRow = {
  last_seq: bigint | null;
  member: boolean;
  before: bigint | null;
  delivered_seq: bigint | null;
  read_seq: bigint | null;
  moved: boolean;
  senders: string[] | null;
};

export async function markRead(db: SqlQuery, marks: readonly ReadMark[]): Promise<ReadOutcome[]> {
  if (marks.length === 0) return [];
  const rows = await db.query<MarkRow>(MARK_READ, [
    marks.map((m) => m.chatId),
    marks.map((m) => m.userId),
    marks.map((m) => m.seq),
  ]);
  return rows.map((row, i): ReadOutcome => {
    const mark = marks[i]!;
    if (row.last_seq === null) return { kind: "chat_not_found" };
    if (!row.member) return { kind: "not_participant" };
    const snapshotLastSeq = BigInt(row.last_seq);
    if (mark.seq > snapshotLastSeq) return { kind: "beyond_last_seq", lastSeq: snapshotLastSeq };
    const receipt = { userId: mark.userId, deliveredSeq: BigInt(row.delivered_seq!), readSeq: BigInt(row.read_seq!) };
    // The receipt is read under its lock, the chat as the statement began: a mark or send of the same user that
    // committed in between may have read further than that.
    const lastSeq = receipt.readSeq > snapshotLastSeq ? receipt.readSeq : snapshotLastSeq;
    // The reader's own user too: their other devices clear the chat's unread count.
    const change = row.moved
      ? { chatId: mark.chatId.toLowerCase(), receipt, notifyUserIds: [...(row.senders ?? []), mark.userId] }
      : null;
    return { kind: "read", receipt, lastSeq, change };
  });
}
