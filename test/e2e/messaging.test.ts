import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ConnectRequestSchema, ConnectResponseSchema } from "../../gen/palaver/chat/v1/chat_pb.js";
import { ConnectDevice, connectChatClient } from "../../src/client/device.js";
import { rawGrpcCall } from "../support/raw-grpc.js";
import { testBackends } from "../support/db.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";
import { codeOf } from "../support/codes.js";
import { sample, scrapeMetrics } from "../support/metrics.js";

/** Low enough to reach in a test, above what any other test here sends from one device. */
const SENDS_PER_MINUTE = 45;

describe.each(testBackends())("messaging on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(backend, { SEND_LIMIT_PER_MINUTE: String(SENDS_PER_MINUTE) });
  });
  afterAll(() => server?.close());

  async function pair() {
    const [alice, bob, eve] = ["alice", "bob", "eve"].map(uniqueUser);
    const api = connectChatClient(server.url, await server.token(alice!, "phone"));
    const { chat } = await api.createChat({ participantUserIds: [bob!] });
    return { alice: alice!, bob: bob!, eve: eve!, api, chatId: chat!.chatId };
  }

  it("answers a retried send with the first result and stores it once", async () => {
    const { bob, api, chatId } = await pair();
    const first = await api.sendMessage({ chatId, clientMessageId: "retry-me", text: "once" });
    const again = await api.sendMessage({ chatId, clientMessageId: "retry-me", text: "once" });
    const concurrent = await Promise.all(
      Array.from({ length: 5 }, () => api.sendMessage({ chatId, clientMessageId: "burst", text: "burst" })),
    );
    expect(again.messageId).toBe(first.messageId);
    expect(again.seq).toBe(first.seq);
    expect(new Set(concurrent.map((r) => r.messageId)).size).toBe(1);
    const receiver = ConnectDevice.open(server.url, await server.token(bob, "phone"));
    await receiver.waitForDrained();
    // The device first appeared after the sends: it has nothing. Its user's chat holds exactly two messages.
    expect((await api.getChat({ chatId })).chat?.lastSeq).toBe(2n);
    receiver.disconnect();
  });

  it("assigns gap-free seqs to concurrent sends into one chat", async () => {
    const { api, chatId } = await pair();
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => api.sendMessage({ chatId, clientMessageId: `p${i}`, text: `${i}` })),
    );
    expect(results.map((r) => r.seq).sort((a, b) => Number(a - b))).toEqual(Array.from({ length: 40 }, (_, i) => BigInt(i + 1)));
  });

  it("refuses each limit with INVALID_ARGUMENT and stores nothing", async () => {
    const { api, chatId } = await pair();
    const cases = [
      { chatId, clientMessageId: "t", text: "x".repeat(65_537) },
      { chatId, clientMessageId: "e", text: "" },
      { chatId, clientMessageId: "", text: "no id" },
      { chatId, clientMessageId: "a", text: "x", attachmentIds: Array.from({ length: 11 }, (_, i) => `00000000-0000-4000-8000-0000000000${String(i).padStart(2, "0")}`) },
      { chatId: "nope", clientMessageId: "c", text: "bad chat id" },
    ];
    for (const request of cases) expect(await codeOf(api.sendMessage(request))).toBe(Code.InvalidArgument);
    expect((await api.getChat({ chatId })).chat?.lastSeq).toBe(0n);
    // Exactly 64 KiB is fine.
    expect((await api.sendMessage({ chatId, clientMessageId: "max", text: "x".repeat(65_536) })).seq).toBe(1n);
  });

  it("refuses a device's sends past its rate with RESOURCE_EXHAUSTED and when to retry, storing nothing", async () => {
    const { alice, api, chatId } = await pair();
    await Promise.all(
      Array.from({ length: SENDS_PER_MINUTE }, (_, i) => api.sendMessage({ chatId, clientMessageId: `r${i}`, text: `${i}` })),
    );
    const refused = await api.sendMessage({ chatId, clientMessageId: "over", text: "one too many" }).then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    expect(refused?.code).toBe(Code.ResourceExhausted);
    expect(Number(refused?.metadata.get("retry-after"))).toBeGreaterThan(0);

    // The same device on its Connect stream is refused too; the user's other device is not.
    const phone = ConnectDevice.open(server.url, await server.token(alice, "phone"));
    await phone.waitForDrained();
    const frame = await phone.command({ case: "sendMessage", value: { chatId, clientMessageId: "over-stream", text: "x" } });
    const error = frame.outcome.case === "error" ? frame.outcome.value : undefined;
    expect(error?.code).toBe(Code.ResourceExhausted);
    expect(error?.retryAfter?.seconds).toBeGreaterThan(0n);
    phone.disconnect();
    const laptop = connectChatClient(server.url, await server.token(alice, "laptop"));
    const sent = await laptop.sendMessage({ chatId, clientMessageId: "other-device", text: "fine" });
    expect(sent.seq).toBe(BigInt(SENDS_PER_MINUTE + 1));
  });

  it("refuses a non-participant's send with PERMISSION_DENIED", async () => {
    const { eve, chatId } = await pair();
    const eveApi = connectChatClient(server.url, await server.token(eve, "phone"));
    expect(await codeOf(eveApi.sendMessage({ chatId, clientMessageId: "1", text: "let me in" }))).toBe(Code.PermissionDenied);
  });

  it("answers a command on the Connect stream with its error and keeps the stream open", async () => {
    const { alice, chatId } = await pair();
    const device = ConnectDevice.open(server.url, await server.token(alice, "laptop"));
    await device.waitForDrained();
    const bad = await device.command({ case: "sendMessage", value: { chatId, clientMessageId: "", text: "x" } });
    expect(bad.outcome.case === "error" && bad.outcome.value.code).toBe(Code.InvalidArgument);
    const good = await device.command({ case: "sendMessage", value: { chatId, clientMessageId: "ok", text: "x" } });
    expect(good.outcome.case).toBe("sendMessage");
    device.disconnect();
  });

  it("stores sends pipelined on one stream together, in the order sent, and runs a later command after them", async () => {
    const { alice, chatId } = await pair();
    const sendFrames = Array.from({ length: 20 }, (_, i) =>
      create(ConnectRequestSchema, {
        requestId: `s${i}`,
        command: { case: "sendMessage", value: { chatId, clientMessageId: `p${i}`, text: `m${i}` } },
      }),
    );
    const getChat = create(ConnectRequestSchema, { requestId: "g", command: { case: "getChat", value: { chatId } } });
    const batches = async () =>
      sample(await scrapeMetrics(server.url), "palaver_group_commit_batch_size_count", { committer: "sends" });
    const batchesBefore = await batches();
    const { messages, status } = await rawGrpcCall(
      server.url,
      "/palaver.chat.v1.ChatService/Connect",
      await server.token(alice, "pipeline"),
      [...sendFrames, getChat].map((frame) => toBinary(ConnectRequestSchema, frame)),
    );
    expect(status).toBe(0);
    const results = messages
      .map((bytes) => fromBinary(ConnectResponseSchema, bytes).frame)
      .flatMap((f) => (f.case === "result" ? [f.value] : []));
    const seqOf = new Map(
      results.flatMap((r) => (r.outcome.case === "sendMessage" ? [[r.requestId, r.outcome.value.seq] as const] : [])),
    );
    // Every send answered, with seqs in the order the frames were sent.
    expect(sendFrames.map((f) => seqOf.get(f.requestId))).toEqual(sendFrames.map((_, i) => BigInt(i + 1)));
    // The GetChat after them saw all of them stored, and came last.
    const last = results.at(-1)!;
    expect(last.requestId).toBe("g");
    expect(last.outcome.case === "getChat" && last.outcome.value.chat?.lastSeq).toBe(20n);
    // One at a time they would have been 20 batches; queued together, the first went alone and the rest shared.
    expect((await batches()) - batchesBefore).toBeLessThan(20);
  });

  it("answers every command a device sent before half-closing its stream, then ends the stream cleanly", async () => {
    const { alice, chatId } = await pair();
    const frames = Array.from({ length: 5 }, (_, i) =>
      toBinary(ConnectRequestSchema, create(ConnectRequestSchema, { requestId: `g${i}`, command: { case: "getChat", value: { chatId } } })),
    );
    const { messages, status } = await rawGrpcCall(server.url, "/palaver.chat.v1.ChatService/Connect", await server.token(alice, "script"), frames);
    const results = messages
      .map((bytes) => fromBinary(ConnectResponseSchema, bytes).frame)
      .flatMap((f) => (f.case === "result" ? [f.value.requestId] : []));
    expect(results).toEqual(["g0", "g1", "g2", "g3", "g4"]);
    expect(status).toBe(0);
  });
});
