import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type CreateChatRequest,
  type ListChatsRequest,
  type ListChatsResponse,
  ListChatsResponseSchema,
  type ModifyChatParticipantsRequest,
  ParticipantOperation,
} from "../../../gen/palaver/chat/v1/chat_pb.js";
import { ChatUpdateKind, type Event, EventSchema } from "../../../gen/palaver/chat/v1/event_pb.js";
import { type Chat, ChatSchema } from "../../../gen/palaver/chat/v1/model_pb.js";
import type { ChatRecord, Db } from "../../ports/db.js";
import type { Clock } from "../../ports/clock.js";
import type { Caller } from "../../transport/caller.js";
import { encodeStoredEvent } from "../delivery/events.js";
import type { DeliveryHub } from "../delivery/hub.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface ChatsOptions {
  maxParticipants: number;
}

/** Creating chats, changing who is in them, and reading them. Every change reaches every device of everyone involved. */
export class Chats {
  constructor(
    private readonly db: Db,
    private readonly hub: DeliveryHub,
    private readonly clock: Clock,
    private readonly options: ChatsOptions,
  ) {}

  async create(caller: Caller, request: CreateChatRequest): Promise<Chat> {
    const participants = [...new Set([caller.userId, ...request.participantUserIds])].sort();
    if (participants.length < 2) {
      throw new ConnectError("a chat needs at least one participant besides the caller", Code.InvalidArgument);
    }
    if (participants.length > this.options.maxParticipants) {
      throw new ConnectError(
        `a chat has at most ${this.options.maxParticipants} participants, the caller included (asked for ${participants.length})`,
        Code.InvalidArgument,
      );
    }
    const at = this.clock.now();
    const encode = updateEncoder(ChatUpdateKind.CREATED, caller.userId, "", at);
    const stored = await this.db.createChat(
      {
        chatId: randomUUID(),
        name: request.name,
        participantUserIds: participants,
        createdAt: at,
        updateMessageId: randomUUID(),
      },
      encode.body,
    );
    await this.hub.deliver({ event: encode.event(), body: stored.body, deliveries: stored.deliveries });
    return toChat(stored.chat);
  }

  async modifyParticipants(caller: Caller, request: ModifyChatParticipantsRequest): Promise<Chat> {
    const adding = request.operation === ParticipantOperation.ADD;
    const at = this.clock.now();
    const encode = updateEncoder(
      adding ? ChatUpdateKind.PARTICIPANT_ADDED : ChatUpdateKind.PARTICIPANT_REMOVED,
      caller.userId,
      request.userId,
      at,
    );
    const outcome = await this.db.modifyParticipants(
      {
        chatId: request.chatId,
        actorUserId: caller.userId,
        userId: request.userId,
        operation: adding ? "add" : "remove",
        maxParticipants: this.options.maxParticipants,
        at,
        updateMessageId: randomUUID(),
      },
      encode.body,
    );
    switch (outcome.kind) {
      case "chat_not_found":
        throw chatNotFound(request.chatId);
      case "not_participant":
        throw new ConnectError("only participants may change a chat", Code.PermissionDenied);
      case "too_many_participants":
        throw new ConnectError(
          `a chat has at most ${this.options.maxParticipants} participants`,
          Code.InvalidArgument,
        );
      case "unchanged":
        return toChat(outcome.chat);
      case "changed":
        await this.hub.deliver({ event: encode.event(), body: outcome.body, deliveries: outcome.deliveries });
        return toChat(outcome.chat);
    }
  }

  async get(caller: Caller, chatId: string): Promise<Chat> {
    const chat = await this.db.getChat(chatId);
    if (!chat) throw chatNotFound(chatId);
    if (!chat.participantUserIds.includes(caller.userId)) {
      throw new ConnectError("only participants may read a chat", Code.PermissionDenied);
    }
    return toChat(chat);
  }

  async list(caller: Caller, request: ListChatsRequest): Promise<ListChatsResponse> {
    if (request.pageToken !== "" && !UUID.test(request.pageToken)) {
      throw new ConnectError("page_token is not one this server gave", Code.InvalidArgument);
    }
    const limit = request.pageSize || 100;
    const chats = await this.db.listChats(caller.userId, request.pageToken || null, limit);
    return create(ListChatsResponseSchema, {
      chats: chats.map(toChat),
      nextPageToken: chats.length === limit ? chats[chats.length - 1]!.chatId : "",
    });
  }
}

/**
 * The chat-update event, built from the chat as the database has it after the change: `body` encodes it for the store
 * (called inside the transaction), `event()` returns the same event for live delivery.
 */
function updateEncoder(kind: ChatUpdateKind, actorUserId: string, subjectUserId: string, at: Date) {
  let event: Event | undefined;
  return {
    body(chat: ChatRecord): Uint8Array {
      event = create(EventSchema, {
        chatId: chat.chatId,
        kind: {
          case: "chatUpdate",
          value: { chat: toChat(chat), kind, actorUserId, subjectUserId, updatedAt: timestampFromDate(at) },
        },
      });
      return encodeStoredEvent(event);
    },
    event: (): Event => event!,
  };
}

export function toChat(record: ChatRecord): Chat {
  return create(ChatSchema, {
    chatId: record.chatId,
    name: record.name,
    participantUserIds: record.participantUserIds,
    createdAt: timestampFromDate(record.createdAt),
    lastSeq: record.lastSeq,
  });
}

export function chatNotFound(chatId: string): ConnectError {
  return new ConnectError(`chat ${chatId} not found`, Code.NotFound);
}
