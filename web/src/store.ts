import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ChatUpdateKind, type Event, type NewMessage } from "../../gen/palaver/chat/v1/event_pb.js";
import type { Attachment, Chat, Receipt } from "../../gen/palaver/chat/v1/model_pb.js";

/** How far one participant has received and read a chat; both only move forward, and read <= delivered. */
export interface ReceiptEntry {
  delivered: number;
  read: number;
}

export interface ChatEntry {
  chatId: string;
  name: string;
  participants: string[];
  lastSeq: number;
  /** False once this user was removed: the chat stays readable here, the server refuses sends. */
  member: boolean;
  /** Each participant's receipt, by user id (participants not listed have received nothing yet). */
  receipts: Record<string, ReceiptEntry>;
  /** lastSeq minus my read seq: every message above it is from someone else, since sending marks read. */
  unread: number;
  /** When something last happened in it (ms), for the list's order. */
  lastActivity: number;
  /** Only an id so far (a message arrived before its chat): GetChat fills it in. */
  stub?: boolean;
}

export interface AttachmentEntry {
  attachmentId: string;
  contentType: string;
  sizeBytes: number;
  fileName: string;
  /** This tab's own copy of a file it sent (an object URL); never stored. */
  localUrl?: string;
}

export type MessageStatus = "sending" | "sent" | "failed";

/** How far one of my stored messages got: to every other participant's device, or read by all of them. */
export type ReceiptLevel = "sent" | "delivered" | "read";
const LEVELS: ReceiptLevel[] = ["sent", "delivered", "read"];

export interface MessageEntry {
  kind: "message";
  key: string;
  chatId: string;
  messageId: string | null;
  /** The server's place for it in the chat; null until a send is acknowledged. */
  seq: number | null;
  sender: string;
  mine: boolean;
  text: string;
  attachments: AttachmentEntry[];
  sentAt: number;
  clientMessageId: string;
  status: MessageStatus;
  /** My stored messages only: the highest level reached, kept so the ticks never go back (someone joining later). */
  receipt?: ReceiptLevel;
  /** What a send in progress is doing ("Uploading…"). */
  progress?: string;
  error?: string;
}

/** A line about the chat itself ("alice added carol"), placed after the message that was newest when it happened. */
export interface NoticeEntry {
  kind: "notice";
  key: string;
  chatId: string;
  afterSeq: number;
  text: string;
  at: number;
}

export type TimelineEntry = MessageEntry | NoticeEntry;

/** How much history this device keeps per chat: the server forgets what was acked, so this is all there is. */
const KEEP_PER_CHAT = 300;
const KEEP_EVENT_IDS = 5000;

interface Snapshot {
  version: 1;
  chats: ChatEntry[];
  timelines: Record<string, TimelineEntry[]>;
  seenEventIds: string[];
}

/**
 * What this device knows: its chats and their timelines, applied from events (deduplicated by event_id, messages
 * kept in seq order), from ListChats, and from its own sends; and everyone's receipts, from which the unread counts
 * and my messages' ticks follow. Changes are announced once per task to listeners.
 */
export class ChatStore {
  private readonly chats = new Map<string, ChatEntry>();
  private readonly timelines = new Map<string, TimelineEntry[]>();
  private readonly seenEventIds = new Set<string>();
  private readonly listeners = new Set<() => void>();
  /** Chats whose unread count and ticks are recomputed before listeners run (once per task, not per event). */
  private readonly unsettled = new Set<string>();
  private announced = false;
  activeChatId: string | null = null;

  constructor(readonly me: string) {}

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  chat(chatId: string): ChatEntry | undefined {
    return this.chats.get(chatId);
  }

  /** Most recently active first. */
  chatList(): ChatEntry[] {
    return [...this.chats.values()].sort((a, b) => b.lastActivity - a.lastActivity || a.chatId.localeCompare(b.chatId));
  }

  /** Messages by seq, each notice after the message it followed, sends still in flight last. */
  timeline(chatId: string): TimelineEntry[] {
    return [...(this.timelines.get(chatId) ?? [])].sort(compareEntries);
  }

  /** The newest entry, without sorting the whole timeline (the chat list asks for every chat on each render). */
  lastEntry(chatId: string): TimelineEntry | undefined {
    let last: TimelineEntry | undefined;
    for (const entry of this.timelines.get(chatId) ?? []) {
      if (!last || compareEntries(entry, last) > 0) last = entry;
    }
    return last;
  }

  /** Opening a chat does not read it by itself: MarkRead does, once the page is seen (reads.ts). */
  select(chatId: string | null): void {
    this.activeChatId = chatId;
    this.changed();
  }

  /** How far my user has read the chat. */
  myRead(chatId: string): number {
    return this.chats.get(chatId)?.receipts[this.me]?.read ?? 0;
  }

  /** A receipt from the server (MarkRead's answer), merged like any other: only forward. */
  applyReceipt(chatId: string, receipt: Receipt): void {
    this.mergeReceipt(chatId, receipt.userId, Number(receipt.deliveredSeq), Number(receipt.readSeq));
    this.changed();
  }

  /** I am reading the chat up to `seq` now: counted at once, before the server has the MarkRead. */
  markReadLocally(chatId: string, seq: number): void {
    if (this.mergeReceipt(chatId, this.me, seq, seq)) this.changed();
  }

  /** Applies one event from the stream; false when it was seen before (a redelivery after a reconnect). */
  applyEvent(event: Event): boolean {
    const id = event.eventId.toString();
    if (event.eventId !== 0n) {
      if (this.seenEventIds.has(id)) return false;
      this.seenEventIds.add(id);
      this.trimSeen();
    }
    switch (event.kind.case) {
      case "newMessage":
        this.applyMessage(event.chatId, event.kind.value);
        break;
      case "chatUpdate": {
        const update = event.kind.value;
        if (!update.chat) break;
        this.upsertChat(update.chat);
        const at = update.updatedAt ? timestampMs(update.updatedAt) : Date.now();
        this.addEntry({
          kind: "notice",
          key: `e:${id}`,
          chatId: update.chat.chatId,
          afterSeq: Number(update.chat.lastSeq),
          text: this.describeUpdate(update.kind, update.actorUserId, update.subjectUserId),
          at,
        });
        this.touch(update.chat.chatId, at);
        break;
      }
      case "receiptUpdate": {
        const update = event.kind.value;
        if (!this.mergeReceipt(event.chatId, update.userId, Number(update.deliveredSeq), Number(update.readSeq))) {
          return true;
        }
        break;
      }
      default:
        return true; // typing is typing.ts's; kinds this client does not know are ignored, as the API asks
    }
    this.changed();
    return true;
  }

  /** A chat as the server describes it now (CreateChat, GetChat, a chat update). */
  upsertChat(chat: Chat): void {
    const known = this.chats.get(chat.chatId);
    const createdAt = chat.createdAt ? timestampMs(chat.createdAt) : Date.now();
    this.chats.set(chat.chatId, {
      chatId: chat.chatId,
      name: chat.name,
      participants: [...chat.participantUserIds],
      lastSeq: known?.lastSeq ?? 0,
      member: chat.participantUserIds.includes(this.me),
      receipts: known?.receipts ?? {},
      unread: known?.unread ?? 0,
      lastActivity: Math.max(known?.lastActivity ?? 0, createdAt),
    });
    this.mergeCounters(chat);
    this.changed();
  }

  /**
   * The caller's chats from ListChats. Chats missing from it are ones this user left or was removed from. Chats that
   * an event changed while the list was being fetched keep the event's (newer) name and participants; seqs and
   * receipts only move forward, so the list's are merged all the same (receipts missed offline come only from here).
   */
  replaceChatList(chats: Chat[], changedMeanwhile: ReadonlySet<string>): void {
    const listed = new Set(chats.map((c) => c.chatId));
    for (const chat of chats) {
      if (!changedMeanwhile.has(chat.chatId)) this.upsertChat(chat);
      else if (this.chats.has(chat.chatId)) this.mergeCounters(chat);
    }
    for (const entry of this.chats.values()) {
      if (!listed.has(entry.chatId) && !changedMeanwhile.has(entry.chatId)) entry.member = false;
    }
    this.changed();
  }

  /** Chats known only by id. */
  stubs(): string[] {
    return [...this.chats.values()].filter((c) => c.stub).map((c) => c.chatId);
  }

  /** A send of this device, shown at once; `updateOutgoing` follows its progress. */
  addOutgoing(chatId: string, clientMessageId: string, text: string, attachments: AttachmentEntry[]): void {
    this.addEntry({
      kind: "message",
      key: `c:${clientMessageId}`,
      chatId,
      messageId: null,
      seq: null,
      sender: this.me,
      mine: true,
      text,
      attachments,
      sentAt: Date.now(),
      clientMessageId,
      status: "sending",
    });
    this.touch(chatId, Date.now());
    this.changed();
  }

  updateOutgoing(clientMessageId: string, patch: Partial<MessageEntry>): void {
    const entry = this.findOutgoing(clientMessageId);
    if (!entry) return;
    Object.assign(entry, patch);
    if (entry.seq !== null) this.sentAt(entry.chatId, this.me, entry.seq);
    this.changed();
  }

  removeOutgoing(clientMessageId: string): void {
    const entry = this.findOutgoing(clientMessageId);
    if (!entry) return;
    const list = this.timelines.get(entry.chatId)!;
    list.splice(list.indexOf(entry), 1);
    this.changed();
  }

  findOutgoing(clientMessageId: string): MessageEntry | undefined {
    for (const list of this.timelines.values()) {
      const found = list.find((e) => e.kind === "message" && e.mine && e.clientMessageId === clientMessageId);
      if (found) return found as MessageEntry;
    }
    return undefined;
  }

  serialize(): string {
    const timelines: Record<string, TimelineEntry[]> = {};
    for (const [chatId, list] of this.timelines) {
      timelines[chatId] = [...list]
        .sort(compareEntries)
        .slice(-KEEP_PER_CHAT)
        .map((entry) =>
          entry.kind === "message"
            ? { ...entry, progress: undefined, attachments: entry.attachments.map((a) => ({ ...a, localUrl: undefined })) }
            : entry,
        );
    }
    const snapshot: Snapshot = {
      version: 1,
      chats: [...this.chats.values()],
      timelines,
      seenEventIds: [...this.seenEventIds],
    };
    return JSON.stringify(snapshot);
  }

  /** Restores a serialized store; a send that was in flight when the page went away is offered for a retry. */
  static restore(me: string, json: string | null): ChatStore {
    const store = new ChatStore(me);
    if (!json) return store;
    try {
      const snapshot = JSON.parse(json) as Snapshot;
      if (snapshot.version !== 1) return store;
      // Snapshots from before receipts have none: ListChats brings them once the stream is live.
      for (const chat of snapshot.chats) store.chats.set(chat.chatId, { ...chat, receipts: chat.receipts ?? {} });
      for (const [chatId, list] of Object.entries(snapshot.timelines)) {
        for (const entry of list) {
          if (entry.kind === "message" && entry.status === "sending") {
            entry.status = "failed";
            entry.error = "Not sent: the page was closed while sending";
          }
        }
        store.timelines.set(chatId, list);
      }
      for (const id of snapshot.seenEventIds) store.seenEventIds.add(id);
      for (const chat of store.chats.values()) store.settle(chat);
    } catch {
      // A damaged snapshot costs only the local history.
    }
    return store;
  }

  private applyMessage(chatId: string, message: NewMessage): void {
    const list = this.timelines.get(chatId) ?? [];
    const mine = message.senderUserId === this.me;
    // Dedupe by message too: one of this user's sends may already be here under its client_message_id.
    const existing = list.find(
      (e) =>
        e.kind === "message" &&
        (e.messageId === message.messageId || (mine && e.mine && e.clientMessageId === message.clientMessageId)),
    );
    const sentAt = message.sentAt ? timestampMs(message.sentAt) : Date.now();
    if (existing) {
      Object.assign(existing, { messageId: message.messageId, seq: Number(message.seq), status: "sent" });
      this.sentAt(chatId, message.senderUserId, Number(message.seq));
      return;
    }
    this.addEntry({
      kind: "message",
      key: `m:${message.messageId}`,
      chatId,
      messageId: message.messageId,
      seq: Number(message.seq),
      sender: message.senderUserId,
      mine,
      text: message.text,
      attachments: message.attachments.map(toAttachmentEntry),
      sentAt,
      clientMessageId: message.clientMessageId,
      status: "sent",
    });
    this.sentAt(chatId, message.senderUserId, Number(message.seq));
    this.touch(chatId, sentAt);
  }

  /** A message from `sender` at `seq`: the chat's last seq, and the sender has received and read up to it. */
  private sentAt(chatId: string, sender: string, seq: number): void {
    const chat = this.ensureChat(chatId);
    if (seq > chat.lastSeq) {
      chat.lastSeq = seq;
      this.unsettled.add(chatId);
    }
    this.mergeReceipt(chatId, sender, seq, seq);
  }

  /** The server's seqs and receipts for a chat, merged with max(): an older answer never takes anything back. */
  private mergeCounters(chat: Chat): void {
    const entry = this.ensureChat(chat.chatId);
    entry.lastSeq = Math.max(entry.lastSeq, Number(chat.lastSeq));
    for (const receipt of chat.receipts) {
      this.mergeReceipt(chat.chatId, receipt.userId, Number(receipt.deliveredSeq), Number(receipt.readSeq));
    }
    this.unsettled.add(chat.chatId);
  }

  /** False when it moved nothing forward. */
  private mergeReceipt(chatId: string, userId: string, delivered: number, read: number): boolean {
    const chat = this.ensureChat(chatId);
    const known = chat.receipts[userId] ?? { delivered: 0, read: 0 };
    const next = { delivered: Math.max(known.delivered, delivered, read), read: Math.max(known.read, read) };
    if (next.delivered === known.delivered && next.read === known.read) return false;
    chat.receipts[userId] = next;
    this.unsettled.add(chatId);
    return true;
  }

  /**
   * The unread count, and the ticks of my messages: delivered once every other current participant received them,
   * read once every one of them read them. A message keeps the highest level it reached.
   */
  private settle(chat: ChatEntry): void {
    chat.unread = Math.max(0, chat.lastSeq - (chat.receipts[this.me]?.read ?? 0));
    const others = chat.participants.filter((p) => p !== this.me);
    if (others.length === 0) return; // a stub, or everyone else left: nobody to deliver to
    const delivered = Math.min(...others.map((p) => chat.receipts[p]?.delivered ?? 0));
    const read = Math.min(...others.map((p) => chat.receipts[p]?.read ?? 0));
    for (const entry of this.timelines.get(chat.chatId) ?? []) {
      if (entry.kind !== "message" || !entry.mine || entry.seq === null) continue;
      const level: ReceiptLevel = entry.seq <= read ? "read" : entry.seq <= delivered ? "delivered" : "sent";
      if (LEVELS.indexOf(level) > LEVELS.indexOf(entry.receipt ?? "sent")) entry.receipt = level;
    }
  }

  private addEntry(entry: TimelineEntry): void {
    const list = this.timelines.get(entry.chatId) ?? [];
    if (list.some((e) => e.key === entry.key)) return;
    list.push(entry);
    this.timelines.set(entry.chatId, list);
    this.ensureChat(entry.chatId);
  }

  private ensureChat(chatId: string): ChatEntry {
    let chat = this.chats.get(chatId);
    if (!chat) {
      chat = {
        chatId,
        name: "",
        participants: [],
        lastSeq: 0,
        member: true,
        receipts: {},
        unread: 0,
        lastActivity: 0,
        stub: true,
      };
      this.chats.set(chatId, chat);
    }
    return chat;
  }

  private touch(chatId: string, at: number): void {
    const chat = this.ensureChat(chatId);
    chat.lastActivity = Math.max(chat.lastActivity, at);
  }

  private describeUpdate(kind: ChatUpdateKind, actor: string, subject: string): string {
    const who = (user: string) => (user === this.me ? "You" : user);
    const whom = (user: string) => (user === this.me ? "you" : user);
    switch (kind) {
      case ChatUpdateKind.CREATED:
        return `${who(actor)} created the chat`;
      case ChatUpdateKind.PARTICIPANT_ADDED:
        return `${who(actor)} added ${whom(subject)}`;
      case ChatUpdateKind.PARTICIPANT_REMOVED:
        return actor === subject ? `${who(subject)} left` : `${who(actor)} removed ${whom(subject)}`;
      default:
        return "The chat changed";
    }
  }

  private trimSeen(): void {
    if (this.seenEventIds.size <= KEEP_EVENT_IDS) return;
    const oldest = this.seenEventIds.values().next().value!;
    this.seenEventIds.delete(oldest);
  }

  /** Listeners run once after the current task, however many changes it made (a backlog arrives in bursts). */
  private changed(): void {
    if (this.announced) return;
    this.announced = true;
    queueMicrotask(() => {
      this.announced = false;
      for (const chatId of this.unsettled) {
        const chat = this.chats.get(chatId);
        if (chat) this.settle(chat);
      }
      this.unsettled.clear();
      for (const listener of this.listeners) listener();
    });
  }
}

function toAttachmentEntry(attachment: Attachment): AttachmentEntry {
  return {
    attachmentId: attachment.attachmentId,
    contentType: attachment.contentType,
    sizeBytes: Number(attachment.sizeBytes),
    fileName: attachment.fileName,
  };
}

/** Messages at their seq; a notice just after the seq it followed; unacknowledged sends at the end, oldest first. */
function compareEntries(a: TimelineEntry, b: TimelineEntry): number {
  const [aPos, aTie] = position(a);
  const [bPos, bTie] = position(b);
  return aPos - bPos || aTie - bTie || sortTime(a) - sortTime(b) || a.key.localeCompare(b.key);
}

function position(entry: TimelineEntry): [number, number] {
  if (entry.kind === "notice") return [entry.afterSeq, 1];
  return entry.seq === null ? [Number.MAX_SAFE_INTEGER, 0] : [entry.seq, 0];
}

function sortTime(entry: TimelineEntry): number {
  return entry.kind === "notice" ? entry.at : entry.sentAt;
}
