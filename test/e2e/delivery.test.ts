import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CommandResult, ConnectRequestSchema, ConnectResponseSchema } from "../../gen/palaver/chat/v1/chat_pb.js";
import { ConnectDevice, SubscribeDevice, connectChatClient, grpcChatClient } from "../../src/client/device.js";
import { rawGrpcCall } from "../support/raw-grpc.js";
import { openStalledStream } from "../support/stalled-stream.js";
import { testBackends } from "../support/db.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

describe.each(testBackends())("delivery on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(backend, { STREAM_QUEUE_LIMIT: "40", SUBSCRIBE_KEEPALIVE_SECONDS: "1" });
  });
  afterAll(() => server?.close());

  async function device(user: string, name: string) {
    const device = ConnectDevice.open(server.url, await server.token(user, name));
    await device.waitForDrained();
    return device;
  }

  async function createChat(creator: ConnectDevice, others: string[]) {
    const result = await creator.command({ case: "createChat", value: { name: "group", participantUserIds: others } });
    if (result.outcome.case !== "createChat") throw new Error(`createChat failed: ${JSON.stringify(result.outcome)}`);
    return result.outcome.value.chat!.chatId;
  }

  it("delivers every message to each of the five other devices exactly once", async () => {
    const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser);
    const devices = {
      alicePhone: await device(alice!, "phone"),
      aliceLaptop: await device(alice!, "laptop"),
      bobPhone: await device(bob!, "phone"),
      bobLaptop: await device(bob!, "laptop"),
      carolPhone: await device(carol!, "phone"),
      carolLaptop: await device(carol!, "laptop"),
    };
    const chatId = await createChat(devices.alicePhone, [bob!, carol!]);
    const senders = [devices.alicePhone, devices.bobLaptop, devices.carolPhone];
    for (let i = 0; i < 9; i++) {
      const sender = senders[i % 3]!;
      const result = await sender.command({
        case: "sendMessage",
        value: { chatId, clientMessageId: `m${i}`, text: `hello ${i}` },
      });
      expect(result.outcome.case).toBe("sendMessage");
    }
    for (const [name, d] of Object.entries(devices)) {
      const own = senders.includes(d) ? 3 : 0;
      await d.waitForMessages(9 - own);
      // Let stragglers (duplicates) arrive before counting.
      await new Promise((r) => setTimeout(r, 100));
      const texts = d.messages.map((m) => m.text).sort();
      expect(texts, name).toHaveLength(9 - own);
      expect(new Set(d.stored.map((e) => e.eventId)).size, name).toBe(d.stored.length);
      expect(d.messages.map((m) => m.seq), name).toEqual([...d.messages.map((m) => m.seq)].sort((a, b) => Number(a - b)));
    }
    // The sender's own other device gets what it sent; the sending device does not.
    expect(devices.aliceLaptop.messages.filter((m) => m.senderDeviceId === "phone" && m.senderUserId === alice)).toHaveLength(3);
    expect(devices.alicePhone.messages.filter((m) => m.senderUserId === alice)).toHaveLength(0);
    for (const d of Object.values(devices)) d.disconnect();
  });

  it("gives a device that was offline during 50 sends all 50 in seq order, then InboxDrained, then live ones", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const sender = await device(alice!, "phone");
    const offline = await device(bob!, "tablet");
    const chatId = await createChat(sender, [bob!]);
    await offline.waitForChatUpdates(1);
    offline.ackAll();
    await expect.poll(() => server.inbox(bob!, "tablet"), { timeout: 10_000 }).toEqual([]);
    offline.disconnect();
    const sends = Array.from({ length: 50 }, (_, i) =>
      sender.command({ case: "sendMessage", value: { chatId, clientMessageId: `c${i}`, text: `m${i}` } }),
    );
    await Promise.all(sends);

    const back = await device(bob!, "tablet");
    const beforeDrained = back.events.slice(0, back.events.findIndex((e) => e.kind.case === "inboxDrained"));
    const backlog = beforeDrained.flatMap((e) => (e.kind.case === "newMessage" ? [e.kind.value] : []));
    expect(backlog.map((m) => m.seq)).toEqual(Array.from({ length: 50 }, (_, i) => BigInt(i + 1)));
    const drained = back.events.find((e) => e.kind.case === "inboxDrained");
    expect(drained?.kind.case === "inboxDrained" && drained.kind.value.backlogEvents).toBe(50n);

    await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: "live", text: "live one" } });
    await back.waitForMessages(51);
    expect(back.messages.at(-1)?.text).toBe("live one");
    sender.disconnect();
    back.disconnect();
  });

  it("answers more pipelined sends than STREAM_QUEUE_LIMIT (40) without taking the sender for a slow reader", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const sender = await device(alice!, "phone");
    const chatId = await createChat(sender, [bob!]);
    sender.disconnect();
    const frames = Array.from({ length: 60 }, (_, i) =>
      toBinary(
        ConnectRequestSchema,
        create(ConnectRequestSchema, {
          requestId: `s${i}`,
          command: { case: "sendMessage", value: { chatId, clientMessageId: `burst${i}`, text: `m${i}` } },
        }),
      ),
    );
    // All 60 frames go out at once, before any answer is read.
    const { messages, status } = await rawGrpcCall(
      server.url,
      "/palaver.chat.v1.ChatService/Connect",
      await server.token(alice!, "phone"),
      frames,
    );
    expect(status).toBe(0);
    const seqs = messages
      .map((bytes) => fromBinary(ConnectResponseSchema, bytes).frame)
      .flatMap((f) => (f.case === "result" && f.value.outcome.case === "sendMessage" ? [f.value.outcome.value.seq] : []));
    expect(seqs.sort((a, b) => Number(a - b))).toEqual(Array.from({ length: 60 }, (_, i) => BigInt(i + 1)));
  });

  it("never sends acked events again, and deletes a message once every device acked it", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const sender = await device(alice!, "phone");
    const phone = await device(bob!, "phone");
    const laptop = await device(bob!, "laptop");
    const chatId = await createChat(sender, [bob!]);
    await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: "1", text: "keep?" } });
    await phone.waitForMessages(1);
    await laptop.waitForMessages(1);
    phone.ackAll();
    await expect.poll(() => server.inbox(bob!, "phone"), { timeout: 10_000 }).toEqual([]);
    phone.disconnect();

    const phoneAgain = await device(bob!, "phone");
    expect(phoneAgain.stored).toHaveLength(0);
    // The laptop has not acked: the message is still there for it.
    expect(await server.inbox(bob!, "laptop")).toHaveLength(2);
    laptop.ackAll();
    await expect.poll(() => server.inbox(bob!, "laptop"), { timeout: 10_000 }).toEqual([]);
    // The message goes in the ack batch's next statement, after the inbox entries' DELETE has committed.
    await expect.poll(() => server.messageCount(chatId), { timeout: 10_000 }).toBe(0);
    for (const d of [sender, phoneAgain, laptop]) d.disconnect();
  });

  it("answers an ack frame with answer_errors_only only if it refuses it, and goes on with the stream", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    await server.deviceKey(bob!, "phone");
    const sender = await device(alice!, "phone");
    const chatId = await createChat(sender, [bob!]);
    await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: "m", text: "ack me" } });
    sender.disconnect();

    // Bob's phone takes its backlog, then acks it, acks too many ids (1000 at most), and lists its chats.
    const backlog: bigint[] = [];
    let drained!: () => void;
    const backlogTaken = new Promise<void>((resolve) => (drained = resolve));
    let allAnswered!: () => void;
    const answered = new Promise<void>((resolve) => (allAnswered = resolve));
    const ack = (requestId: string, eventIds: bigint[]) =>
      create(ConnectRequestSchema, { requestId, answerErrorsOnly: true, command: { case: "ackEvents", value: { eventIds } } });
    async function* requests() {
      await backlogTaken;
      yield ack("ack", backlog);
      yield ack("too-many", Array.from({ length: 1001 }, (_, i) => BigInt(i + 1)));
      yield create(ConnectRequestSchema, { requestId: "list", command: { case: "listChats", value: {} } });
      await answered;
    }
    const results: CommandResult[] = [];
    const phone = grpcChatClient(server.url, await server.token(bob!, "phone"));
    for await (const { frame } of phone.connect(requests())) {
      if (frame.case === "event" && frame.value.eventId !== 0n) backlog.push(frame.value.eventId);
      if (frame.case === "event" && frame.value.kind.case === "inboxDrained") drained();
      if (frame.case === "result") results.push(frame.value);
      if (frame.case === "result" && frame.value.requestId === "list") allAnswered();
    }
    expect(backlog).toHaveLength(2); // the chat's creation and the message
    // Frames are taken in order: by the answer to the listing, the ack had been carried out, and was not answered.
    expect(results).toMatchObject([
      { requestId: "too-many", outcome: { case: "error", value: { code: Code.InvalidArgument } } },
      { requestId: "list", outcome: { case: "listChats" } },
    ]);
    const again = await device(bob!, "phone");
    expect(again.stored).toEqual([]);
    again.disconnect();
  });

  it("ignores acks of event ids that are not in the device's own inbox", async () => {
    const [alice, bob, mallory] = ["alice", "bob", "mallory"].map(uniqueUser);
    const sender = await device(alice!, "phone");
    const receiver = await device(bob!, "phone");
    const chatId = await createChat(sender, [bob!]);
    await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: "x", text: "for bob" } });
    await receiver.waitForMessages(1);
    const ids = receiver.stored.map((e) => e.eventId);
    const thief = grpcChatClient(server.url, await server.token(mallory!, "phone"));
    await thief.ackEvents({ eventIds: ids });
    receiver.disconnect();
    const again = await device(bob!, "phone");
    expect(again.stored.map((e) => e.eventId)).toEqual(ids);
    sender.disconnect();
    again.disconnect();
  });

  it("does not deliver a retried send twice on a stream", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const sender = await device(alice!, "phone");
    const receiver = await device(bob!, "phone");
    const chatId = await createChat(sender, [bob!]);
    const send = { case: "sendMessage" as const, value: { chatId, clientMessageId: "again", text: "once" } };
    await sender.command(send);
    await receiver.waitForMessages(1);
    for (let i = 0; i < 3; i++) await sender.command(send);
    await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: "next", text: "twice" } });
    await receiver.waitForMessages(2);
    expect(receiver.messages.map((m) => m.text)).toEqual(["once", "twice"]);
    sender.disconnect();
    receiver.disconnect();
  });

  it("ends the older stream of a device with ABORTED when the device connects again", async () => {
    const user = uniqueUser("dup");
    const first = await device(user, "phone");
    const second = await device(user, "phone");
    await first.waitForEnd();
    expect(first.ended?.code).toBe(Code.Aborted);
    expect(second.ended).toBeUndefined();
    second.disconnect();
  });

  it("serves Subscribe over HTTP/1.1 with the same backlog, drain marker and live events", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const sender = await device(alice!, "phone");
    const chatId = await createChat(sender, [bob!]);
    await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: "b1", text: "backlog" } });
    const browser = new SubscribeDevice(server.url, await server.token(bob!, "browser"));
    // The browser device did not exist when the message was sent: it only gets what is sent after it appears.
    await browser.waitForDrained();
    await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: "l1", text: "live" } });
    await browser.waitForMessages(1);
    expect(browser.messages.map((m) => m.text)).toEqual(["live"]);
    await browser.client.ackEvents({ eventIds: browser.stored.map((e) => e.eventId) });
    browser.disconnect();
    const back = new SubscribeDevice(server.url, await server.token(bob!, "browser"));
    await back.waitForDrained();
    expect(back.stored).toHaveLength(0);
    back.disconnect();
    sender.disconnect();
  });

  it("keeps a quiet Subscribe stream open with empty responses, and live events still come", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const sender = await device(alice!, "phone");
    const chatId = await createChat(sender, [bob!]);
    const abort = new AbortController();
    const browser = connectChatClient(server.url, await server.token(bob!, "browser"));
    const responses = browser.subscribe({}, { signal: abort.signal })[Symbol.asyncIterator]();
    const next = async () => (await responses.next()).value!;
    while ((await next()).event?.kind.case !== "inboxDrained");

    const quiet = performance.now();
    expect((await next()).event).toBeUndefined(); // nothing was sent: a keep-alive, after SUBSCRIBE_KEEPALIVE_SECONDS
    expect(performance.now() - quiet).toBeGreaterThanOrEqual(900);
    await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: "after", text: "still here" } });
    let response = await next();
    while (!response.event) response = await next();
    expect(response.event.kind.case === "newMessage" && response.event.kind.value.text).toBe("still here");
    abort.abort();
    sender.disconnect();
  });

  it("ends a stream that does not read with RESOURCE_EXHAUSTED and keeps its events in the inbox", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser);
    const sender = await device(alice!, "phone");
    const chatId = await createChat(sender, [bob!]);
    const stalled = await openStalledStream(server.url, await server.token(bob!, "phone"));
    const big = "x".repeat(60_000);
    // Enough bytes to fill the HTTP/2 flow-control windows, then more than STREAM_QUEUE_LIMIT (40) events.
    for (let i = 0; i < 120; i++) {
      await sender.command({ case: "sendMessage", value: { chatId, clientMessageId: `s${i}`, text: big } });
    }
    expect(await stalled.endedWith()).toBe(Code.ResourceExhausted);
    const reader = await device(bob!, "phone");
    await reader.waitForMessages(120, 20_000);
    expect(new Set(reader.messages.map((m) => m.seq)).size).toBe(120);
    sender.disconnect();
    reader.disconnect();
  });
});
