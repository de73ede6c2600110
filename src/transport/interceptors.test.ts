import * as http2 from "node:http2";
import { Writable } from "node:stream";
import { type DescMethodServerStreaming } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { SignJWT } from "jose";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { ChatService, CreateChatRequestSchema, type SubscribeResponseSchema } from "../../gen/palaver/chat/v1/chat_pb.js";
import { transportFor, wireProtocols } from "../../test/support/server-clients.js";
import { createTokenVerifier, mintToken } from "../auth/tokens.js";
import { DependencyUnavailableError } from "../errors.js";
import { createLogger } from "../log.js";
import { requireCaller } from "./caller.js";
import { createInterceptors } from "./interceptors.js";
import { startServer, type Server } from "./server.js";
import { codeOf } from "../../test/support/codes.js";

const secret = new TextEncoder().encode("a test secret that is long enough for HS256");
const uuid = "6f1c1c8e-4a53-4f0e-9d3c-0c2f2b7f0a11";

/** No server stream of the API has rules to break, so the test server adds one whose request is a CreateChatRequest. */
const validatedStream = {
  ...ChatService.method.subscribe,
  name: "ValidatedStream",
  input: CreateChatRequestSchema,
} as unknown as DescMethodServerStreaming<typeof CreateChatRequestSchema, typeof SubscribeResponseSchema>;

/** Captured log lines, as JSON objects. */
const logLines: Record<string, unknown>[] = [];
const logSink = new Writable({
  write(chunk: Buffer, _encoding, callback) {
    for (const line of chunk.toString("utf8").split("\n").filter(Boolean)) logLines.push(JSON.parse(line));
    callback();
  },
});

let server: Server;
beforeAll(async () => {
  const logger = createLogger({ logLevel: "debug", nodeId: "test" }, logSink);
  server = await startServer({
    host: "127.0.0.1",
    port: 0,
    interceptors: createInterceptors({
      logger,
      verifyToken: createTokenVerifier({ secret }),
      resolveDevice: async (userId, deviceName) => {
        if (userId === "db-down") throw new DependencyUnavailableError("postgres");
        return `${userId}:${deviceName}`;
      },
    }),
    routes: (router) =>
      router.rpc(validatedStream, async function* () {
        yield {};
      }).service(ChatService, {
        // Echoes the caller the interceptors put into the context.
        getChat: (req, context) => {
          const caller = requireCaller(context);
          return { chat: { chatId: req.chatId, name: `${caller.userId}/${caller.deviceName}/${caller.deviceKey}` } };
        },
        createChat: () => ({ chat: { name: "created" } }),
        sendMessage: (req) => {
          if (req.text === "down") throw new DependencyUnavailableError("postgres");
          if (req.text === "denied") throw new ConnectError("not a participant", Code.PermissionDenied);
          throw new Error("a detail the client must not see");
        },
        async *subscribe() {
          yield { event: { eventId: 1n } };
          throw new DependencyUnavailableError("redis");
        },
      }),
  });
});
afterAll(() => server.close(0));
beforeEach(() => {
  logLines.length = 0;
});

function chatClient(token?: string, transport?: (token?: string) => Transport) {
  return createClient(ChatService, (transport ?? ((t) => transportFor("grpc over h2c", server.url, t)))(token));
}

describe("auth", () => {
  it.each(wireProtocols)("puts the token's caller into the context over %s", async (protocol) => {
    const token = await mintToken(secret, { userId: "alice", deviceName: "phone" });
    const { chat } = await createClient(ChatService, transportFor(protocol, server.url, token)).getChat({ chatId: uuid });
    expect(chat?.name).toBe("alice/phone/alice:phone");
  });

  it("refuses a missing, malformed, expired or wrongly signed token", async () => {
    const longAgo = new Date(Date.now() - 3_600_000);
    const tokens = {
      missing: undefined,
      empty: "",
      garbage: "garbage",
      expired: await mintToken(secret, { userId: "alice", deviceName: "phone" }, { ttl: 60, now: longAgo }),
      "wrong secret": await mintToken(new TextEncoder().encode("another secret, just as long as the first one"), {
        userId: "alice",
        deviceName: "phone",
      }),
      "bad device": await new SignJWT({ device: "not a device name" })
        .setProtectedHeader({ alg: "HS256" })
        .setSubject("alice")
        .setIssuedAt()
        .setExpirationTime("1h")
        .sign(secret),
      "no expiry": await new SignJWT({ device: "phone" }).setProtectedHeader({ alg: "HS256" }).setSubject("alice").setIssuedAt().sign(secret),
    };
    for (const [name, token] of Object.entries(tokens)) {
      const error = await chatClient(token)
        .getChat({ chatId: uuid })
        .then(() => undefined, ConnectError.from);
      expect({ name, code: error?.code }).toEqual({ name, code: Code.Unauthenticated });
      expect(error?.rawMessage).not.toBe("");
    }
  });

  it("says why a token was refused", async () => {
    const expired = await mintToken(secret, { userId: "a", deviceName: "b" }, { ttl: 1, now: new Date(0) });
    await expect(chatClient(expired).getChat({ chatId: uuid })).rejects.toThrow("token has expired");
    await expect(chatClient().getChat({ chatId: uuid })).rejects.toThrow("missing token");
  });

  it("refuses an unauthenticated stream before it starts", async () => {
    const stream = chatClient("garbage").subscribe({});
    expect(await codeOf((async () => { for await (const _ of stream) break; })())).toBe(Code.Unauthenticated);
  });

  it("lets anyone check health", async () => {
    const health = createClient(Health, transportFor("connect over http/1.1", server.url));
    expect(await codeOf(health.check({ service: "" }))).toBe("ok");
  });

  it("reports a device store that is down as UNAVAILABLE", async () => {
    const token = await mintToken(secret, { userId: "db-down", deviceName: "phone" });
    expect(await codeOf(chatClient(token).getChat({ chatId: uuid }))).toBe(Code.Unavailable);
  });
});

describe("validation", () => {
  it.each(wireProtocols)("refuses a request that breaks its rules with INVALID_ARGUMENT over %s", async (protocol) => {
    const token = await mintToken(secret, { userId: "alice", deviceName: "phone" });
    const client = createClient(ChatService, transportFor(protocol, server.url, token));
    const error = await client.createChat({ participantUserIds: [] }).then(() => undefined, ConnectError.from);
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toBe("participant_user_ids: must contain at least 1 item(s)");
    expect(error?.findDetails(ViolationsSchema)[0]?.violations[0]?.ruleId).toBe("repeated.min_items");
  });

  it("names every violation, message-level rules included", async () => {
    const token = await mintToken(secret, { userId: "alice", deviceName: "phone" });
    const error = await chatClient(token)
      .sendMessage({ chatId: "not-a-uuid", clientMessageId: "m1" })
      .then(() => undefined, ConnectError.from);
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toBe("chat_id: must be a valid UUID; a message needs text or at least one attachment");
  });

  it("checks the request of a server stream", async () => {
    const token = await mintToken(secret, { userId: "alice", deviceName: "phone" });
    const transport = transportFor("grpc over h2c", server.url, token);
    const response = await transport.stream(validatedStream, undefined, undefined, undefined, createAsyncIterable([{}]));
    const error = await (async () => {
      for await (const _ of response.message) return;
    })().then(() => undefined, ConnectError.from);
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toContain("participant_user_ids");
  });
});

describe("error mapping and logging", () => {
  const token = () => mintToken(secret, { userId: "alice", deviceName: "phone" });
  const send = async (text: string) => chatClient(await token()).sendMessage({ chatId: uuid, clientMessageId: "m", text });

  it("answers an unexpected error with a generic INTERNAL and logs its stack", async () => {
    const error = await send("boom").then(() => undefined, ConnectError.from);
    expect(error?.code).toBe(Code.Internal);
    expect(error?.rawMessage).toBe("internal error");
    const logged = logLines.find((line) => line.level === 50);
    expect(JSON.stringify(logged)).toContain("a detail the client must not see");
    expect((logged?.err as { stack?: string })?.stack).toContain("interceptors.test.ts");
  });

  it("answers an unavailable dependency with UNAVAILABLE and a retry hint", async () => {
    const error = await send("down").then(() => undefined, ConnectError.from);
    expect(error?.code).toBe(Code.Unavailable);
    expect(error?.rawMessage).toBe("postgres is temporarily unavailable; retry shortly");
  });

  it("passes ConnectErrors through", async () => {
    expect(await codeOf(send("denied"))).toBe(Code.PermissionDenied);
  });

  it("maps an error thrown inside a stream", async () => {
    const events: bigint[] = [];
    const error = await (async () => {
      for await (const { event } of chatClient(await token()).subscribe({})) events.push(event!.eventId);
    })().then(() => undefined, ConnectError.from);
    expect(events).toEqual([1n]);
    expect(error?.code).toBe(Code.Unavailable);
    expect(error?.rawMessage).toBe("redis is temporarily unavailable; retry shortly");
  });

  it("logs each call once with its procedure, code, duration and caller", async () => {
    await chatClient(await token()).getChat({ chatId: uuid });
    await codeOf(send("denied"));
    const rpcs = logLines.filter((line) => line.msg === "rpc");
    expect(rpcs).toMatchObject([
      { level: 20, procedure: "palaver.chat.v1.ChatService/GetChat", code: "ok", user: "alice", device: "phone" },
      { level: 30, procedure: "palaver.chat.v1.ChatService/SendMessage", code: "permission_denied" },
    ]);
    expect(typeof rpcs[0]?.ms).toBe("number");
  });

  it("ends a stream whose client dropped its connection at once, logged as canceled, not as a server error", async () => {
    const session = http2.connect(server.url);
    const stream = session.request({
      ":method": "POST",
      ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      "content-type": "application/grpc",
      te: "trailers",
    });
    // As some load tools do: one list_services request, its answer read, then the connection closed with the stream open.
    stream.write(Buffer.from([0, 0, 0, 0, 2, 0x3a, 0]));
    await new Promise((resolve) => stream.once("data", resolve));
    session.destroy();
    // Well before the server's next PING would have found the connection dead.
    await expect.poll(() => logLines.filter((line) => line.msg === "rpc")).toMatchObject([
      { procedure: "grpc.reflection.v1.ServerReflection/ServerReflectionInfo", code: "canceled", level: 20 },
    ]);
    expect(logLines.filter((line) => (line.level as number) >= 50)).toEqual([]);
  });
});
