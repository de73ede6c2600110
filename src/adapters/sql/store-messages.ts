import type { InboxEntry, PendingSend, SendOutcome } from "../../ports/db.js";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";
import type { LruMap } from "../../lru-map.js";

/**
 * Locks the batch's chats in chat_id order, the order every writer of chats rows uses, so batches and participant
 * changes never deadlock. The lock also serializes sends to a chat: seqs are gap-free and the idempotency and
 * membership reads that follow see everything committed before.
 */
const LOCK_CHATS = `
  SELECT chat_id, last_seq FROM chats WHERE chat_id = ANY($1::uuid[]) ORDER BY chat_id FOR UPDATE`;

/**
 * Whether the send `s` (chat_id, sender_user_id) goes to a chat of two whose other participant blocked the sender.
 * It starts from the sender's blockers, whom most senders have none of: one index lookup that finds nothing.
 */
const BLOCKED = `
  EXISTS (SELECT 1 FROM blocks b
           WHERE b.blocked_user_id = s.sender_user_id
             AND EXISTS (SELECT 1 FROM chat_participants p
                          WHERE p.chat_id = s.chat_id AND p.user_id = b.blocker_user_id)
             AND (SELECT count(*) FROM chat_participants p WHERE p.chat_id = s.chat_id) = 2)`;

/**
 * The earlier send with the idempotency key of the send `s` (sender_device_key, client_message_id), for a lateral
 * join. A lateral subquery with a LIMIT is looked up by the key's index for each send; as a plain join or EXISTS,
 * Postgres may hash all of sent_messages instead when its statistics are stale (a new table: 700 rows assumed).
 */
const SENT_BEFORE = `
  SELECT k.message_id, k.seq, k.sent_at FROM sent_messages k
   WHERE k.sender_device_key = s.sender_device_key AND k.client_message_id = s.client_message_id
   LIMIT 1`;

/**
 * The sender of the send `s` (chat_id, sender_user_id) as a participant of its chat, for a lateral join: one index
 * lookup per send. As an EXISTS beside other conditions, Postgres may plan it as a hash of the whole
 * chat_participants table, built again by every statement: a sequential scan that made a send batch ten times
 * slower with 5,000 participants (bench/README.md), and grows with the deployment.
 */
const SENDER_MEMBERSHIP = `
  SELECT true AS member FROM chat_participants p
   WHERE p.chat_id = s.chat_id AND p.user_id = s.sender_user_id
   LIMIT 1`;

/** Per send, in batch order: the stored result of an earlier send with its idempotency key, membership, a block. */
const CHECK_SENDS = `
  SELECT k.message_id, k.seq, k.sent_at, m.member IS NOT NULL AS member, ${BLOCKED} AS blocked
    FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::text[]) WITH ORDINALITY
         AS s(sender_device_key, client_message_id, chat_id, sender_user_id, i)
    LEFT JOIN LATERAL (${SENT_BEFORE}) k ON true
    LEFT JOIN LATERAL (${SENDER_MEMBERSHIP}) m ON true
   ORDER BY s.i`;

/**
 * Writes sends whose seqs were decided before the statement, in one statement: messages, idempotency keys, attachment
 * links, the chats' last seq, the senders' receipts, and one inbox entry per device of every participant but the
 * sending one. Event ids are
 * taken in batch order, so a device's events of one chat follow the seqs.
 *
 * It writes a chat's sends only if the decision still holds once it has the chat's row lock: the chat's last seq is
 * the one before the batch's first seq, nothing changed the row since the statement's snapshot (so the membership and
 * idempotency reads below, which see that snapshot, are current), every sender is a participant, no key was sent
 * before and no send goes to a chat of two whose other participant blocked its sender. Other chats' sends are not
 * written and come back without a row, for the caller to try again. The lock is taken in chat_id order, the order
 * every writer of chats rows uses, so writers never deadlock.
 * Returns one row per inbox entry of a written send, and one with a null device for a written send nobody reads.
 */
const WRITE_SENDS = `
  WITH sends AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                         $7::timestamptz[], $8::bytea[]) WITH ORDINALITY
           AS s(chat_id, message_id, seq, sender_user_id, sender_device_key, client_message_id, created_at, body, i)
  ), locked AS MATERIALIZED (
    SELECT chat_id, last_seq, participants_version FROM chats
     WHERE chat_id = ANY($1::uuid[]) ORDER BY chat_id FOR UPDATE
  ), refused AS MATERIALIZED (
    -- Each send checked once (a condition inside the per-chat test below ran once per send and chat).
    SELECT DISTINCT s.chat_id
      FROM sends s
      LEFT JOIN LATERAL (${SENT_BEFORE}) k ON true
      LEFT JOIN LATERAL (${SENDER_MEMBERSHIP}) m ON true
     WHERE k.message_id IS NOT NULL OR m.member IS NULL OR ${BLOCKED}
  ), writable AS (
    -- c is the row as the statement's snapshot saw it; locked, the latest one, read after any wait for the lock.
    SELECT l.chat_id
      FROM locked l JOIN chats c ON c.chat_id = l.chat_id
      JOIN (SELECT chat_id, min(seq) AS seq FROM sends GROUP BY chat_id) f ON f.chat_id = l.chat_id
     WHERE l.last_seq = c.last_seq AND l.participants_version = c.participants_version AND l.last_seq = f.seq - 1
       AND l.chat_id NOT IN (SELECT chat_id FROM refused)
  ), written AS (
    SELECT s.* FROM sends s WHERE s.chat_id IN (SELECT chat_id FROM writable)
  ), fanout AS (
    SELECT r.*, nextval('inbox_event_id_seq') AS event_id
      FROM (SELECT s.i, d.device_key, s.chat_id, s.message_id, s.created_at, s.seq
              FROM written s
              JOIN chat_participants p ON p.chat_id = s.chat_id
              JOIN devices d ON d.user_id = p.user_id
             WHERE d.device_key <> s.sender_device_key
             ORDER BY s.i, d.device_key) r
  ), inbox_rows AS (
    INSERT INTO inbox (device_key, event_id, created_at, chat_id, message_id, seq)
    SELECT device_key, event_id, created_at, chat_id, message_id, seq FROM fanout
  ), message_rows AS (
    -- A message no device will read (its participants have no other device yet) is not kept: its seq and idempotency
    -- key are all that is needed of it.
    INSERT INTO messages (chat_id, message_id, created_at, seq, sender_user_id, sender_device_key, client_message_id,
                          body)
    SELECT chat_id, message_id, created_at, seq, sender_user_id, sender_device_key, client_message_id, body
      FROM written s
     WHERE EXISTS (SELECT 1 FROM fanout f WHERE f.i = s.i)
  ), key_rows AS (
    -- A conflict here is the same key sent to another chat at the same moment: the caller's bug, not the batch's.
    INSERT INTO sent_messages (sender_device_key, client_message_id, chat_id, message_id, seq, sent_at)
    SELECT sender_device_key, client_message_id, chat_id, message_id, seq, created_at FROM written
    ON CONFLICT DO NOTHING
  ), chat_rows AS (
    UPDATE chats c SET last_seq = m.seq
      FROM (SELECT chat_id, max(seq) AS seq FROM written GROUP BY chat_id) m
     WHERE c.chat_id = m.chat_id
  ), sender_locks AS MATERIALIZED (
    -- Sending marks the chat received and read up to the message. The rows are locked in key order first, as ack
    -- batches and read marks lock them, so those never deadlock with a send. Each carries its sender's last seq, so
    -- the update below joins the table's key alone (a join of two CTEs is planned as a loop over both).
    SELECT p.chat_id, p.user_id, w.seq
      FROM (SELECT chat_id, sender_user_id, max(seq) AS seq FROM written GROUP BY chat_id, sender_user_id) w
      JOIN chat_participants p ON p.chat_id = w.chat_id AND p.user_id = w.sender_user_id
     ORDER BY p.chat_id, p.user_id
       FOR UPDATE OF p
  ), sender_rows AS (
    UPDATE chat_participants p
       SET last_sent_seq = l.seq, delivered_seq = greatest(p.delivered_seq, l.seq), read_seq = greatest(p.read_seq, l.seq)
      FROM sender_locks l
     WHERE p.chat_id = l.chat_id AND p.user_id = l.user_id
  ), attachment_rows AS (
    INSERT INTO attachment_chats (attachment_id, chat_id)
    SELECT a.attachment_id, a.chat_id FROM unnest($9::uuid[], $10::uuid[]) AS a(attachment_id, chat_id)
     WHERE a.chat_id IN (SELECT chat_id FROM writable)
    ON CONFLICT DO NOTHING
  )
  SELECT s.i, f.device_key, f.event_id FROM written s LEFT JOIN fanout f ON f.i = s.i ORDER BY s.i, f.event_id`;

type CheckRow = {
  message_id: string | null;
  seq: bigint | null;
  sent_at: Date | null;
  member: boolean;
  blocked: boolean;
};
type WrittenRow = { i: bigint; device_key: bigint | null; event_id: bigint | null };
type Stored = Extract<SendOutcome, { kind: "stored" }>;

interface Decided {
  send: PendingSend;
  /** Its place in the batch given to storeMessages. */
  place: number;
  outcome: Stored;
}

/**
 * The last seq this node stored or read per chat (by lower-case chat id), for the chats it used most recently: the
 * guess that lets a batch be written in one statement. Only a guess: the statement checks it under the chat's lock,
 * and a wrong one (another node sent to the chat, or the participants changed) costs that chat a read and a second
 * statement.
 */
export type LastSeqs = LruMap<string, bigint>;

/**
 * Db.storeMessages. A batch is written by one statement with seqs guessed from the chats' last seqs this node knows
 * (read first, without locks, for chats it does not know). A chat whose guess another writer overtook is read and
 * tried once more. What is still not written (a retry of an earlier send, a sender who is not a participant or is
 * blocked, a chat that does not exist, a key repeated within the batch) is decided in a transaction that locks the
 * chats and reads their seqs, idempotency keys, membership and blocks first.
 */
export async function storeMessages(
  driver: SqlDriver,
  lastSeqs: LastSeqs,
  sends: readonly PendingSend[],
): Promise<SendOutcome[]> {
  const outcomes = new Array<SendOutcome | undefined>(sends.length);
  let pending = sends.map((send, place) => ({ send, place }));
  for (let attempt = 0; attempt < 2 && pending.length > 0; attempt++) {
    await readLastSeqs(driver, lastSeqs, pending);
    const guessed = guessSeqs(pending, lastSeqs);
    if (guessed.length === 0) break;
    const written = await writeDecided(driver, guessed);
    for (const decided of guessed) {
      const chatKey = decided.send.chatId.toLowerCase();
      if (written.has(decided)) {
        outcomes[decided.place] = decided.outcome;
        lastSeqs.set(chatKey, decided.outcome.seq);
      } else {
        lastSeqs.delete(chatKey);
      }
    }
    pending = pending.filter(({ place }) => !outcomes[place]);
  }
  if (pending.length > 0) {
    const decided = await driver.transaction((tx) => decideAndWrite(tx, pending));
    for (const { place, outcome } of decided) {
      outcomes[place] = outcome;
      if (outcome.kind === "stored") lastSeqs.set(sends[place]!.chatId.toLowerCase(), outcome.seq);
    }
  }
  return outcomes as SendOutcome[];
}

/** Reads the last seqs of the chats this node does not know (a chat that does not exist stays unknown). */
async function readLastSeqs(db: SqlQuery, lastSeqs: LastSeqs, sends: readonly { send: PendingSend }[]): Promise<void> {
  const chatKeys = new Set(sends.map(({ send }) => send.chatId.toLowerCase()));
  const unknown = [...chatKeys].filter((chatKey) => lastSeqs.get(chatKey) === undefined);
  if (unknown.length === 0) return;
  const rows = await db.query<{ chat_id: string; last_seq: bigint }>(
    "SELECT chat_id, last_seq FROM chats WHERE chat_id = ANY($1::uuid[])",
    [unknown],
  );
  for (const row of rows) lastSeqs.set(row.chat_id, row.last_seq);
}

/**
 * The sends of the chats whose last seq is known, each given the seq that follows, in batch order; none when a key
 * repeats within the batch (the transaction tells the repeat apart as a duplicate).
 */
function guessSeqs(sends: readonly { send: PendingSend; place: number }[], lastSeqs: LastSeqs): Decided[] {
  const next = new Map<string, bigint>();
  const keys = new Set<string>();
  const guessed: Decided[] = [];
  for (const { send, place } of sends) {
    const key = `${send.senderDeviceKey}/${send.clientMessageId}`;
    if (keys.has(key)) return [];
    keys.add(key);
    const chatKey = send.chatId.toLowerCase();
    const last = next.get(chatKey) ?? lastSeqs.get(chatKey);
    if (last === undefined) continue;
    next.set(chatKey, last + 1n);
    guessed.push({ send, place, outcome: storedOutcome(send, last + 1n) });
  }
  return guessed;
}

function storedOutcome(send: PendingSend, seq: bigint): Stored {
  return {
    kind: "stored",
    messageId: send.messageId,
    seq,
    sentAt: send.sentAt,
    fanout: { body: send.encode(seq), entries: [] as InboxEntry[], sentAtMs: send.sentAt.getTime() },
  };
}

/** Runs WRITE_SENDS; fills the written sends' inbox entries and returns which sends it wrote. */
async function writeDecided(db: SqlQuery, decided: readonly Decided[]): Promise<Set<Decided>> {
  const rows = await db.query<WrittenRow>(WRITE_SENDS, writeParams(decided));
  const written = new Set<Decided>();
  for (const row of rows) {
    const sent = decided[Number(row.i) - 1]!;
    written.add(sent);
    if (row.device_key !== null) {
      sent.outcome.fanout.entries.push({ deviceKey: String(row.device_key), eventId: row.event_id! });
    }
  }
  return written;
}

/**
 * Inside a transaction: locks the sends' chats, reads their last seqs, earlier sends with the same keys and
 * membership, decides each send in batch order and writes the accepted ones. A chat that WRITE_SENDS still refuses
 * (a key of its sends was committed to another chat in between: a client's bug) is decided again, and then sees it.
 */
async function decideAndWrite(
  tx: SqlQuery,
  sends: readonly { send: PendingSend; place: number }[],
): Promise<{ place: number; outcome: SendOutcome }[]> {
  // Both statements go out at once (one round trip instead of two while the batch holds its locks). Postgres still
  // runs them in order, and the check's snapshot is taken when it starts, after the locks are held.
  const [lastSeqs, checks] = await Promise.all([
    lockChats(tx, sends),
    tx.query<CheckRow>(CHECK_SENDS, [
      sends.map(({ send }) => send.senderDeviceKey),
      sends.map(({ send }) => send.clientMessageId),
      sends.map(({ send }) => send.chatId),
      sends.map(({ send }) => send.senderUserId),
    ]),
  ]);

  // Decided in batch order, so a key repeated within the batch is a duplicate of its first send.
  const stored = new Map<string, { messageId: string; seq: bigint; sentAt: Date }>();
  const accepted: Decided[] = [];
  const outcomes = sends.map(({ send, place }, i): { place: number; outcome: SendOutcome } => {
    const key = `${send.senderDeviceKey}/${send.clientMessageId}`;
    const check = checks[i]!;
    const earlier =
      check.message_id !== null
        ? { messageId: check.message_id, seq: check.seq!, sentAt: check.sent_at! }
        : stored.get(key);
    if (earlier) return { place, outcome: { kind: "duplicate", ...earlier } };
    const chatKey = send.chatId.toLowerCase();
    const lastSeq = lastSeqs.get(chatKey);
    if (lastSeq === undefined) return { place, outcome: { kind: "chat_not_found" } };
    if (!check.member) return { place, outcome: { kind: "not_participant" } };
    if (check.blocked) return { place, outcome: { kind: "blocked" } };

    const seq = lastSeq + 1n;
    lastSeqs.set(chatKey, seq);
    const outcome = storedOutcome(send, seq);
    stored.set(key, { messageId: send.messageId, seq, sentAt: send.sentAt });
    accepted.push({ send, place, outcome });
    return { place, outcome };
  });
  if (accepted.length === 0) return outcomes;

  const written = await writeDecided(tx, accepted);
  const refused = new Set(accepted.filter((sent) => !written.has(sent)).map(({ send }) => send.chatId.toLowerCase()));
  if (refused.size === 0) return outcomes;
  const again = await decideAndWrite(
    tx,
    sends.filter(({ send }) => refused.has(send.chatId.toLowerCase())),
  );
  const redecided = new Map(again.map((d) => [d.place, d]));
  return outcomes.map((d) => redecided.get(d.place) ?? d);
}

/** Locks the chats and returns each existing one's last seq, by lower-case chat id (Postgres prints uuids so). */
async function lockChats(tx: SqlQuery, sends: readonly { send: PendingSend }[]): Promise<Map<string, bigint>> {
  const chatIds = [...new Set(sends.map(({ send }) => send.chatId.toLowerCase()))];
  const rows = await tx.query<{ chat_id: string; last_seq: bigint }>(LOCK_CHATS, [chatIds]);
  return new Map(rows.map((row) => [row.chat_id, row.last_seq]));
}

function writeParams(decided: readonly Decided[]): unknown[] {
  const links = decided.flatMap(({ send }) => send.attachmentIds.map((attachmentId) => [attachmentId, send.chatId]));
  return [
    decided.map(({ send }) => send.chatId),
    decided.map(({ send }) => send.messageId),
    decided.map(({ outcome }) => outcome.seq),
    decided.map(({ send }) => send.senderUserId),
    decided.map(({ send }) => send.senderDeviceKey),
    decided.map(({ send }) => send.clientMessageId),
    decided.map(({ send }) => send.sentAt),
    decided.map(({ outcome }) => outcome.fanout.body),
    links.map(([attachmentId]) => attachmentId),
    links.map(([, chatId]) => chatId),
  ];
}
