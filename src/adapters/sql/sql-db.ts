import type {
  AttachmentRecord,
  BlockRecord,
  ChatRecord,
  Db,
  DeviceAck,
  DeviceName,
  DeviceRecord,
  DeviceRegistration,
  DeviceSignIn,
  ModifyOutcome,
  NewChat,
  ParticipantChange,
  PendingSend,
  ReadMark,
  ReadOutcome,
  ReceiptChange,
  RemovedDevice,
  ResyncCause,
  SendOutcome,
  InboxEvent,
  Fanout,
} from "../../ports/db.js";
import { DAY_MS } from "../../ports/clock.js";
import type { SqlDriver } from "../../ports/sql.js";
import { LruMap } from "../../lru-map.js";
import { LAST_SEQS_CHATS } from "../../tunables.js";
import { blockersAmong, blockUser, listBlockedUsers, unblockUser } from "./blocks.js";
import { type ChatRow, createChat, modifyParticipants, toChatRecord } from "./chat-changes.js";
import { sqlState } from "./data-errors.js";
import {
  existingDevices,
  listDevices,
  markDevicesSeen,
  registerDevices,
  type RemovalOf,
  removeDevices,
} from "./devices.js";
import { runMigrations } from "./migrate.js";
import { dropPartitionsBefore, ensurePartitions, startOfUtcDay } from "./partitions.js";
import { advanceDelivered, type DeliveredUpTo, markRead, RECEIPTS_JSON, receiptsFromJson } from "./receipts.js";
import { type LastSeqs, storeMessages } from "./store-messages.js";

/** A chat row with its participants' receipts, sorted (the column's "C" collation sorts as the API does). */
const CHAT_COLUMNS = `c.chat_id, c.name, c.created_at, c.last_seq, ${RECEIPTS_JSON} AS receipts`;

/**
 * A page of a device's inbox ($1 device key, after event id $2, at most $3 events), oldest first. The body comes from
 * a subquery per row rather than a join: the plan then stays a merge of the partitions' (device_key, event_id) index
 * scans that stops at the limit, plus one primary-key lookup per event in the one messages partition of its day. A
 * join lets the planner hash the whole messages table instead.
 */
const INBOX_PAGE = `
  SELECT i.event_id,
         (SELECT m.body FROM messages m
           WHERE m.chat_id = i.chat_id AND m.message_id = i.message_id AND m.created_at = i.created_at) AS body
    FROM inbox i
   WHERE i.device_key = $1::bigint AND i.event_id > $2::bigint
   ORDER BY i.event_id
   LIMIT $3::int`;

/** Sorts before every chat id, so "after no chat" needs no second statement. */
const NIL_UUID = "00000000-0000-0000-0000-000000000000";

type ChatWithParticipants = ChatRow & { receipts: [string, string, string][] | null };

type MessageKey = {
  chat_id: string;
  message_id: string;
  created_at: Date;
};

/** An acked entry's chat and seq, and the device that acked it. */
type AckedSeq = { chatId: string; seq: bigint; deviceKey: bigint };

/** What an ack statement deleted (see deleteAcked): entries found per device key, their messages, the highest seqs. */
type AckedEntries = { found: Map<bigint, number>; messages: MessageKey[]; highest: AckedSeq[] };

/** Inbox entries' days to look in: their partitions, from one day's start until another's. */
type Days = { from: Date; until: Date };

/** Every partition there can be. */
const ANY_DAY: Days = { from: new Date(0), until: new Date(Date.UTC(9999, 0, 1)) };

/** Two statements' messages and seqs (their counts are not needed after the first). */
function merge(a: AckedEntries, b: AckedEntries): AckedEntries {
  return { found: a.found, messages: [...a.messages, ...b.messages], highest: [...a.highest, ...b.highest] };
}

type AttachmentRow = {
  attachment_id: string;
  uploader_user_id: string;
  sha256: Uint8Array;
  size_bytes: bigint;
  content_type: string;
  file_name: string;
  object_key: string;
  created_at: Date;
  uploaded_at: Date | null;
  kept_at: Date;
};

/** The Db ports on SQL: the same statements on Postgres (postgres.js) and on PGlite. */
export class SqlDb implements Db {
  constructor(private readonly driver: SqlDriver) {}

  private readonly lastSeqs: LastSeqs = new LruMap(LAST_SEQS_CHATS);

  migrate(): Promise<void> {
    return runMigrations(this.driver);
  }

  close(): Promise<void> {
    return this.driver.close();
  }

  // ---- devices ----

  registerDevices(devices: readonly DeviceSignIn[], now: Date, maxPerUser: number): Promise<DeviceRegistration[]> {
    return registerDevices(this.driver, devices, now, maxPerUser);
  }

  listDevices(userId: string): Promise<DeviceRecord[]> {
    return listDevices(this.driver, userId);
  }

  async removeDevice(device: DeviceName, at: Date): Promise<RemovedDevice | null> {
    return (await this.removeDevices({ kind: "by_user", device, at }))[0] ?? null;
  }

  markDevicesSeen(deviceKeys: readonly string[], at: Date): Promise<void> {
    return markDevicesSeen(this.driver, deviceKeys, at);
  }

  removeDevicesSeenBefore(cutoff: Date, limit: number): Promise<RemovedDevice[]> {
    return this.removeDevices({ kind: "not_seen", cutoff, limit });
  }

  existingDevices(deviceKeys: readonly string[]): Promise<string[]> {
    return existingDevices(this.driver, deviceKeys);
  }

  private async removeDevices(of: RemovalOf): Promise<RemovedDevice[]> {
    const removal = await removeDevices(this.driver, of);
    await this.deleteMessagesWithoutInbox(removal.messages);
    return removal.devices;
  }

  // ---- blocks ----

  blockUser(blockerUserId: string, blockedUserId: string, at: Date): Promise<void> {
    return blockUser(this.driver, blockerUserId, blockedUserId, at);
  }

  unblockUser(blockerUserId: string, blockedUserId: string): Promise<void> {
    return unblockUser(this.driver, blockerUserId, blockedUserId);
  }

  listBlockedUsers(userId: string, afterUserId: string | null, limit: number): Promise<BlockRecord[]> {
    return listBlockedUsers(this.driver, userId, afterUserId, limit);
  }

  blockersAmong(userId: string, userIds: readonly string[]): Promise<string[]> {
    return blockersAmong(this.driver, userId, userIds);
  }

  // ---- chats ----

  createChat(
    input: NewChat,
    encodeUpdate: (chat: ChatRecord) => Uint8Array,
  ): Promise<{ chat: ChatRecord; fanout: Fanout }> {
    return createChat(this.driver, input, encodeUpdate);
  }

  modifyParticipants(input: ParticipantChange, encodeUpdate: (chat: ChatRecord) => Uint8Array): Promise<ModifyOutcome> {
    return modifyParticipants(this.driver, input, encodeUpdate);
  }

  async getChat(chatId: string): Promise<ChatRecord | null> {
    const rows = await this.driver.query<ChatWithParticipants>(
      `SELECT ${CHAT_COLUMNS} FROM chats c WHERE c.chat_id = $1::uuid`,
      [chatId],
    );
    return rows.map(chatWithParticipants)[0] ?? null;
  }

  async listChats(userId: string, afterChatId: string | null, limit: number): Promise<ChatRecord[]> {
    const rows = await this.driver.query<ChatWithParticipants>(
      `SELECT ${CHAT_COLUMNS}
         FROM chat_participants p JOIN chats c ON c.chat_id = p.chat_id
        WHERE p.user_id = $1::text AND p.chat_id > $2::uuid
        ORDER BY p.chat_id
        LIMIT $3::int`,
      [userId, afterChatId ?? NIL_UUID, limit],
    );
    return rows.map(chatWithParticipants);
  }

  // ---- messages ----

  storeMessages(sends: readonly PendingSend[]): Promise<SendOutcome[]> {
    return storeMessages(this.driver, this.lastSeqs, sends);
  }

  async pendingFanout(chatId: string, messageId: string): Promise<Fanout | null> {
    const [row] = await this.driver.query<{ body: Uint8Array; entries: [string, string][] | null }>(
      `SELECT m.body,
              (SELECT json_agg(json_build_array(i.device_key::text, i.event_id::text) ORDER BY i.event_id)
                 FROM inbox i
                WHERE i.message_id = m.message_id AND i.created_at = m.created_at) AS entries
         FROM messages m
        WHERE m.chat_id = $1::uuid AND m.message_id = $2::uuid`,
      [chatId, messageId],
    );
    if (!row) return null;
    const entries = (row.entries ?? []).map(([deviceKey, eventId]) => ({ deviceKey, eventId: BigInt(eventId) }));
    return { body: row.body, entries };
  }

  // ---- attachments ----

  async createAttachment(input: AttachmentRecord): Promise<{ attachment: AttachmentRecord; existing: boolean }> {
    const [created] = await this.driver.query<AttachmentRow>(
      `INSERT INTO attachments (attachment_id, uploader_user_id, sha256, size_bytes, content_type, file_name,
                                object_key, created_at, uploaded_at, kept_at)
       VALUES ($1::uuid, $2::text, $3::bytea, $4::bigint, $5::text, $6::text, $7::text, $8::timestamptz,
               $9::timestamptz, $10::timestamptz)
       ON CONFLICT (uploader_user_id, sha256, size_bytes) DO NOTHING
       RETURNING *`,
      [
        input.attachmentId,
        input.uploaderUserId,
        input.sha256,
        input.sizeBytes,
        input.contentType,
        input.fileName,
        input.objectKey,
        input.createdAt,
        input.uploadedAt,
        input.keptAt,
      ],
    );
    if (created) return { attachment: toAttachment(created), existing: false };
    const [existing] = await this.driver.query<AttachmentRow>(
      "SELECT * FROM attachments WHERE uploader_user_id = $1::text AND sha256 = $2::bytea AND size_bytes = $3::bigint",
      [input.uploaderUserId, input.sha256, input.sizeBytes],
    );
    return { attachment: toAttachment(existing!), existing: true };
  }

  async getAttachment(attachmentId: string): Promise<AttachmentRecord | null> {
    const rows = await this.driver.query<AttachmentRow>("SELECT * FROM attachments WHERE attachment_id = $1::uuid", [
      attachmentId,
    ]);
    return rows.map(toAttachment)[0] ?? null;
  }

  async markAttachmentUploaded(attachmentId: string, at: Date): Promise<void> {
    await this.driver.query(
      "UPDATE attachments SET uploaded_at = $2::timestamptz WHERE attachment_id = $1::uuid AND uploaded_at IS NULL",
      [attachmentId, at],
    );
  }

  async canDownloadAttachment(attachmentId: string, userId: string): Promise<boolean> {
    const [row] = await this.driver.query<{ allowed: boolean }>(
      `SELECT EXISTS (
         SELECT 1 FROM attachments a
          WHERE a.attachment_id = $1::uuid
            AND (a.uploader_user_id = $2::text
                 OR EXISTS (SELECT 1 FROM attachment_chats ac
                              JOIN chat_participants p ON p.chat_id = ac.chat_id AND p.user_id = $2::text
                             WHERE ac.attachment_id = a.attachment_id))
       ) AS allowed`,
      [attachmentId, userId],
    );
    return row!.allowed;
  }

  async markAttachmentKept(attachmentId: string, at: Date): Promise<void> {
    await this.driver.query(
      "UPDATE attachments SET kept_at = $2::timestamptz WHERE attachment_id = $1::uuid AND kept_at < $2::timestamptz",
      [attachmentId, at],
    );
  }

  // ---- inbox ----

  async openInbox(deviceKey: string, limit: number): Promise<{ resync: ResyncCause | null; events: InboxEvent[] }> {
    // One row at least (the cause, taken), and one per event of the first page. The locking subquery reads the cause
    // as it was; of two concurrent opens, the second finds it cleared.
    const rows = await this.driver.query<{ resync_cause: ResyncCause | null; event_id: bigint | null; body: Uint8Array }>(
      `WITH taken AS (
         UPDATE devices d SET resync_cause = NULL
           FROM (SELECT device_key, resync_cause FROM devices
                  WHERE device_key = $1::bigint AND resync_cause IS NOT NULL FOR UPDATE) old
          WHERE d.device_key = old.device_key
         RETURNING old.resync_cause
       )
       SELECT (SELECT resync_cause FROM taken) AS resync_cause, page.event_id, page.body
         FROM (SELECT 1) one LEFT JOIN LATERAL (${INBOX_PAGE}) page ON true
        ORDER BY page.event_id`,
      [deviceKey, 0n, limit],
    );
    return {
      resync: rows[0]?.resync_cause ?? null,
      events: rows.flatMap((row) => (row.event_id === null ? [] : [{ eventId: row.event_id, body: row.body }])),
    };
  }

  async readInbox(deviceKey: string, afterEventId: bigint, limit: number): Promise<InboxEvent[]> {
    const rows = await this.driver.query<{ event_id: bigint; body: Uint8Array }>(INBOX_PAGE, [
      deviceKey,
      afterEventId,
      limit,
    ]);
    return rows.map((row) => ({ eventId: row.event_id, body: row.body }));
  }

  async ackEvents(acks: readonly DeviceAck[]): Promise<ReceiptChange[]> {
    // One DELETE for every (device, event) pair of the batch, joined to the inbox through unnest: many devices' acks
    // cost one statement and one message cleanup instead of two statements each.
    const pairs: [bigint, bigint][] = [];
    /** Each acking device's user, whose receipts its acks move. */
    const userOf = new Map<bigint, string>();
    for (const ack of acks) {
      const deviceKey = BigInt(ack.deviceKey);
      userOf.set(deviceKey, ack.userId);
      for (const eventId of ack.eventIds) pairs.push([deviceKey, eventId]);
    }
    if (pairs.length === 0) return [];
    // Two statements deleting the same entries (a device repeating an ack on two nodes at once: one node never has a
    // device in two batches, see Acks) lock them in the order they delete them, which is the order of the pairs here
    // (the plan walks the unnest and looks each entry up), so sorted pairs cannot deadlock; a plan that walks the
    // inbox instead takes its own single order. Should Postgres still report a deadlock, the statement is run again:
    // it deleted nothing.
    pairs.sort(([a, x], [b, y]) => (a === b ? (x < y ? -1 : x > y ? 1 : 0) : a < b ? -1 : 1));
    // An id acked twice in one batch would count as not found (below), and its device's pairs looked up everywhere.
    const unique = pairs.filter(([d, e], i) => i === 0 || d !== pairs[i - 1][0] || e !== pairs[i - 1][1]);
    // An entry's day is not in what the device acks, so each day's partition costs an index lookup per pair: with a
    // month of partitions, deleting 2,000 entries took 190-280 ms, against 15 ms looking in two days' (bench/README.md).
    // Nearly every ack is of an event stored today or yesterday, so the first statement looks only there (not in the
    // partitions made ahead for the coming days either: a lookup each per pair, in tables empty until their day). The
    // devices it did not find every pair of (older entries, ids acked twice, ids that are not the device's, an entry
    // stored by a node whose clock is ahead) have their pairs looked for everywhere by a second: what the first
    // deleted is gone and found no more, and one device's odd acks cost the batch's other devices nothing.
    const today = startOfUtcDay(new Date());
    const recent = await this.deleteAcked(unique, {
      from: new Date(today.getTime() - DAY_MS),
      until: new Date(today.getTime() + DAY_MS),
    });
    const named = new Map<bigint, number>();
    for (const [deviceKey] of unique) named.set(deviceKey, (named.get(deviceKey) ?? 0) + 1);
    const rest = unique.filter(([deviceKey]) => (recent.found.get(deviceKey) ?? 0) < named.get(deviceKey)!);
    const acked = rest.length === 0 ? recent : merge(recent, await this.deleteAcked(rest, ANY_DAY));
    const delivered = acked.highest.map(
      ({ chatId, seq, deviceKey }): DeliveredUpTo => ({ chatId, seq, userId: userOf.get(deviceKey)! }),
    );
    const [, changes] = await Promise.all([
      this.deleteMessagesWithoutInbox(acked.messages),
      advanceDelivered(this.driver, delivered),
    ]);
    return changes;
  }

  /**
   * Deletes these (device, event) inbox entries stored within `days`, in the pairs' order (see ackEvents), and returns
   * how many it found per device, their messages, and each (chat, device)'s highest seq among them (for the
   * receipts): summed up by Postgres, since a batch's thousands of entries are a few hundred messages and devices, and
   * reading every entry back into Node was most of the server's work while devices drained their backlogs
   * (bench/README.md).
   *
   * Only as index lookups, one per pair and partition: for a batch of thousands of pairs the planner would rather read
   * and sort the day's whole inbox for a merge join (hundreds of ms per batch with 500,000 entries, and growing with
   * the day's traffic), so its other join methods are off for this transaction.
   */
  private async deleteAcked(pairs: readonly [bigint, bigint][], days: Days): Promise<AckedEntries> {
    const rows = await againOnDeadlock(() =>
      this.driver.transaction(async (tx) => {
        await tx.query("SELECT set_config('enable_mergejoin', 'off', true), set_config('enable_hashjoin', 'off', true)");
        return tx.query<MessageKey & { entries: number; device_key: bigint | null; seq: bigint | null }>(
          `WITH gone AS (
             DELETE FROM inbox i USING unnest($1::bigint[], $2::bigint[]) AS a(device_key, event_id)
              WHERE i.device_key = a.device_key AND i.event_id = a.event_id
                AND i.created_at >= $3::timestamptz AND i.created_at < $4::timestamptz
             RETURNING i.device_key, i.chat_id, i.message_id, i.created_at, i.seq
           )
           SELECT chat_id, message_id, created_at, NULL::bigint AS device_key, NULL::bigint AS seq, 0 AS entries
             FROM gone GROUP BY chat_id, message_id, created_at
           UNION ALL
           SELECT chat_id, NULL, NULL, device_key, max(seq), count(*)::int FROM gone GROUP BY chat_id, device_key`,
          [pairs.map(([deviceKey]) => deviceKey), pairs.map(([, eventId]) => eventId), days.from, days.until],
        );
      }),
    );
    const acked: AckedEntries = { found: new Map(), messages: [], highest: [] };
    for (const row of rows) {
      if (row.device_key === null) {
        acked.messages.push(row);
        continue;
      }
      acked.found.set(row.device_key, (acked.found.get(row.device_key) ?? 0) + row.entries);
      // A chat update's entry has no seq: it moves no receipt.
      if (row.seq !== null) {
        acked.highest.push({ chatId: row.chat_id, seq: BigInt(row.seq), deviceKey: row.device_key });
      }
    }
    return acked;
  }

  // ---- receipts ----

  markRead(marks: readonly ReadMark[]): Promise<ReadOutcome[]> {
    return markRead(this.driver, marks);
  }

  // ---- retention ----

  ensurePartitions(from: Date, days: number): Promise<string[]> {
    return ensurePartitions(this.driver, from, days);
  }

  dropPartitionsBefore(cutoff: Date): Promise<string[]> {
    return dropPartitionsBefore(this.driver, cutoff);
  }

  async trimInboxes(maxEvents: number, deviceKeys?: readonly string[]): Promise<number> {
    // Two statement texts rather than a NULL test on $2, so each gets a plan for its own case (one device: its index).
    const which = deviceKeys ? "WHERE device_key = ANY($2::bigint[])" : "";
    const trimmed = await this.driver.query<MessageKey & { device_key: bigint }>(
      `WITH cut AS (
         SELECT o.device_key,
                (SELECT i.event_id FROM inbox i WHERE i.device_key = o.device_key
                  ORDER BY i.event_id DESC OFFSET $1::int LIMIT 1) AS last_dropped
           FROM (SELECT device_key FROM inbox ${which} GROUP BY device_key HAVING count(*) > $1::int) o
       ), marked AS (
         UPDATE devices d SET resync_cause = 'inbox_overflow' FROM cut WHERE d.device_key = cut.device_key
       )
       DELETE FROM inbox i USING cut
        WHERE i.device_key = cut.device_key AND i.event_id <= cut.last_dropped
       RETURNING i.device_key, i.chat_id, i.message_id, i.created_at`,
      deviceKeys ? [maxEvents, deviceKeys] : [maxEvents],
    );
    await this.deleteMessagesWithoutInbox(trimmed);
    return new Set(trimmed.map((row) => row.device_key)).size;
  }

  async forgetSendsBefore(cutoff: Date): Promise<number> {
    const [row] = await this.driver.query<{ n: number }>(
      `WITH gone AS (DELETE FROM sent_messages WHERE sent_at < $1::timestamptz RETURNING 1)
       SELECT count(*)::int AS n FROM gone`,
      [cutoff],
    );
    return row!.n;
  }

  async deleteAttachmentsKeptBefore(cutoff: Date, limit: number): Promise<AttachmentRecord[]> {
    const rows = await this.driver.query<AttachmentRow>(
      `WITH doomed AS (
         SELECT attachment_id FROM attachments WHERE kept_at < $1::timestamptz
          ORDER BY kept_at LIMIT $2::int FOR UPDATE SKIP LOCKED
       ), links AS (
         DELETE FROM attachment_chats WHERE attachment_id IN (SELECT attachment_id FROM doomed)
       )
       DELETE FROM attachments a USING doomed WHERE a.attachment_id = doomed.attachment_id
       RETURNING a.*`,
      [cutoff, limit],
    );
    return rows.map(toAttachment);
  }

  /**
   * Deletes those messages that no inbox entry refers to any more. It must run after the inbox entries' deletion has
   * committed, in a statement of its own: when the last two devices of a message ack at once, a transaction that both
   * deleted and checked would still see the other's uncommitted row, and neither would delete the message. Checked
   * after commit, the later of the two sees both rows gone.
   *
   * Most messages of an ack batch still have other devices' entries, so the inbox is asked first, one index lookup
   * per message that stops at the first entry it finds, and only the messages it no longer names are looked up: a
   * message row read for each of them was a third of this statement, the largest of a drain's Postgres work
   * (bench/README.md). The lookup is a lateral subquery with a LIMIT, which cannot be planned as a join: as a NOT
   * EXISTS, Postgres hashed the day's whole inbox against the batch instead.
   */
  private async deleteMessagesWithoutInbox(keys: readonly MessageKey[]): Promise<void> {
    const unique = [...new Map(keys.map((key) => [key.message_id, key])).values()];
    if (unique.length === 0) return;
    await this.driver.query(
      `WITH unread AS MATERIALIZED (
         SELECT g.chat_id, g.message_id, g.created_at
           FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS g(chat_id, message_id, created_at)
           LEFT JOIN LATERAL (SELECT true AS found FROM inbox i
                               WHERE i.message_id = g.message_id AND i.created_at = g.created_at LIMIT 1) i ON true
          WHERE i.found IS NULL
       ), locked AS (
         SELECT m.chat_id, m.message_id, m.created_at
           FROM messages m JOIN unread g
                ON m.chat_id = g.chat_id AND m.message_id = g.message_id AND m.created_at = g.created_at
          ORDER BY m.chat_id, m.message_id
            FOR UPDATE OF m
       )
       DELETE FROM messages m USING locked l
        WHERE m.chat_id = l.chat_id AND m.message_id = l.message_id AND m.created_at = l.created_at`,
      [unique.map((k) => k.chat_id), unique.map((k) => k.message_id), unique.map((k) => k.created_at)],
    );
  }
}

function chatWithParticipants(row: ChatWithParticipants): ChatRecord {
  return toChatRecord(row, receiptsFromJson(row.receipts));
}

function toAttachment(row: AttachmentRow): AttachmentRecord {
  return {
    attachmentId: row.attachment_id,
    uploaderUserId: row.uploader_user_id,
    sha256: row.sha256,
    sizeBytes: row.size_bytes,
    contentType: row.content_type,
    fileName: row.file_name,
    objectKey: row.object_key,
    createdAt: row.created_at,
    uploadedAt: row.uploaded_at,
    keptAt: row.kept_at,
  };
}

/** Postgres ends one of two deadlocked statements with this SQLSTATE; that statement changed nothing. */
const DEADLOCK_DETECTED = "40P01";
const DEADLOCK_ATTEMPTS = 5;

/** Runs a statement that cannot deadlock in practice (see ackEvents) again if Postgres says it did. */
async function againOnDeadlock<T>(statement: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await statement();
    } catch (error) {
      if (sqlState(error) !== DEADLOCK_DETECTED || attempt === DEADLOCK_ATTEMPTS) throw error;
    }
  }
}
