import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ChatUpdateKind, type Event, type NewMessage } from "../../gen/palaver/chat/v1/event_pb.js";
import type { Attachment, Chat } from "../../gen/palaver/chat/v1/model_pb.js";

export interface ChatEntry {
  chatId: string;
  name: string;
  participants: string[];
  lastSeq: number;
  /** False once this user was removed: the chat stays readable here, the server refuses sends. */
  member: boolean;
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
 * kept in seq order), from ListChats, and from its own sends. Changes are announced once per task to listeners.
 */
export class ChatStore {
  private readonly chats = new Map<string, ChatEntry>();
  private readonly timelines = new Map<string, TimelineEntry[]>();
  private readonly seenEventIds = new Set<string>();
  private readonly listeners = new Set<() => void>();
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

  select(chatId: string | null): void {
    this.activeChatId = chatId;
    const chat = chatId ? this.chats.get(chatId) : undefined;
    if (chat) chat.unread = 0;
    this.changed();
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
      default:
        return true; // kinds this client does not know are ignored, as the API asks
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
      lastSeq: Math.max(known?.lastSeq ?? 0, Number(chat.lastSeq)),
      member: chat.participantUserIds.includes(this.me),
      unread: known?.unread ?? 0,
      lastActivity: Math.max(known?.lastActivity ?? 0, createdAt),
    });
    this.changed();
  }

  /**
   * The caller's chats from ListChats. Chats missing from it are ones this user left or was removed from. Chats that
   * an event changed while the list was being fetched keep the event's (newer) version.
   */
  replaceChatList(chats: Chat[], changedMeanwhile: ReadonlySet<string>): void {
    const listed = new Set(chats.map((c) => c.chatId));
    for (const chat of chats) if (!changedMeanwhile.has(chat.chatId)) this.upsertChat(chat);
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
    if (entry.seq !== null) {
      const chat = this.chats.get(entry.chatId);
      if (chat) chat.lastSeq = Math.max(chat.lastSeq, entry.seq);
    }
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
      for (const chat of snapshot.chats) store.chats.set(chat.chatId, chat);
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
    const chat = this.ensureChat(chatId);
    chat.lastSeq = Math.max(chat.lastSeq, Number(message.seq));
    if (!mine && chatId !== this.activeChatId) chat.unread += 1;
    this.touch(chatId, sentAt);
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
      chat = { chatId, name: "", participants: [], lastSeq: 0, member: true, unread: 0, lastActivity: 0, stub: true };
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
