import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import type { Logger } from "pino";
import {
  type AckEventsRequest,
  AckEventsResponseSchema,
  ChatService,
  CommandErrorSchema,
  CommandResultSchema,
  type CommandResult,
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  ConnectResponseSchema,
  type CreateChatRequest,
  CreateChatResponseSchema,
  type GetChatRequest,
  GetChatResponseSchema,
  ListChatsResponseSchema,
  type ListChatsRequest,
  type MarkReadRequest,
  MarkReadResponseSchema,
  type SetTypingRequest,
  SetTypingResponseSchema,
  type ModifyChatParticipantsRequest,
  ModifyChatParticipantsResponseSchema,
  ParticipantOperation,
  type SendMessageRequest,
  type SendMessageResponse,
  SendMessageResponseSchema,
  type SubscribeResponse,
  SubscribeResponseSchema,
} from "../../gen/palaver/chat/v1/chat_pb.js";
import type { Chats } from "../features/chats/chats.js";
import type { AckChannel, Acks } from "../features/delivery/acks.js";
import { type DeviceStream, type StreamFrame, StreamEnded } from "../features/delivery/device-stream.js";
import { eventField, grpcStoredEventLength, writeGrpcStoredEvent } from "../features/delivery/events.js";
import type { DeliveryHub } from "../features/delivery/hub.js";
import type { Receipts } from "../features/receipts/receipts.js";
import type { Typing } from "../features/typing/typing.js";
import { withKeepAlive } from "./keep-alive.js";
import type { Messaging, SendResult } from "../features/messaging/messaging.js";
import type { Metrics } from "../features/operations/metrics.js";
import type { Caller } from "../ports/caller.js";
import { Refusal } from "../errors.js";
import { runAt } from "../token-timers.js";
import { SENDS_IN_FLIGHT_PER_STREAM } from "../tunables.js";
import { requireCaller } from "./caller.js";
import { retryAfterSeconds, toConnectError } from "./errors.js";
import type { BidiRoute } from "./grpc-bidi.js";
import { authenticate, type InterceptorOptions, validateOrThrow } from "./interceptors.js";

export interface ChatServiceDeps {
  hub: DeliveryHub;
  chats: Chats;
  messaging: Messaging;
  acks: Acks;
  receipts: Receipts;
  typing: Typing;
  metrics: Metrics;
  logger: Logger;
  /** How long a Subscribe stream may be quiet before an empty response keeps it open. */
  subscribeKeepAliveMs: number;
}

type Outcome = CommandResult["outcome"];
/** A frame's command other than a send: those run one at a time. */
type OtherCommand = Exclude<ConnectRequest["command"], { case: "sendMessage" }>;

/**
 * ChatService: the unary commands, the Subscribe stream, and the Connect stream that carries both; and Connect as a
 * route served beside connect-es for plain gRPC clients.
 */
export function chatService(deps: ChatServiceDeps): {
  service: ServiceImpl<typeof ChatService>;
  connectRoute(auth: Pick<InterceptorOptions, "verifyToken" | "resolveDevice">): BidiRoute;
} {
  const { hub, chats, messaging, acks, receipts, typing, metrics, logger } = deps;

  /** Each command once, for both the unary RPCs and the Connect stream's frames: request in, feature, response out. */
  const commands = {
    createChat: async (caller: Caller, request: CreateChatRequest) =>
      create(CreateChatResponseSchema, { chat: await chats.create(caller, request) }),
    modifyChatParticipants: async (caller: Caller, request: ModifyChatParticipantsRequest) =>
      create(ModifyChatParticipantsResponseSchema, {
        chat: await chats.modifyParticipants(caller, {
          chatId: request.chatId,
          userId: request.userId,
          operation: request.operation === ParticipantOperation.ADD ? "add" : "remove",
        }),
      }),
    sendMessage: async (caller: Caller, request: SendMessageRequest) => sendResponse(await messaging.send(caller, request)),
    ackEvents: async (caller: Caller, request: AckEventsRequest, channel: AckChannel) => {
      await acks.ack(caller, request.eventIds, channel);
      return create(AckEventsResponseSchema);
    },
    getChat: async (caller: Caller, request: GetChatRequest) =>
      create(GetChatResponseSchema, { chat: await chats.get(caller, request.chatId) }),
    listChats: async (caller: Caller, request: ListChatsRequest) =>
      create(ListChatsResponseSchema, await chats.list(caller, request)),
    markRead: async (caller: Caller, request: MarkReadRequest) =>
      create(MarkReadResponseSchema, await receipts.markRead(caller, request.chatId, request.seq)),
    setTyping: async (caller: Caller, request: SetTypingRequest) => {
      await typing.set(caller, request.chatId, request.typing);
      return create(SetTypingResponseSchema);
    },
  };

  /** Runs one frame's command (any but a send, see queueSend) and wraps its response or error in the frame's outcome. */
  async function runCommand(caller: Caller, frame: ConnectRequest, command: OtherCommand): Promise<Outcome> {
    try {
      validateOrThrow(ConnectRequestSchema, frame);
      switch (command.case) {
        case "createChat":
          return { case: command.case, value: await commands.createChat(caller, command.value) };
        case "modifyChatParticipants":
          return { case: command.case, value: await commands.modifyChatParticipants(caller, command.value) };
        case "ackEvents":
          return { case: command.case, value: await commands.ackEvents(caller, command.value, "stream") };
        case "getChat":
          return { case: command.case, value: await commands.getChat(caller, command.value) };
        case "listChats":
          return { case: command.case, value: await commands.listChats(caller, command.value) };
        case "markRead":
          return { case: command.case, value: await commands.markRead(caller, command.value) };
        case "setTyping":
          return { case: command.case, value: await commands.setTyping(caller, command.value) };
        case undefined:
          throw new ConnectError("the frame carries no command", Code.InvalidArgument);
      }
    } catch (error) {
      return failed(error);
    }
  }

  /** Answers a frame with its command's outcome, unless it asked for errors only and the command succeeded. */
  function answerFrame(stream: DeviceStream, frame: ConnectRequest, outcome: Outcome): void {
    if (frame.answerErrorsOnly && outcome.case !== "error") return;
    stream.pushResult(create(CommandResultSchema, { requestId: frame.requestId, outcome }));
  }

  /** A command's error as the frame's outcome, with the code and message the unary call would have answered with. */
  function failed(error: unknown): Outcome {
    const connectError = toConnectError(error, logger);
    const retryAfter = retryAfterSeconds(connectError);
    return {
      case: "error",
      value: create(CommandErrorSchema, {
        code: connectError.code,
        message: connectError.rawMessage,
        retryAfter: retryAfter === undefined ? undefined : { seconds: BigInt(retryAfter) },
      }),
    };
  }

  /**
   * Queues a send frame for storage and returns when it is queued (a bad frame or a refusal before that is answered
   * at once); the answer follows on the stream once the send is stored.
   */
  async function queueSend(
    caller: Caller,
    frame: ConnectRequest,
    request: SendMessageRequest,
    stream: DeviceStream,
  ): Promise<{ answered: Promise<void> } | undefined> {
    const answer = (outcome: Outcome) => answerFrame(stream, frame, outcome);
    let queued: { stored: Promise<SendResult> };
    try {
      validateOrThrow(ConnectRequestSchema, frame);
      queued = await messaging.queue(caller, request);
    } catch (error) {
      answer(failed(error));
      return undefined;
    }
    const answered = queued.stored.then(
      (sent): void => answer({ case: "sendMessage", value: sendResponse(sent) }),
      (error: unknown): void => answer(failed(error)),
    );
    return { answered };
  }

  /**
   * Reads the device's frames in order and answers each on the stream. Sends are pipelined: each is queued before the
   * next frame is read (so a device's sends keep their order in seq) and up to SENDS_IN_FLIGHT_PER_STREAM are stored
   * at once, answered as they are stored; any other command first waits for the sends in flight, and runs alone.
   * When the client half-closes, the stream ends after the last answer; when its frames break off (a frame the
   * server refuses), after the answers to the commands before, with the refusal's status. Frames come decoded (from
   * connect-es) or as their bytes (from the gRPC fast path), decoded here: a generator decoding them in between kept
   * a promise per frame alive for as long as the device was quiet (see grpc-bidi.ts).
   */
  async function readCommands(caller: Caller, frames: AsyncIterable<ConnectRequest | Uint8Array>, stream: DeviceStream) {
    const sending = new Set<Promise<void>>();
    let broken: ConnectError | null = null;
    try {
      for await (const received of frames) {
        if (stream.ended) return;
        const frame = received instanceof Uint8Array ? parseRequest(received) : received;
        if (frame.command.case === "sendMessage") {
          if (sending.size >= SENDS_IN_FLIGHT_PER_STREAM) await Promise.race(sending);
          const queued = await queueSend(caller, frame, frame.command.value, stream);
          if (queued) {
            const { answered } = queued;
            sending.add(answered);
            void answered.then(() => sending.delete(answered));
          }
          continue;
        }
        await Promise.all(sending);
        answerFrame(stream, frame, await runCommand(caller, frame, frame.command));
      }
    } catch (error) {
      // Unless the client went away (which ended the stream already), a frame was refused.
      if (!stream.ended) broken = requestStreamError(error, logger);
    }
    await Promise.all(sending);
    stream.finish(broken);
  }

  /** Opens the caller's device stream for the life of the RPC and maps its frames to the RPC's responses. */
  async function* openStream<Out>(
    ctx: HandlerContext,
    toResponse: (frame: StreamFrame) => Out | null,
    frames?: AsyncIterable<ConnectRequest>,
  ): AsyncGenerator<Out> {
    for await (const batch of streamBatches(requireCaller(ctx), ctx.signal, (batch) => batch, { commands: frames })) {
      for (const frame of batch) {
        const response = toResponse(frame);
        if (response) yield response;
      }
    }
  }

  return {
    service: {
      connect(frames, ctx) {
        return openStream(ctx, toConnectResponse, frames);
      },
      subscribe(_request, ctx) {
        const responses = openStream(ctx, (frame): SubscribeResponse | null => {
          if (frame.kind === "signal") return create(SubscribeResponseSchema, { event: frame.event });
          if (frame.kind === "event") return withEvent(create(SubscribeResponseSchema), frame);
          if (frame.kind === "notice") return withEvent(create(SubscribeResponseSchema), { eventId: 0n, body: frame.body });
          return null;
        });
        // Browsers read this stream through proxies that end quiet connections; HTTP/2 clients of Connect get PINGs.
        return withKeepAlive(responses, deps.subscribeKeepAliveMs, () => create(SubscribeResponseSchema));
      },
      createChat: (request, ctx) => commands.createChat(requireCaller(ctx), request),
      modifyChatParticipants: (request, ctx) => commands.modifyChatParticipants(requireCaller(ctx), request),
      sendMessage: (request, ctx) => commands.sendMessage(requireCaller(ctx), request),
      ackEvents: (request, ctx) => commands.ackEvents(requireCaller(ctx), request, "call"),
      getChat: (request, ctx) => commands.getChat(requireCaller(ctx), request),
      listChats: (request, ctx) => commands.listChats(requireCaller(ctx), request),
      markRead: (request, ctx) => commands.markRead(requireCaller(ctx), request),
      setTyping: (request, ctx) => commands.setTyping(requireCaller(ctx), request),
    },
    /**
     * Connect served on the HTTP/2 stream (see transport/grpc-bidi.ts): the same stream as `connect` above, with each
     * outgoing frame encoded straight into its gRPC message bytes.
     */
    connectRoute(auth): BidiRoute {
      return {
        path: `/${ChatService.typeName}/${ChatService.method.connect.name}`,
        async start(authorization) {
          const caller = await authenticate(auth, authorization);
          return {
            user: caller.userId,
            device: caller.deviceName,
            run: (requests, signal, write) =>
              streamBatches(caller, signal, encodeConnectFrames, { commands: requests, write }),
          };
        },
      };
    },
  };

  /**
   * One device stream from open to end, each batch of its frames mapped to what the call writes at once. With
   * `write`, live frames go straight to it while the call's loop waits (DeviceStream.writeDirectlyTo).
   */
  async function* streamBatches<Out>(
    caller: Caller,
    signal: AbortSignal,
    toOut: (batch: StreamFrame[]) => Out,
    options: { commands?: AsyncIterable<ConnectRequest | Uint8Array>; write?: (out: Out) => boolean } = {},
  ): AsyncGenerator<Out> {
    const stream = await hub.open(caller);
    // The signal aborts when the client goes away, and at shutdown with UNAVAILABLE, which tells clients to reconnect.
    const onAbort = () => stream.end(signal.reason instanceof ConnectError ? signal.reason : null);
    signal.addEventListener("abort", onAbort);
    // A token speaks for its device only until it expires: the stream ends then, and the client renews and reconnects.
    const expires = caller.tokenExpiresAt;
    const cancelExpiry = runAt(expires.getTime(), () => stream.end(tokenExpired(expires)));
    let live = false;
    const observe = (batch: StreamFrame[]) => {
      const now = Date.now();
      for (const frame of batch) {
        if (frame.kind === "signal") {
          const kind = frame.event.kind;
          if (kind.case === "inboxDrained") {
            metrics.backlog.observe(Number(kind.value.backlogEvents));
            live = true;
          }
        } else if (frame.kind === "event" && live) {
          metrics.deliveries.inc();
          if (frame.sentAtMs !== undefined) metrics.deliveryLatency.observe((now - frame.sentAtMs) / 1000);
        }
      }
    };
    const { commands, write } = options;
    if (write) {
      stream.writeDirectlyTo((batch) => {
        observe(batch);
        return write(toOut(batch));
      });
    }
    if (commands) void readCommands(caller, commands, stream);
    try {
      for await (const batch of stream.frames()) {
        observe(batch);
        yield toOut(batch);
      }
    } catch (error) {
      if (!(error instanceof StreamEnded)) throw error;
    } finally {
      cancelExpiry();
      signal.removeEventListener("abort", onAbort);
      hub.close(stream);
    }
  }
}

/** How connect-es words a request message that does not decode (it answers it with INTERNAL). */
const PARSE_FAILURE = "parse binary: ";

/** A frame that is not a ConnectRequest is refused as connect-es words it, with the status requestStreamError gives. */
function parseRequest(bytes: Uint8Array): ConnectRequest {
  try {
    return fromBinary(ConnectRequestSchema, bytes);
  } catch (error) {
    throw new ConnectError(`${PARSE_FAILURE}${error instanceof Error ? error.message : String(error)}`, Code.InvalidArgument);
  }
}

/**
 * The status a Connect stream ends with when a request frame is refused, the same on every protocol: as connect-es
 * or the gRPC fast path reports it (RESOURCE_EXHAUSTED for a frame over the limit, told from its length prefix;
 * INTERNAL for a frame flagged compressed with no encoding agreed, as gRPC specifies; INVALID_ARGUMENT for a stream
 * cut mid-frame), except that a frame that is not a ConnectRequest is the client's mistake, INVALID_ARGUMENT, where
 * connect-es says INTERNAL.
 */
function requestStreamError(error: unknown, logger: Logger): ConnectError {
  const refused = toConnectError(error, logger);
  if (refused.code !== Code.Internal || !refused.rawMessage.startsWith(PARSE_FAILURE)) return refused;
  return new ConnectError(refused.rawMessage, Code.InvalidArgument, undefined, undefined, refused);
}

/** How a stream ends when its token expires; the message says what the client is to do (docs/protocol.md). */
function tokenExpired(at: Date): Refusal {
  return new Refusal(
    "unauthenticated",
    `the token expired at ${at.toISOString()}: get a fresh token and reconnect with it (events not acked come again)`,
  );
}

function sendResponse(sent: SendResult): SendMessageResponse {
  return create(SendMessageResponseSchema, { ...sent, sentAt: timestampFromDate(sent.sentAt) });
}

/**
 * Connect frames as their gRPC messages (length prefixes included), in one buffer: stored events and notices are
 * written straight into it without a protobuf encode, other frames (results, signals) are encoded first. The buffer
 * comes from Node's shared pool (below 4 KiB, as nearly every write is): a typed array of its own per write was a
 * zero-filled malloc and a backing store for V8 to track and sweep, for each event a device is sent.
 */
function encodeConnectFrames(frames: StreamFrame[]): Uint8Array {
  let encoded: Uint8Array[] | undefined; // the results' and signals' messages, in order
  let length = 0;
  for (const frame of frames) {
    if (frame.kind === "event" || frame.kind === "notice") {
      length += grpcStoredEventLength(frame.body, frame.kind === "event" ? frame.eventId : 0n);
    } else {
      const message = encodeEnvelope(0, toBinary(ConnectResponseSchema, toConnectResponse(frame)));
      (encoded ??= []).push(message);
      length += message.length;
    }
  }
  const out = Buffer.allocUnsafe(length); // every byte is written below
  let at = 0;
  let next = 0;
  for (const frame of frames) {
    if (frame.kind === "event" || frame.kind === "notice") {
      at = writeGrpcStoredEvent(out, at, frame.body, frame.kind === "event" ? frame.eventId : 0n);
    } else {
      const message = encoded![next++];
      out.set(message, at);
      at += message.length;
    }
  }
  return out;
}

function toConnectResponse(frame: StreamFrame): ConnectResponse {
  switch (frame.kind) {
    case "signal":
      return create(ConnectResponseSchema, { frame: { case: "event", value: frame.event } });
    case "event":
      return withEvent(create(ConnectResponseSchema), frame);
    case "notice":
      return withEvent(create(ConnectResponseSchema), { eventId: 0n, body: frame.body });
    case "result":
      return create(ConnectResponseSchema, { frame: { case: "result", value: frame.result } });
  }
}

/** Puts a stored event into field 1 (`event`) of the response as pre-encoded bytes (see eventField). */
function withEvent<M extends ConnectResponse | SubscribeResponse>(response: M, frame: { eventId: bigint; body: Uint8Array }): M {
  response.$unknown = [eventField(frame.body, frame.eventId)];
  return response;
}
