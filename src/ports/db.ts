/**
 * The storage ports: everything the features ask of the database, split by concern; each feature takes the ones it
 * uses. Postgres is the source of truth for chats, messages and every device's inbox; the implementation
 * (src/adapters/sql) runs the same SQL on real Postgres and on PGlite. Methods that change several rows do it in one
 * transaction. src/adapters/memory holds the same contract in memory, for fast unit tests of the features.
 *
 * Devices are known by a `deviceKey`: the decimal id the database gave the (user, device name) pair the first time
 * the device was seen. Inbox entries, presence and routing use it, so device names only need to be unique per user.
 */
/** A device's ack of events in its inbox; `userId` is the device's user (as its token says), whose receipts move. */
export interface DeviceAck {
  deviceKey: string;
  userId: string;
  eventIds: readonly bigint[];
}

/** A device as a token names it: its user and the name the user gave it. */
export interface DeviceName {
  userId: string;
  deviceName: string;
}

/** A (user, device name) pair as one map key; JSON keeps any two different pairs apart. */
export const deviceNameKey = (device: DeviceName): string => JSON.stringify([device.userId, device.deviceName]);

/** A device as a token names it, and when that token was issued: a removal of the device refuses older tokens. */
export interface DeviceSignIn extends DeviceName {
  /** The token's `iat`; unset, the token counts as older than any removal. */
  issuedAt?: Date;
}

/** What registerDevices answers for one device. */
export type DeviceRegistration =
  /**
   * Its key, found or recorded now, and, if the device was ever removed by its user, when: tokens issued before that
   * are refused (the caller checks its own token against it).
   */
  | { kind: "device"; deviceKey: string; tokensNotBefore: Date | null }
  /** Not recorded: its user removed the device after the token was issued. */
  | { kind: "removed"; tokensNotBefore: Date }
  /** Not recorded: its user already has the most devices allowed. */
  | { kind: "too_many_devices" };

/** One of a user's devices. */
export interface DeviceRecord {
  deviceName: string;
  createdAt: Date;
  /** When it last had a stream open, as markDevicesSeen recorded it; its creation until then. */
  lastSeenAt: Date;
}

/** A device that was removed: its key (never given to another device) and its (user, device name) pair. */
export interface RemovedDevice extends DeviceName {
  deviceKey: string;
}

/**
 * Devices: the key of each (user, device name) pair, and their removal. A removed device has no key and no inbox: a
 * later sign-in of the same pair is a new device with a new key.
 */
export interface DeviceStore {
  /**
   * The key of each device, in input order, recording (with `now` as its creation time) those seen for the first time:
   * a device gets one key, the same every later time, whatever batches it comes in, repeated within a batch or
   * registered by concurrent batches. Several devices at once: the first connects of many devices share one statement
   * (DeviceDirectory batches them). A new device is not recorded when its user has `maxPerUser` devices, however many
   * batches register that user's devices at once, nor when the token is older than the device's removal by its user.
   * A device the retention job removed comes back with a RETENTION resync cause.
   */
  registerDevices(devices: readonly DeviceSignIn[], now: Date, maxPerUser: number): Promise<DeviceRegistration[]>;
  /** The user's devices, by device name. */
  listDevices(userId: string): Promise<DeviceRecord[]>;
  /**
   * Removes the device, its inbox and the messages no other device still needs, and refuses its tokens issued before
   * `at` from now on. Null when the user has no such device.
   */
  removeDevice(device: DeviceName, at: Date): Promise<RemovedDevice | null>;
  /** Records that these devices had a stream open at `at` (never moving a device's time back). */
  markDevicesSeen(deviceKeys: readonly string[], at: Date): Promise<void>;
  /**
   * Removes up to `limit` devices last seen before `cutoff`, their inboxes and the messages no other device still
   * needs, and returns them. Their tokens stay good: such a device may come back, as a new device told to resync.
   */
  removeDevicesSeenBefore(cutoff: Date, limit: number): Promise<RemovedDevice[]>;
  /** Of these device keys, those whose devices have not been removed. */
  existingDevices(deviceKeys: readonly string[]): Promise<string[]>;
}

/** A user someone blocked, and since when. */
export interface BlockRecord {
  userId: string;
  blockedAt: Date;
}

/** Blocks: the users each user refuses. */
export interface BlockStore {
  /** Records that `blockerUserId` blocks `blockedUserId`; a block already there keeps its time. */
  blockUser(blockerUserId: string, blockedUserId: string, at: Date): Promise<void>;
  unblockUser(blockerUserId: string, blockedUserId: string): Promise<void>;
  /** The users `userId` blocked, by user id, after `afterUserId` when given. */
  listBlockedUsers(userId: string, afterUserId: string | null, limit: number): Promise<BlockRecord[]>;
  /** Of `userIds`, those who blocked `userId`, sorted. */
  blockersAmong(userId: string, userIds: readonly string[]): Promise<string[]>;
}

/** Chats and who takes part in them; every change stores a chat-update event in the inboxes of those it concerns. */
export interface ChatStore {
  /**
   * Stores a new chat with its participants and one CREATED chat-update event in the inbox of every device of every
   * participant. `encodeUpdate` turns the stored chat into the event body (see Fanout.body).
   */
  createChat(input: NewChat, encodeUpdate: (chat: ChatRecord) => Uint8Array): Promise<{ chat: ChatRecord; fanout: Fanout }>;
  /**
   * Adds or removes one participant, locking the chat against concurrent sends and changes. On a change it stores one
   * chat-update event for every device of everyone in the chat before or after the change (the removed user
   * included). Adding a participant already there, or removing one who is not, changes nothing (`unchanged`).
   */
  modifyParticipants(
    input: ParticipantChange,
    encodeUpdate: (chat: ChatRecord) => Uint8Array,
  ): Promise<ModifyOutcome>;
  getChat(chatId: string): Promise<ChatRecord | null>;
  /** The user's chats ordered by chat id, after `afterChatId` when given. */
  listChats(userId: string, afterChatId: string | null, limit: number): Promise<ChatRecord[]>;
}

/** Sends: messages stored with their inbox entries. */
export interface MessageStore {
  /**
   * Stores a batch of sends in one transaction (group commit). For each send, in order: a send whose
   * (senderDeviceKey, clientMessageId) was stored before returns that first result and stores nothing; a send to a
   * missing chat or from a non-participant is refused; otherwise the chat's next seq is assigned (gap-free), the
   * message is stored with body `encode(seq)`, one inbox entry is written for every device of every participant except
   * the sending device, the idempotency key is recorded, and the sender's receipt moves to the seq (sending marks
   * the chat read). Refusals do not affect the other sends in the batch.
   */
  storeMessages(sends: readonly PendingSend[]): Promise<SendOutcome[]>;
  /**
   * A stored message's event and the inbox entries it still has (devices that have not acked it), or null when it is
   * not stored: what a retried send pushes again, in case the first attempt's live push never happened.
   */
  pendingFanout(chatId: string, messageId: string): Promise<Fanout | null>;
}

/** A device's inbox: what a device stream reads and what acks delete. */
export interface InboxStore {
  /**
   * What a device stream reads when it opens, in one statement: the reason this device must resync (its unacked events
   * were dropped by retention or by the inbox limit; returned once, then cleared), or null, and the first `limit`
   * events of its inbox, oldest first.
   */
  openInbox(deviceKey: string, limit: number): Promise<{ resync: ResyncCause | null; events: InboxEvent[] }>;
  /** Up to `limit` events of the device's inbox with event id above `afterEventId`, oldest first. */
  readInbox(deviceKey: string, afterEventId: bigint, limit: number): Promise<InboxEvent[]>;
  /**
   * Deletes each ack's events from its device's inbox (ids not in it are ignored), then deletes each message whose
   * last inbox entry this was; several devices' acks at once (acks of concurrent streams share one statement). A
   * device's user has then received every message up to the highest seq it acked in a chat: returns the receipts that
   * moved forward, once per (chat, user), each for the participants who sent something after its old seq.
   */
  ackEvents(acks: readonly DeviceAck[]): Promise<ReceiptChange[]>;
}

/** Read state: how far each participant has read each chat (what they received moves with acks and sends). */
export interface ReceiptStore {
  /**
   * Moves each mark's user's read_seq (and delivered_seq, read implying received) up to its seq, several users' marks
   * at once; a seq at or below the current one changes nothing. Outcomes in input order.
   */
  markRead(marks: readonly ReadMark[]): Promise<ReadOutcome[]>;
}

/** Attachment records: who uploaded what, whether the bytes are there, and who may download them. */
export interface AttachmentStore {
  /**
   * Records an attachment about to be uploaded, unless this uploader already has one with the same sha256 and size:
   * then that one is returned (`existing: true`) and nothing is stored.
   */
  createAttachment(input: AttachmentRecord): Promise<{ attachment: AttachmentRecord; existing: boolean }>;
  getAttachment(attachmentId: string): Promise<AttachmentRecord | null>;
  /** Records that the store holds the attachment's bytes (checked once by the caller). */
  markAttachmentUploaded(attachmentId: string, at: Date): Promise<void>;
  /** Whether the user uploaded the attachment or takes part in a chat where it was sent. */
  canDownloadAttachment(attachmentId: string, userId: string): Promise<boolean>;
  /** Restarts the attachment's lifetime at `at` (a later message carries it); never moves it back. */
  markAttachmentKept(attachmentId: string, at: Date): Promise<void>;
}

/** What the retention job drops, trims and forgets. */
export interface RetentionStore {
  /**
   * Creates the daily partitions of messages and inbox from `from`'s UTC day through `days` days after it, and returns
   * the names of those that did not exist yet (`messages_pYYYYMMDD`, `inbox_pYYYYMMDD`).
   */
  ensurePartitions(from: Date, days: number): Promise<string[]>;
  /**
   * Drops the daily partitions whose whole day is before `cutoff`'s UTC day, after marking every device that still
   * had an event in them for a RETENTION resync. Returns the dropped partitions' names.
   */
  dropPartitionsBefore(cutoff: Date): Promise<string[]>;
  /**
   * Deletes the oldest events of every inbox holding more than `maxEvents` (and the messages left with no inbox
   * entry), marking those devices for an INBOX_OVERFLOW resync; only the inboxes of `deviceKeys` when given. Returns
   * the number of devices trimmed.
   */
  trimInboxes(maxEvents: number, deviceKeys?: readonly string[]): Promise<number>;
  /** Forgets idempotency keys recorded before `cutoff`. Returns how many. */
  forgetSendsBefore(cutoff: Date): Promise<number>;
  /** Deletes the attachment records last kept before `cutoff` and returns them, so their objects can be deleted. */
  deleteAttachmentsKeptBefore(cutoff: Date, limit: number): Promise<AttachmentRecord[]>;
}

/** Every store, for the composition root: one database behind all of them. Features take only the ones they use. */
export interface Db
  extends DeviceStore,
    BlockStore,
    ChatStore,
    MessageStore,
    InboxStore,
    ReceiptStore,
    AttachmentStore,
    RetentionStore {
  /** Runs the versioned migrations that have not run yet. */
  migrate(): Promise<void>;
  close(): Promise<void>;
}

export type ResyncCause = "retention" | "inbox_overflow";

export interface ChatRecord {
  chatId: string;
  name: string;
  createdAt: Date;
  lastSeq: bigint;
  /** One per participant, sorted by user id: who takes part, and how far each has received and read. */
  receipts: Receipt[];
}

/** The chat's participants, sorted. */
export const participantsOf = (chat: ChatRecord): string[] => chat.receipts.map((r) => r.userId);

/**
 * How far one participant has received and read a chat: every message up to deliveredSeq reached one of the user's
 * devices (an ack) and the user read up to readSeq (MarkRead). Sending a message moves both to its seq, and a user
 * added to a chat starts at its last seq. Both only move forward; readSeq <= deliveredSeq.
 */
export interface Receipt {
  userId: string;
  deliveredSeq: bigint;
  readSeq: bigint;
}

/**
 * A receipt that moved forward, and the users to tell: those whose messages it may newly cover (every participant
 * whose latest message is past the receipt's old seq).
 */
export interface ReceiptChange {
  chatId: string;
  receipt: Receipt;
  notifyUserIds: string[];
}

/** A user's word that they read the chat up to seq. */
export interface ReadMark {
  chatId: string;
  userId: string;
  seq: bigint;
}

export type ReadOutcome =
  /**
   * The receipt after the mark, the chat's last seq, and the change when it moved: for the users whose messages the
   * read may newly cover (see ReceiptChange) and the reader's own user (their other devices).
   */
  | { kind: "read"; receipt: Receipt; lastSeq: bigint; change: ReceiptChange | null }
  | { kind: "chat_not_found" }
  | { kind: "not_participant" }
  /** The seq is past the chat's last message. */
  | { kind: "beyond_last_seq"; lastSeq: bigint };

export interface NewChat {
  chatId: string;
  name: string;
  /** The creator included, no duplicates. */
  participantUserIds: string[];
  createdAt: Date;
  /** Id of the chat-update event's message row. */
  updateMessageId: string;
}

export interface ParticipantChange {
  chatId: string;
  actorUserId: string;
  userId: string;
  operation: "add" | "remove";
  /** The most participants a chat may have. */
  maxParticipants: number;
  at: Date;
  /** Id of the chat-update event's message row. */
  updateMessageId: string;
}

export type ModifyOutcome =
  | { kind: "changed"; chat: ChatRecord; fanout: Fanout }
  | { kind: "unchanged"; chat: ChatRecord }
  | { kind: "chat_not_found" }
  | { kind: "not_participant" }
  | { kind: "too_many_participants" };

export interface PendingSend {
  chatId: string;
  /** Used when the send is stored; ignored when it turns out to be a retry. */
  messageId: string;
  senderUserId: string;
  senderDeviceKey: string;
  clientMessageId: string;
  sentAt: Date;
  /** Attachments (already checked to be uploaded); recorded as sent in this chat, for download permission. */
  attachmentIds: readonly string[];
  /** The stored event body for the seq the chat gives this message (see Fanout.body). */
  encode(seq: bigint): Uint8Array;
}

export type SendOutcome =
  | { kind: "stored"; messageId: string; seq: bigint; sentAt: Date; fanout: Fanout }
  | { kind: "duplicate"; messageId: string; seq: bigint; sentAt: Date }
  | { kind: "chat_not_found" }
  | { kind: "not_participant" }
  /** The chat has two participants and the other one blocked the sender. */
  | { kind: "blocked" };

/**
 * A stored event on its way to the devices it was stored for: what live delivery pushes, on this node and through the
 * bus to others.
 */
export interface Fanout {
  /**
   * The event as the features encoded it, once for every device: a serialized palaver.chat.v1.Event with event_id 0,
   * since each device's inbox entry gives the id.
   */
  body: Uint8Array;
  entries: InboxEntry[];
  /** A new message's sent_at in ms since the epoch, for the delivery latency metric; absent for chat updates. */
  sentAtMs?: number;
}

/** One row of a device's inbox: the device and the id its stored event has there. */
export interface InboxEntry {
  deviceKey: string;
  eventId: bigint;
}

/** A stored event as a device's inbox holds it. */
export interface InboxEvent {
  eventId: bigint;
  /** See Fanout.body. */
  body: Uint8Array;
}

export interface AttachmentRecord {
  attachmentId: string;
  uploaderUserId: string;
  /** 32 bytes. */
  sha256: Uint8Array;
  sizeBytes: bigint;
  contentType: string;
  fileName: string;
  /** The key of the object in the blob store. */
  objectKey: string;
  createdAt: Date;
  /** When the upload was confirmed; null until then. */
  uploadedAt: Date | null;
  /** When its lifetime last started: its creation, or a later message that carried it. */
  keptAt: Date;
}
