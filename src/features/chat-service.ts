import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type AckEventsRequest,
  AckEventsResponseSchema,
  ChatService,
  CommandErrorSchema,
  CommandResultSchema,
  type CommandResult,
  type ConnectRequest,
  type ConnectResponse,
  ConnectResponseSchema,
  type CreateChatRequest,
  CreateChatResponseSchema,
  type GetChatRequest,
  GetChatResponseSchema,
  type ListChatsRequest,
  type ModifyChatParticipantsRequest,
  ModifyChatParticipantsResponseSchema,
  type SendMessageRequest,
  type SubscribeResponse,
  SubscribeResponseSchema,
} from "../../gen/palaver/chat/v1/chat_pb.js";
import type { Db } from "../ports/db.js";
import { type Caller, requireCaller } from "../transport/caller.js";
import type { Chats } from "./chats/chats.js";
import { type DeviceStream, type Outgoing, StreamEnded } from "./delivery/device-stream.js";
import type { DeliveryHub } from "./delivery/hub.js";
import type { Messaging } from "./messaging/send-message.js";
import type { Metrics } from "./operations/metrics.js";

export interface ChatServiceDeps {
  db: Db;
  hub: DeliveryHub;
  chats: Chats;
  messaging: Messaging;
  metrics: Metrics;
  /** Validates one Connect frame's command with the same rules the validation interceptor applies to unary calls. */
  validate: (request: ConnectRequest) => void;
  /** Turns anything a command threw into the error the unary call would have answered with. */
  toConnectError: (error: unknown) => ConnectError;
}

type Outcome = CommandResult["outcome"];

/** ChatService: the unary commands, the Subscribe stream, and the Connect stream that carries both. */
export function chatService(deps: ChatServiceDeps): ServiceImpl<typeof ChatService> {
  const { db, hub, chats, messaging, metrics } = deps;

  /** Each command once, for both the unary RPCs and the Connect stream's frames. */
  const commands = {
    createChat: async (caller: Caller, request: CreateChatRequest) =>
      create(CreateChatResponseSchema, { chat: await chats.create(caller, request) }),
    modifyChatParticipants: async (caller: Caller, request: ModifyChatParticipantsRequest) =>
      create(ModifyChatParticipantsResponseSchema, { chat: await chats.modifyParticipants(caller, request) }),
    sendMessage: (caller: Caller, request: SendMessageRequest) => messaging.send(caller, request),
    ackEvents: async (caller: Caller, request: AckEventsRequest) => {
      await db.ackEvents(caller.deviceKey, request.eventIds);
      return create(AckEventsResponseSchema);
    },
    getChat: async (caller: Caller, request: GetChatRequest) =>
      create(GetChatResponseSchema, { chat: await chats.get(caller, request.chatId) }),
    listChats: (caller: Caller, request: ListChatsRequest) => chats.list(caller, request),
  };

  /** Runs one frame's command and wraps its response (or error) in the frame's outcome. */
  async function runCommand(caller: Caller, frame: ConnectRequest): Promise<Outcome> {
    try {
      deps.validate(frame);
      const command = frame.command;
      switch (command.case) {
        case "createChat":
          return { case: command.case, value: await commands.createChat(caller, command.value) };
        case "modifyChatParticipants":
          return { case: command.case, value: await commands.modifyChatParticipants(caller, command.value) };
        case "sendMessage":
          return { case: command.case, value: await commands.sendMessage(caller, command.value) };
        case "ackEvents":
          return { case: command.case, value: await commands.ackEvents(caller, command.value) };
        case "getChat":
          return { case: command.case, value: await commands.getChat(caller, command.value) };
        case "listChats":
          return { case: command.case, value: await commands.listChats(caller, command.value) };
        case undefined:
          throw new ConnectError("the frame carries no command", Code.InvalidArgument);
      }
    } catch (error) {
      const connectError = deps.toConnectError(error);
      return {
        case: "error",
        value: create(CommandErrorSchema, { code: connectError.code, message: connectError.rawMessage }),
      };
    }
  }

  /**
   * Reads the device's frames one at a time (so one device's sends keep their order) and answers each on the
   * stream. When the client half-closes, the stream ends after the last answer.
   */
  async function readCommands(caller: Caller, frames: AsyncIterable<ConnectRequest>, stream: DeviceStream) {
    try {
      for await (const frame of frames) {
        if (stream.ended) return;
        const outcome = await runCommand(caller, frame);
        stream.pushResult(create(CommandResultSchema, { requestId: frame.requestId, outcome }));
      }
      stream.finish();
    } catch {
      stream.end(); // the client went away mid-frame
    }
  }

  /** Opens the caller's device stream for the life of the RPC and maps its frames to the RPC's responses. */
  async function* openStream<Out>(
    ctx: HandlerContext,
    toResponse: (frame: Outgoing) => Out | null,
    frames?: AsyncIterable<ConnectRequest>,
  ): AsyncGenerator<Out> {
    const caller = requireCaller(ctx);
    const stream = await hub.open(caller.deviceKey);
    // The signal aborts when the client goes away, and at shutdown with UNAVAILABLE, which tells clients to reconnect.
    const onAbort = () => stream.end(ctx.signal.reason instanceof ConnectError ? ctx.signal.reason : null);
    ctx.signal.addEventListener("abort", onAbort);
    if (frames) void readCommands(caller, frames, stream);
    let live = false;
    try {
      for await (const frame of stream.frames()) {
        if (frame.kind === "event") {
          const kind = frame.event.kind;
          if (kind.case === "inboxDrained") {
            metrics.backlog.observe(Number(kind.value.backlogEvents));
            live = true;
          } else if (live && frame.event.eventId !== 0n) {
            metrics.deliveries.inc();
            if (kind.case === "newMessage" && kind.value.sentAt) {
              metrics.deliveryLatency.observe((Date.now() - timestampMs(kind.value.sentAt)) / 1000);
            }
          }
        }
        const response = toResponse(frame);
        if (response) yield response;
      }
    } catch (error) {
      if (!(error instanceof StreamEnded)) throw error;
    } finally {
      ctx.signal.removeEventListener("abort", onAbort);
      hub.close(stream);
    }
  }

  return {
    connect(frames, ctx) {
      return openStream(ctx, toConnectResponse, frames);
    },
    subscribe(_request, ctx) {
      return openStream(ctx, (frame): SubscribeResponse | null =>
        frame.kind === "event" ? create(SubscribeResponseSchema, { event: frame.event }) : null,
      );
    },
    createChat: (request, ctx) => commands.createChat(requireCaller(ctx), request),
    modifyChatParticipants: (request, ctx) => commands.modifyChatParticipants(requireCaller(ctx), request),
    sendMessage: (request, ctx) => commands.sendMessage(requireCaller(ctx), request),
    ackEvents: (request, ctx) => commands.ackEvents(requireCaller(ctx), request),
    getChat: (request, ctx) => commands.getChat(requireCaller(ctx), request),
    listChats: (request, ctx) => commands.listChats(requireCaller(ctx), request),
  };
}

function toConnectResponse(frame: Outgoing): ConnectResponse {
  return frame.kind === "event"
    ? create(ConnectResponseSchema, { frame: { case: "event", value: frame.event } })
    : create(ConnectResponseSchema, { frame: { case: "result", value: frame.result } });
}
