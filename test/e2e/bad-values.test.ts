import { Writable } from "node:stream";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CommandResult, ConnectRequestSchema } from "../../gen/palaver/chat/v1/chat_pb.js";
import { ConnectDevice, connectChatClient, grpcChatClient } from "../../src/client/device.js";
import { testBackends } from "../support/db.js";
import { sample, scrapeMetrics } from "../support/metrics.js";
import { rawGrpcCall } from "../support/raw-grpc.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

/** 2^63: one more than the largest event id the server stores. */
const ABOVE_EVENT_IDS = 2n ** 63n;

/** The server's log lines, parsed, for checking at what level client mistakes were logged. */
function capturedLogger() {
  const lines: { level: number; code?: string; msg: string }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: "info" }, sink), lines };
}

type Outcome = { code: Code | "ok"; message: string };
const ok: Outcome = { code: "ok", message: "" };

/** The call's error (an INVALID_ARGUMENT, say), or ok. */
async function outcomeOf(call: Promise<unknown>): Promise<Outcome> {
  try {
    await call;
    return ok;
  } catch (error) {
    const connectError = ConnectError.from(error);
    return { code: connectError.code, message: connectError.rawMessage };
  }
}

/** A Connect frame's result as the same outcome. */
function frameOutcome({ outcome }: CommandResult): Outcome {
  return outcome.case === "error" ? { code: outcome.value.code, message: outcome.value.message } : ok;
}

describe.each(testBackends())("values the server cannot store, on %s", (backend) => {
  let server: TestServer;
  const log = capturedLogger();
  beforeAll(async () => {
    server = await startTestServer(backend, { SEND_LIMIT_PER_MINUTE: "1000" }, { logger: log.logger });
  });
  afterAll(() => server?.close());

  /** A user with a chat with a partner, the user's unary client and the partner's Connect stream. */
  async function pair(name: string) {
    const [user, partner] = [uniqueUser(name), uniqueUser(`${name}-partner`)];
    const api = grpcChatClient(server.url, await server.token(user, "phone"));
    const device = ConnectDevice.open(server.url, await server.token(partner, "phone"));
    await device.waitForDrained();
    const { chat } = await api.createChat({ participantUserIds: [partner] });
    await device.waitForChatUpdates(1);
    return { user, partner, api, device, chatId: chat!.chatId };
  }

  it("fails a poisoned call alone, however many other users' sends and acks share its moment", async () => {
    const users = await Promise.all(Array.from({ length: 24 }, (_, i) => pair(`user${i}`)));
    const poisoner = await pair("poisoner");
    const { api, device, chatId, partner } = poisoner;
    // As unary calls and as frames on the poisoner's partner's Connect stream.
    const nul = "\u0000";
    const poisoned: (() => Promise<Outcome>)[] = [
      () => outcomeOf(api.sendMessage({ chatId, clientMessageId: "nul\u0000id", text: "x" })),
      () => outcomeOf(api.createChat({ name: "nul\u0000name", participantUserIds: [partner] })),
      () => outcomeOf(api.ackEvents({ eventIds: [2n ** 64n - 1n] })),
      async () => frameOutcome(await device.command({ case: "ackEvents", value: { eventIds: [ABOVE_EVENT_IDS] } })),
      async () =>
        frameOutcome(await device.command({ case: "sendMessage", value: { chatId, clientMessageId: "i", text: nul } })),
      async () =>
        frameOutcome(await device.command({ case: "createChat", value: { name: nul, participantUserIds: ["x"] } })),
    ];
    const rounds = poisoned.length;
    for (let round = 0; round < rounds; round++) {
      // Each partner acks what it has received so far while every user sends, and one call is poisoned.
      const acks = users.map(async (u) => {
        const eventIds = u.device.stored.map((e) => e.eventId);
        return frameOutcome(await u.device.command({ case: "ackEvents", value: { eventIds } }));
      });
      const sends = users.map((u) =>
        outcomeOf(u.api.sendMessage({ chatId: u.chatId, clientMessageId: `round-${round}`, text: `message ${round}` })),
      );
      const poison = poisoned[round]!();
      expect(await Promise.all(sends)).toEqual(users.map(() => ok));
      expect(await Promise.all(acks)).toEqual(users.map(() => ok));
      expect((await poison).code).toBe(Code.InvalidArgument);
      await Promise.all(users.map((u) => u.device.waitForMessages(round + 1)));
    }
    // Every innocent send was stored once, in order, and every ack took its events out of the inbox.
    for (const u of users) {
      expect((await u.api.getChat({ chatId: u.chatId })).chat?.lastSeq).toBe(BigInt(rounds));
      expect(u.device.messages.map((m) => m.text)).toEqual(Array.from({ length: rounds }, (_, i) => `message ${i}`));
      u.device.ackAll();
      await expect.poll(() => server.inbox(u.partner, "phone"), { timeout: 10_000 }).toEqual([]);
    }
    // Nothing of the poisoned calls was stored.
    expect((await api.getChat({ chatId })).chat?.lastSeq).toBe(0n);
    expect((await api.listChats({})).chats).toHaveLength(1);
    if (backend === "postgres") {
      // The burst's calls did share writes (PGlite, answering in-process, writes each alone).
      const metrics = await scrapeMetrics(server.url);
      for (const committer of ["sends", "acks"]) {
        const items = sample(metrics, "palaver_group_commit_batch_size_sum", { committer });
        expect(items).toBeGreaterThan(sample(metrics, "palaver_group_commit_batch_size_count", { committer }));
      }
    }
    for (const u of [...users, poisoner]) u.device.disconnect();
  });

  it("refuses every such value with INVALID_ARGUMENT naming the field, and stores nothing", async () => {
    const { user, api, chatId } = await pair("refused");
    const connect = connectChatClient(server.url, await server.token(user, "phone"));
    const cases: [string, () => Promise<unknown>][] = [
      ["name", () => api.createChat({ name: "a\u0000b", participantUserIds: ["bob"] })],
      ["client_message_id", () => api.sendMessage({ chatId, clientMessageId: "a\u0000b", text: "x" })],
      ["text", () => connect.sendMessage({ chatId, clientMessageId: "c", text: "a\u0000b" })],
      ["event_ids[1]", () => connect.ackEvents({ eventIds: [1n, ABOVE_EVENT_IDS] })],
      ["page_token", () => api.listChats({ pageToken: "a\u0000b" })],
    ];
    for (const [field, call] of cases) {
      const { code, message } = await outcomeOf(call());
      expect([field, code]).toEqual([field, Code.InvalidArgument]);
      expect(message).toMatch(new RegExp(`^${field.replace(/[[\]]/g, "\\$&")}: `));
    }
    // The largest id the server could have given out is taken (and ignored: it is in no inbox).
    expect((await outcomeOf(api.ackEvents({ eventIds: [ABOVE_EVENT_IDS - 1n] }))).code).toBe("ok");
    expect((await api.getChat({ chatId })).chat?.lastSeq).toBe(0n);
    expect((await api.listChats({})).chats.map((c) => c.chatId)).toEqual([chatId]);
  });

  it("refuses such a value in a Connect frame with the frame's error naming the field; the stream goes on", async () => {
    const { user, chatId } = await pair("frames");
    const frames: MessageInitShape<typeof ConnectRequestSchema>[] = [
      { requestId: "nul\u0000id", command: { case: "getChat", value: { chatId } } },
      { requestId: "send", command: { case: "sendMessage", value: { chatId, clientMessageId: "a\u0000b", text: "x" } } },
      { requestId: "ack", command: { case: "ackEvents", value: { eventIds: [ABOVE_EVENT_IDS] } } },
      { requestId: "fine", command: { case: "getChat", value: { chatId } } },
    ];
    // The request side stays open until every frame is answered, then closes: the stream ends cleanly.
    let allAnswered!: () => void;
    const answered = new Promise<void>((resolve) => (allAnswered = resolve));
    async function* requests() {
      for (const frame of frames) yield create(ConnectRequestSchema, frame);
      await answered;
    }
    const results: CommandResult[] = [];
    const client = grpcChatClient(server.url, await server.token(user, "laptop"));
    for await (const response of client.connect(requests())) {
      if (response.frame.case !== "result") continue;
      results.push(response.frame.value);
      if (results.length === frames.length) allAnswered();
    }
    expect(results.map((r) => [r.requestId, frameOutcome(r).code])).toEqual([
      ["nul\u0000id", Code.InvalidArgument],
      ["send", Code.InvalidArgument],
      ["ack", Code.InvalidArgument],
      ["fine", "ok"],
    ]);
    const messages = results.map((r) => frameOutcome(r).message);
    expect(messages[0]).toMatch(/^request_id: /);
    expect(messages[1]).toMatch(/^send_message\.client_message_id: /);
    expect(messages[2]).toMatch(/^ack_events\.event_ids\[0\]: /);
  });

  it("refuses text that is not UTF-8 before any handler runs, and stores nothing", async () => {
    const { user, api, partner } = await pair("utf8");
    const token = await server.token(user, "phone");
    const createChat = `${server.url}/palaver.chat.v1.ChatService/CreateChat`;
    const headers = (type: string) => ({
      "content-type": type,
      "connect-protocol-version": "1",
      authorization: `Bearer ${token}`,
    });
    // name (field 1): the bytes C3 28, not UTF-8; participant_user_ids (field 2): the partner.
    const partnerBytes = new TextEncoder().encode(partner);
    const binary = new Uint8Array([0x0a, 0x02, 0xc3, 0x28, 0x12, partnerBytes.length, ...partnerBytes]);
    const proto = await fetch(createChat, { method: "POST", headers: headers("application/proto"), body: binary });
    expect(proto.ok).toBe(false);
    const grpc = await rawGrpcCall(server.url, "/palaver.chat.v1.ChatService/CreateChat", token, [binary]);
    expect(grpc.status).not.toBe(0);
    // JSON cannot carry invalid UTF-8, but its escapes can spell a lone surrogate, which no UTF-8 encodes.
    const json = await fetch(createChat, {
      method: "POST",
      headers: headers("application/json"),
      body: `{"name":"a\\ud800b","participantUserIds":["${partner}"]}`,
    });
    expect([json.status, ((await json.json()) as { code: string }).code]).toEqual([400, "invalid_argument"]);
    expect((await api.listChats({})).chats).toHaveLength(1); // the pair's chat only
  });

  // After the tests above, which made every kind of mistake.
  it("never logs a client's mistake at error level", () => {
    expect(log.lines.filter((line) => line.level >= 50)).toEqual([]);
    const refused = log.lines.filter((line) => line.msg === "rpc" && line.code === "invalid_argument");
    expect(refused.length).toBeGreaterThan(0);
    expect(new Set(refused.map((line) => line.level))).toEqual(new Set([30])); // info
  });
});
