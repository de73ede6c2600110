import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ChatUpdateKind, EventSchema } from "../../../gen/palaver/chat/v1/event_pb.js";
import { type Chat, ChatSchema } from "../../../gen/palaver/chat/v1/model_pb.js";
import { Refusal } from "../../errors.js";
import type { Caller } from "../../ports/caller.js";
import type { Clock } from "../../ports/clock.js";
import { type BlockStore, type ChatRecord, type ChatStore, deviceNameKey, participantsOf } from "../../ports/db.js";
import type { RateLimiters } from "../../ports/rate-limiter.js";
import { refuseBlockedAdditions } from "../account/blocks.js";
import { encodeStoredEvent } from "../delivery/events.js";
import type { DeliveryHub } from "../delivery/hub.js";
import { keyPage, type PageRequest } from "../pages.js";
import { Limit } from "../rate-limit.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface ChatsOptions {
  maxParticipants: number;
  /** Chats created plus participant changes one device may make an hour. */
  changesPerDevicePerHour: number;
  /** The same for all of a user's devices together. */
  changesPerUserPerHour: number;
}

export interface NewChatInput {
  name: string;
  /** Besides the caller; repeats are ignored. */
  participantUserIds: readonly string[];
}

export interface ParticipantInput {
  chatId: string;
  userId: string;
  operation: "add" | "remove";
}

export interface ChatPage {
  chats: Chat[];
  /** The last chat's id when the page is full, else empty. */
  nextPageToken: string;
}

/** Creating chats, changing who is in them, and reading them. Every change reaches every device of everyone involved. */
export class Chats {
  private readonly changesPerDevice: Limit;
  private readonly changesPerUser: Limit;

  constructor(
    private readonly db: ChatStore & Pick<BlockStore, "blockersAmong">,
    private readonly hub: DeliveryHub,
    private readonly clock: Clock,
    limiters: RateLimiters,
    private readonly options: ChatsOptions,
  ) {
    // Every change is an event in the inboxes of everyone in the chat: these keep one client from flooding them.
    const perHour = (name: string, points: number, who: string) =>
      new Limit(limiters, {
        name,
        points,
        windowSeconds: 3600,
        allows: `${who} may create chats or change participants ${points} times an hour`,
      });
    this.changesPerDevice = perHour("chat-changes-device", options.changesPerDevicePerHour, "this device");
    this.changesPerUser = perHour("chat-changes-user", options.changesPerUserPerHour, "this user");
  }

  async create(caller: Caller, input: NewChatInput): Promise<Chat> {
    const participants = [...new Set([caller.userId, ...input.participantUserIds])].sort();
    if (participants.length < 2) {
      throw new Refusal("invalid", "a chat needs at least one participant besides the caller");
    }
    if (participants.length > this.options.maxParticipants) {
      throw new Refusal(
        "invalid",
        `a chat has at most ${this.options.maxParticipants} participants, the caller included (asked for ${participants.length})`,
      );
    }
    await this.takeChange(caller);
    await refuseBlockedAdditions(this.db, caller.userId, participants);
    const at = this.clock.now();
    const created = await this.db.createChat(
      {
        chatId: randomUUID(),
        name: input.name,
        participantUserIds: participants,
        createdAt: at,
        updateMessageId: randomUUID(),
      },
      chatUpdateBody(ChatUpdateKind.CREATED, caller.userId, "", at),
    );
    await this.hub.deliver(created.fanout);
    return toChat(created.chat, caller.userId);
  }

  async modifyParticipants(caller: Caller, input: ParticipantInput): Promise<Chat> {
    await this.takeChange(caller);
    if (input.operation === "add") await refuseBlockedAdditions(this.db, caller.userId, [input.userId]);
    const at = this.clock.now();
    const kind = input.operation === "add" ? ChatUpdateKind.PARTICIPANT_ADDED : ChatUpdateKind.PARTICIPANT_REMOVED;
    const outcome = await this.db.modifyParticipants(
      {
        chatId: input.chatId,
        actorUserId: caller.userId,
        userId: input.userId,
        operation: input.operation,
        maxParticipants: this.options.maxParticipants,
        at,
        updateMessageId: randomUUID(),
      },
      chatUpdateBody(kind, caller.userId, input.userId, at),
    );
    switch (outcome.kind) {
      case "chat_not_found":
        throw chatNotFound(input.chatId);
      case "not_participant":
        throw new Refusal("forbidden", "only participants may change a chat");
      case "too_many_participants":
        throw new Refusal("invalid", `a chat has at most ${this.options.maxParticipants} participants`);
      case "unchanged":
        return toChat(outcome.chat, caller.userId);
      case "changed":
        await this.hub.deliver(outcome.fanout);
        return toChat(outcome.chat, caller.userId);
    }
  }

  /** Counts a change against the caller's device and user, refusing it past either limit. */
  private async takeChange(caller: Caller): Promise<void> {
    await this.changesPerDevice.take(deviceNameKey(caller));
    await this.changesPerUser.take(caller.userId);
  }

  async get(caller: Caller, chatId: string): Promise<Chat> {
    return toChat(await chatOfParticipant(this.db, caller, chatId, "read a chat"), caller.userId);
  }

  /** The caller's chats by chat id, a page at a time; the page token is the last chat id of the page before. */
  async list(caller: Caller, page: PageRequest): Promise<ChatPage> {
    if (page.pageToken !== "" && !UUID.test(page.pageToken)) {
      throw new Refusal("invalid", "page_token is not one this server gave");
    }
    const read = (after: string | null, limit: number) => this.db.listChats(caller.userId, after, limit);
    const { items, nextPageToken } = await keyPage(page, read, (chat) => chat.chatId);
    return { chats: items.map((chat) => toChat(chat, caller.userId)), nextPageToken };
  }
}

/** Encodes the chat-update event from the chat as the database has it after the change (inside the transaction). */
function chatUpdateBody(kind: ChatUpdateKind, actorUserId: string, subjectUserId: string, at: Date) {
  return (chat: ChatRecord): Uint8Array =>
    encodeStoredEvent(
      create(EventSchema, {
        chatId: chat.chatId,
        kind: {
          case: "chatUpdate",
          value: { chat: toChat(chat), kind, actorUserId, subjectUserId, updatedAt: timestampFromDate(at) },
        },
      }),
    );
}

/**
 * The chat as the API gives it; with the caller, their unread count: every message above their read_seq is from
 * others, since sending marks the chat read. A chat-update event is shared by every participant and has none.
 */
export function toChat(record: ChatRecord, callerUserId?: string): Chat {
  const readSeq = record.receipts.find((r) => r.userId === callerUserId)?.readSeq;
  return create(ChatSchema, {
    chatId: record.chatId,
    name: record.name,
    participantUserIds: participantsOf(record),
    createdAt: timestampFromDate(record.createdAt),
    lastSeq: record.lastSeq,
    receipts: record.receipts,
    unreadCount: readSeq === undefined ? 0n : record.lastSeq - readSeq,
  });
}

/** The chat, when the caller takes part in it; refused as not found, or as forbidden: "only participants may <may>". */
export async function chatOfParticipant(
  db: Pick<ChatStore, "getChat">,
  caller: Caller,
  chatId: string,
  may: string,
): Promise<ChatRecord> {
  const chat = await db.getChat(chatId);
  if (!chat) throw chatNotFound(chatId);
  if (!participantsOf(chat).includes(caller.userId)) throw new Refusal("forbidden", `only participants may ${may}`);
  return chat;
}

export function chatNotFound(chatId: string): Refusal {
  return new Refusal("not_found", `chat ${chatId} not found`);
}
