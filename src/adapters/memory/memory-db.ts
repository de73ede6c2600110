import {
  type AttachmentRecord,
  type BlockRecord,
  type ChatRecord,
  type Db,
  type DeviceAck,
  type DeviceName,
  deviceNameKey,
  type DeviceRecord,
  type DeviceRegistration,
  type DeviceSignIn,
  type Fanout,
  type InboxEntry,
  type InboxEvent,
  type ModifyOutcome,
  type NewChat,
  type ParticipantChange,
  type PendingSend,
  type ReadMark,
  type ReadOutcome,
  type Receipt,
  type ReceiptChange,
  type RemovedDevice,
  type ResyncCause,
  type SendOutcome,
} from "../../ports/db.js";
import { DAY_MS } from "../../ports/clock.js";
import { dayKey, PARENTS, startOfUtcDay } from "../sql/partitions.js";

/** Chat and attachment ids are uuids: compared without regard to case and returned in lower case, as Postgres does. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface Device extends DeviceName {
  key: bigint;
  resync: ResyncCause | null;
  createdAt: Date;
  lastSeenAt: Date;
}

/** What a removed device's pair keeps (see the device_removals table). */
interface Removal {
  tokensNotBefore: Date | null;
  resync: "retention" | null;
}

interface Chat {
  chatId: string;
  name: string;
  createdAt: Date;
  lastSeq: bigint;
  /** By user id. */
  participants: Map<string, Participant>;
}

/** A participant's receipt (see chat_participants), and the seq of their latest message. */
interface Participant {
  deliveredSeq: bigint;
  readSeq: bigint;
  lastSentSeq: bigint;
}

/** A stored message or chat update, with the inbox entries that still refer to it (event id → device key). */
interface StoredMessage {
  chatId: string;
  messageId: string;
  /** Its day's partition (dayKey). */
  day: string;
  body: Uint8Array;
  entries: Map<bigint, bigint>;
  /** A user's message's seq; absent for a chat update. */
  seq?: bigint;
}

interface SentKey {
  messageId: string;
  seq: bigint;
  sentAt: Date;
}

/**
 * The Db ports in memory, with the SQL implementation's semantics (the contract tests in src/adapters/db.contract.test.ts
 * hold both to it): for fast unit tests of the features, never for serving. Every call runs to completion before the
 * next, so a batch is as atomic as the SQL's transaction: a call that fails (a missing partition, a malformed uuid)
 * fails before it changes anything.
 */
export class MemoryDb implements Db {
  /** user id → device name → device. */
  private readonly devices = new Map<string, Map<string, Device>>();
  private readonly devicesByKey = new Map<bigint, Device>();
  private lastDeviceKey = 0n;
  /** By deviceNameKey. */
  private readonly removals = new Map<string, Removal>();
  /** blocker → blocked user → since when. */
  private readonly blocks = new Map<string, Map<string, Date>>();
  private readonly chats = new Map<string, Chat>();
  /** By `${chatId}/${messageId}`. */
  private readonly messages = new Map<string, StoredMessage>();
  /** device key → event id → message; event ids only grow, so each map is in event id order. */
  private readonly inboxes = new Map<bigint, Map<bigint, StoredMessage>>();
  private lastEventId = 0n;
  /** Idempotency keys by `${senderDeviceKey}/${clientMessageId}`. */
  private readonly sent = new Map<string, SentKey>();
  private readonly attachments = new Map<string, AttachmentRecord>();
  /** attachment id → chats it was sent in. */
  private readonly attachmentChats = new Map<string, Set<string>>();
  /** The days (dayKey) whose partitions exist. */
  private readonly days = new Set<string>();

  async migrate(): Promise<void> {}

  async close(): Promise<void> {}

  // ---- devices ----

  async registerDevices(
    devices: readonly DeviceSignIn[],
    now: Date,
    maxPerUser: number,
  ): Promise<DeviceRegistration[]> {
    // As the SQL decides: each pair once, with its newest token, and a user's new devices admitted in name order.
    const newest = new Map<string, DeviceSignIn>();
    for (const device of devices) {
      const id = deviceNameKey(device);
      const seen = newest.get(id);
      if (!seen || (device.issuedAt && !(seen.issuedAt! >= device.issuedAt))) newest.set(id, device);
    }
    const fresh = [...newest.values()]
      .filter((device) => !this.deviceOf(device))
      .sort((a, b) => compare(a.userId, b.userId) || compare(a.deviceName, b.deviceName));
    for (const { userId, deviceName, issuedAt } of fresh) {
      const removal = this.removals.get(deviceNameKey({ userId, deviceName }));
      if (removal?.tokensNotBefore && !(issuedAt! >= removal.tokensNotBefore)) continue;
      let byName = this.devices.get(userId);
      if (!byName) this.devices.set(userId, (byName = new Map()));
      if (byName.size >= maxPerUser) continue;
      const device = {
        userId,
        deviceName,
        key: ++this.lastDeviceKey,
        resync: removal?.resync ?? null,
        createdAt: now,
        lastSeenAt: now,
      };
      if (removal) removal.resync = null;
      byName.set(deviceName, device);
      this.devicesByKey.set(device.key, device);
    }
    return devices.map((device): DeviceRegistration => {
      const id = deviceNameKey(device);
      const tokensNotBefore = this.removals.get(id)?.tokensNotBefore ?? null;
      const found = this.deviceOf(device);
      if (found) return { kind: "device", deviceKey: String(found.key), tokensNotBefore };
      return tokensNotBefore && !(newest.get(id)!.issuedAt! >= tokensNotBefore)
        ? { kind: "removed", tokensNotBefore }
        : { kind: "too_many_devices" };
    });
  }

  async listDevices(userId: string): Promise<DeviceRecord[]> {
    return [...(this.devices.get(userId)?.values() ?? [])]
      .sort((a, b) => compare(a.deviceName, b.deviceName))
      .map((d) => ({ deviceName: d.deviceName, createdAt: d.createdAt, lastSeenAt: d.lastSeenAt }));
  }

  async removeDevice(name: DeviceName, at: Date): Promise<RemovedDevice | null> {
    const device = this.deviceOf(name);
    if (!device) return null;
    this.removals.set(deviceNameKey(name), { tokensNotBefore: at, resync: null });
    return this.dropDevice(device);
  }

  async markDevicesSeen(deviceKeys: readonly string[], at: Date): Promise<void> {
    for (const key of deviceKeys) {
      const device = this.devicesByKey.get(BigInt(key));
      if (device && device.lastSeenAt < at) device.lastSeenAt = at;
    }
  }

  async removeDevicesSeenBefore(cutoff: Date, limit: number): Promise<RemovedDevice[]> {
    const stale = [...this.devicesByKey.values()].filter((d) => d.lastSeenAt < cutoff).slice(0, limit);
    return stale.map((device) => {
      const id = deviceNameKey(device);
      this.removals.set(id, { tokensNotBefore: this.removals.get(id)?.tokensNotBefore ?? null, resync: "retention" });
      return this.dropDevice(device);
    });
  }

  async existingDevices(deviceKeys: readonly string[]): Promise<string[]> {
    return deviceKeys.filter((key) => this.devicesByKey.has(BigInt(key)));
  }

  // ---- blocks ----

  async blockUser(blockerUserId: string, blockedUserId: string, at: Date): Promise<void> {
    let blocked = this.blocks.get(blockerUserId);
    if (!blocked) this.blocks.set(blockerUserId, (blocked = new Map()));
    if (!blocked.has(blockedUserId)) blocked.set(blockedUserId, at);
  }

  async unblockUser(blockerUserId: string, blockedUserId: string): Promise<void> {
    this.blocks.get(blockerUserId)?.delete(blockedUserId);
  }

  async listBlockedUsers(userId: string, afterUserId: string | null, limit: number): Promise<BlockRecord[]> {
    return [...(this.blocks.get(userId) ?? [])]
      .filter(([blocked]) => afterUserId === null || blocked > afterUserId)
      .sort(([a], [b]) => compare(a, b))
      .slice(0, limit)
      .map(([blocked, at]) => ({ userId: blocked, blockedAt: at }));
  }

  async blockersAmong(userId: string, userIds: readonly string[]): Promise<string[]> {
    return [...new Set(userIds)].filter((other) => this.blocks.get(other)?.has(userId)).sort(compare);
  }

  // ---- chats ----

  async createChat(
    input: NewChat,
    encodeUpdate: (chat: ChatRecord) => Uint8Array,
  ): Promise<{ chat: ChatRecord; fanout: Fanout }> {
    const chatId = uuid(input.chatId);
    if (this.chats.has(chatId)) throw new Error(`chat ${chatId} already exists`);
    const chat: Chat = {
      chatId,
      name: input.name,
      createdAt: input.createdAt,
      lastSeq: 0n,
      participants: new Map(input.participantUserIds.map((userId) => [userId, startingAt(0n)])),
    };
    const updateId = uuid(input.updateMessageId);
    const record = toRecord(chat);
    const body = encodeUpdate(record);
    this.requirePartition(input.createdAt);
    this.chats.set(chatId, chat);
    // A chat update is stored even when no device will read it, as the SQL stores it.
    const entries = this.storeMessage(chatId, updateId, input.createdAt, body, this.devicesOf(chat.participants.keys()));
    return { chat: record, fanout: { body, entries } };
  }

  async modifyParticipants(
    change: ParticipantChange,
    encodeUpdate: (chat: ChatRecord) => Uint8Array,
  ): Promise<ModifyOutcome> {
    const chat = this.chats.get(uuid(change.chatId));
    if (!chat) return { kind: "chat_not_found" };
    if (!chat.participants.has(change.actorUserId)) return { kind: "not_participant" };
    const add = change.operation === "add";
    if (chat.participants.has(change.userId) === add) return { kind: "unchanged", chat: toRecord(chat) };
    if (add && chat.participants.size >= change.maxParticipants) return { kind: "too_many_participants" };

    const before = new Map(chat.participants);
    const after = new Map(before);
    // A user added starts at the chat's last seq: nothing sent before reaches them.
    if (add) after.set(change.userId, startingAt(chat.lastSeq));
    else after.delete(change.userId);
    const updateId = uuid(change.updateMessageId);
    const record = toRecord({ ...chat, participants: after });
    const body = encodeUpdate(record);
    this.requirePartition(change.at);
    chat.participants = after;
    // Everyone before or after the change: the removed user hears of the removal too.
    const recipients = this.devicesOf((add ? after : before).keys());
    const entries = this.storeMessage(chat.chatId, updateId, change.at, body, recipients);
    return { kind: "changed", chat: record, fanout: { body, entries } };
  }

  async getChat(chatId: string): Promise<ChatRecord | null> {
    const chat = this.chats.get(uuid(chatId));
    return chat ? toRecord(chat) : null;
  }

  async listChats(userId: string, afterChatId: string | null, limit: number): Promise<ChatRecord[]> {
    const after = afterChatId === null ? "" : uuid(afterChatId);
    return [...this.chats.values()]
      .filter((chat) => chat.participants.has(userId) && chat.chatId > after)
      .sort((a, b) => (a.chatId < b.chatId ? -1 : 1))
      .slice(0, limit)
      .map(toRecord);
  }

  // ---- messages ----

  async storeMessages(sends: readonly PendingSend[]): Promise<SendOutcome[]> {
    // Decided first, written after, so a send that cannot be written (no partition for its day) fails the whole batch
    // before anything is stored, as the SQL's transaction rolls back.
    const lastSeqs = new Map<Chat, bigint>();
    const earlierInBatch = new Map<string, SentKey>();
    const writes: (() => void)[] = [];
    const outcomes = sends.map((send): SendOutcome => {
      const key = `${send.senderDeviceKey}/${send.clientMessageId}`;
      const earlier = this.sent.get(key) ?? earlierInBatch.get(key);
      if (earlier) return { kind: "duplicate", ...earlier };
      const chat = this.chats.get(uuid(send.chatId));
      if (!chat) return { kind: "chat_not_found" };
      if (!chat.participants.has(send.senderUserId)) return { kind: "not_participant" };
      const blockedBy = (other: string) => this.blocks.get(other)?.has(send.senderUserId);
      if (chat.participants.size === 2 && [...chat.participants.keys()].some(blockedBy)) return { kind: "blocked" };

      const messageId = uuid(send.messageId);
      const seq = (lastSeqs.get(chat) ?? chat.lastSeq) + 1n;
      lastSeqs.set(chat, seq);
      const stored = { messageId: send.messageId, seq, sentAt: send.sentAt };
      earlierInBatch.set(key, stored);
      const recipients = this.devicesOf(chat.participants.keys()).filter((d) => String(d) !== send.senderDeviceKey);
      // A message no device will read is not kept: its seq and idempotency key are all that is needed of it.
      if (recipients.length > 0) this.requirePartition(send.sentAt);
      const attachmentIds = send.attachmentIds.map(uuid);
      const fanout: Fanout = { body: send.encode(seq), entries: [], sentAtMs: send.sentAt.getTime() };
      writes.push(() => {
        if (recipients.length > 0) {
          fanout.entries = this.storeMessage(chat.chatId, messageId, send.sentAt, fanout.body, recipients, seq);
        }
        // Sending marks the chat received and read up to the message.
        const sender = chat.participants.get(send.senderUserId)!;
        sender.lastSentSeq = seq;
        sender.deliveredSeq = max(sender.deliveredSeq, seq);
        sender.readSeq = max(sender.readSeq, seq);
        this.sent.set(key, stored);
        chat.lastSeq = seq;
        for (const attachmentId of attachmentIds) this.linkAttachment(attachmentId, chat.chatId);
      });
      return { kind: "stored", ...stored, fanout };
    });
    for (const write of writes) write();
    return outcomes;
  }

  async pendingFanout(chatId: string, messageId: string): Promise<Fanout | null> {
    const message = this.messages.get(`${uuid(chatId)}/${uuid(messageId)}`);
    if (!message) return null;
    return { body: message.body, entries: entriesOf(message) };
  }

  // ---- inbox ----

  async openInbox(deviceKey: string, limit: number): Promise<{ resync: ResyncCause | null; events: InboxEvent[] }> {
    const device = this.devicesByKey.get(BigInt(deviceKey));
    const resync = device?.resync ?? null;
    if (device) device.resync = null;
    return { resync, events: await this.readInbox(deviceKey, 0n, limit) };
  }

  async readInbox(deviceKey: string, afterEventId: bigint, limit: number): Promise<InboxEvent[]> {
    const events: InboxEvent[] = [];
    for (const [eventId, message] of this.inboxes.get(BigInt(deviceKey)) ?? []) {
      if (events.length === limit) break;
      if (eventId > afterEventId) events.push({ eventId, body: message.body });
    }
    return events;
  }

  async ackEvents(acks: readonly DeviceAck[]): Promise<ReceiptChange[]> {
    /** By chat and acking user: the highest seq acked. */
    const acked = new Map<string, { chat: Chat; userId: string; seq: bigint }>();
    for (const ack of acks) {
      const inbox = this.inboxes.get(BigInt(ack.deviceKey));
      const userId = ack.userId;
      for (const eventId of ack.eventIds) {
        const message = inbox?.get(eventId);
        if (!message) continue;
        this.deleteEntry(inbox!, eventId, message);
        const chat = this.chats.get(message.chatId);
        if (message.seq === undefined || !chat) continue;
        const key = JSON.stringify([chat.chatId, userId]);
        let entry = acked.get(key);
        if (!entry) acked.set(key, (entry = { chat, userId, seq: 0n }));
        entry.seq = max(entry.seq, message.seq);
      }
    }
    const changes: ReceiptChange[] = [];
    for (const { chat, userId, seq } of acked.values()) {
      const participant = chat.participants.get(userId);
      if (!participant || participant.deliveredSeq >= seq) continue;
      const before = participant.deliveredSeq;
      participant.deliveredSeq = seq;
      const notifyUserIds = sentSince(chat, userId, before);
      changes.push({ chatId: chat.chatId, receipt: receiptOf(userId, participant), notifyUserIds });
    }
    return changes;
  }

  // ---- receipts ----

  async markRead(marks: readonly ReadMark[]): Promise<ReadOutcome[]> {
    return marks.map((mark): ReadOutcome => {
      const chat = this.chats.get(uuid(mark.chatId));
      if (!chat) return { kind: "chat_not_found" };
      const participant = chat.participants.get(mark.userId);
      if (!participant) return { kind: "not_participant" };
      if (mark.seq > chat.lastSeq) return { kind: "beyond_last_seq", lastSeq: chat.lastSeq };
      const before = participant.readSeq;
      if (mark.seq <= before) {
        return { kind: "read", receipt: receiptOf(mark.userId, participant), lastSeq: chat.lastSeq, change: null };
      }
      participant.readSeq = mark.seq;
      participant.deliveredSeq = max(participant.deliveredSeq, mark.seq);
      const receipt = receiptOf(mark.userId, participant);
      // Whom the read concerns: those who sent something after the point the reader had read to, and the reader's
      // own user (their other devices).
      const senders = sentSince(chat, mark.userId, before);
      return {
        kind: "read",
        receipt,
        lastSeq: chat.lastSeq,
        change: { chatId: chat.chatId, receipt, notifyUserIds: [...senders, mark.userId] },
      };
    });
  }

  // ---- attachments ----

  async createAttachment(input: AttachmentRecord): Promise<{ attachment: AttachmentRecord; existing: boolean }> {
    const sameBytes = [...this.attachments.values()].find(
      (a) =>
        a.uploaderUserId === input.uploaderUserId &&
        a.sizeBytes === input.sizeBytes &&
        Buffer.compare(a.sha256, input.sha256) === 0,
    );
    if (sameBytes) return { attachment: { ...sameBytes }, existing: true };
    const attachmentId = uuid(input.attachmentId);
    if (this.attachments.has(attachmentId)) throw new Error(`attachment ${attachmentId} already exists`);
    const attachment = { ...input, attachmentId };
    this.attachments.set(attachmentId, attachment);
    return { attachment: { ...attachment }, existing: false };
  }

  async getAttachment(attachmentId: string): Promise<AttachmentRecord | null> {
    const attachment = this.attachments.get(uuid(attachmentId));
    return attachment ? { ...attachment } : null;
  }

  async markAttachmentUploaded(attachmentId: string, at: Date): Promise<void> {
    const attachment = this.attachments.get(uuid(attachmentId));
    if (attachment && attachment.uploadedAt === null) attachment.uploadedAt = at;
  }

  async canDownloadAttachment(attachmentId: string, userId: string): Promise<boolean> {
    const id = uuid(attachmentId);
    const attachment = this.attachments.get(id);
    if (!attachment) return false;
    if (attachment.uploaderUserId === userId) return true;
    return [...(this.attachmentChats.get(id) ?? [])].some((chatId) => this.chats.get(chatId)?.participants.has(userId));
  }

  async markAttachmentKept(attachmentId: string, at: Date): Promise<void> {
    const attachment = this.attachments.get(uuid(attachmentId));
    if (attachment && attachment.keptAt < at) attachment.keptAt = at;
  }

  // ---- retention ----

  async ensurePartitions(from: Date, days: number): Promise<string[]> {
    const created: string[] = [];
    for (let i = 0; i <= days; i++) {
      const day = dayKey(new Date(startOfUtcDay(from).getTime() + i * DAY_MS));
      if (this.days.has(day)) continue;
      this.days.add(day);
      created.push(...PARENTS.map((parent) => `${parent}_p${day}`));
    }
    return created;
  }

  async dropPartitionsBefore(cutoff: Date): Promise<string[]> {
    const cutoffDay = dayKey(cutoff);
    const dropped: string[] = [];
    for (const day of [...this.days].filter((d) => d < cutoffDay).sort()) {
      for (const message of this.messages.values()) {
        if (message.day !== day) continue;
        for (const [eventId, deviceKey] of message.entries) {
          this.devicesByKey.get(deviceKey)!.resync = "retention";
          this.inboxes.get(deviceKey)!.delete(eventId);
        }
        this.messages.delete(messageKey(message));
      }
      this.days.delete(day);
      dropped.push(...PARENTS.map((parent) => `${parent}_p${day}`));
    }
    return dropped;
  }

  async trimInboxes(maxEvents: number, deviceKeys?: readonly string[]): Promise<number> {
    let trimmed = 0;
    const only = deviceKeys && new Set(deviceKeys.map(BigInt));
    for (const [deviceKey, inbox] of this.inboxes) {
      if (inbox.size <= maxEvents || (only && !only.has(deviceKey))) continue;
      // The oldest first: the map is in event id order.
      for (const [eventId, message] of [...inbox].slice(0, inbox.size - maxEvents)) {
        this.deleteEntry(inbox, eventId, message);
      }
      this.devicesByKey.get(deviceKey)!.resync = "inbox_overflow";
      trimmed++;
    }
    return trimmed;
  }

  async forgetSendsBefore(cutoff: Date): Promise<number> {
    let forgotten = 0;
    for (const [key, sent] of this.sent) {
      if (sent.sentAt < cutoff) {
        this.sent.delete(key);
        forgotten++;
      }
    }
    return forgotten;
  }

  async deleteAttachmentsKeptBefore(cutoff: Date, limit: number): Promise<AttachmentRecord[]> {
    const doomed = [...this.attachments.values()]
      .filter((a) => a.keptAt < cutoff)
      .sort((a, b) => a.keptAt.getTime() - b.keptAt.getTime())
      .slice(0, limit);
    for (const attachment of doomed) {
      this.attachments.delete(attachment.attachmentId);
      this.attachmentChats.delete(attachment.attachmentId);
    }
    return doomed;
  }

  // ---- helpers ----

  private deviceOf({ userId, deviceName }: DeviceName): Device | undefined {
    return this.devices.get(userId)?.get(deviceName);
  }

  /** Forgets a device with its inbox, and the messages that were left without an inbox entry. */
  private dropDevice(device: Device): RemovedDevice {
    this.devices.get(device.userId)!.delete(device.deviceName);
    this.devicesByKey.delete(device.key);
    const inbox = this.inboxes.get(device.key);
    for (const [eventId, message] of inbox ?? []) this.deleteEntry(inbox!, eventId, message);
    this.inboxes.delete(device.key);
    return { deviceKey: String(device.key), userId: device.userId, deviceName: device.deviceName };
  }

  /** The keys of every device of these users, in key order (the order the SQL takes event ids in). */
  private devicesOf(userIds: Iterable<string>): bigint[] {
    const keys: bigint[] = [];
    for (const userId of userIds) for (const device of this.devices.get(userId)?.values() ?? []) keys.push(device.key);
    return keys.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Writing a message needs its day's partition, as in SQL (created ahead by the retention job). */
  private requirePartition(at: Date): void {
    const day = dayKey(at);
    if (!this.days.has(day)) throw new Error(`no partition of messages for ${day}`);
  }

  /** Stores a message (ids already in lower case) and one inbox entry per device. */
  private storeMessage(
    chatId: string,
    messageId: string,
    at: Date,
    body: Uint8Array,
    deviceKeys: bigint[],
    seq?: bigint,
  ): InboxEntry[] {
    const message: StoredMessage = { chatId, messageId, day: dayKey(at), body, entries: new Map(), seq };
    this.messages.set(messageKey(message), message);
    for (const deviceKey of deviceKeys) {
      const eventId = ++this.lastEventId;
      message.entries.set(eventId, deviceKey);
      let inbox = this.inboxes.get(deviceKey);
      if (!inbox) this.inboxes.set(deviceKey, (inbox = new Map()));
      inbox.set(eventId, message);
    }
    return entriesOf(message);
  }

  /** Deletes one inbox entry, and its message when that was the message's last. */
  private deleteEntry(inbox: Map<bigint, StoredMessage>, eventId: bigint, message: StoredMessage): void {
    inbox.delete(eventId);
    message.entries.delete(eventId);
    if (message.entries.size === 0) this.messages.delete(messageKey(message));
  }

  private linkAttachment(attachmentId: string, chatId: string): void {
    let chats = this.attachmentChats.get(attachmentId);
    if (!chats) this.attachmentChats.set(attachmentId, (chats = new Set()));
    chats.add(chatId);
  }
}

function uuid(id: string): string {
  if (!UUID.test(id)) throw new Error(`invalid input syntax for type uuid: "${id}"`);
  return id.toLowerCase();
}

function messageKey(message: Pick<StoredMessage, "chatId" | "messageId">): string {
  return `${message.chatId}/${message.messageId}`;
}

function entriesOf(message: StoredMessage): InboxEntry[] {
  return [...message.entries].map(([eventId, deviceKey]) => ({ deviceKey: String(deviceKey), eventId }));
}

/** Participants in code-unit order, as the SQL's "C" collation sorts these ids. */
function toRecord(chat: Chat): ChatRecord {
  const receipts = [...chat.participants]
    .sort(([a], [b]) => compare(a, b))
    .map(([userId, participant]) => receiptOf(userId, participant));
  return {
    chatId: chat.chatId,
    name: chat.name,
    createdAt: chat.createdAt,
    lastSeq: chat.lastSeq,
    receipts,
  };
}

/** The participants but `userId` whose latest message is past `seq`: whom a receipt moving from `seq` concerns. */
function sentSince(chat: Chat, userId: string, seq: bigint): string[] {
  return [...chat.participants].filter(([other, p]) => other !== userId && p.lastSentSeq > seq).map(([other]) => other);
}

function startingAt(seq: bigint): Participant {
  return { deliveredSeq: seq, readSeq: seq, lastSentSeq: 0n };
}

function receiptOf(userId: string, participant: Participant): Receipt {
  return { userId, deliveredSeq: participant.deliveredSeq, readSeq: participant.readSeq };
}

function max(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

/** Code-unit order, which is what the SQL's "C" collation sorts these ids by. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
