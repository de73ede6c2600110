import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConnectDevice, connectChatClient } from "../../src/client/device.js";
import { codeOf } from "../support/codes.js";
import { testBackends } from "../support/db.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

/** Low enough to reach in a test, above what any other test here sends from one device. */
const TYPING_PER_MINUTE = 8;

/**
 * Receipts (delivered and read) and typing through a real server: what a sender's devices hear, what a reader's
 * other devices hear, what comes back to a device that was offline, and that none of it is stored.
 */
describe.each(testBackends())("receipts and typing on %s", (backend) => {
  let server: TestServer;
  const devices: ConnectDevice[] = [];
  beforeAll(async () => {
    server = await startTestServer(backend, { TYPING_LIMIT_PER_MINUTE: String(TYPING_PER_MINUTE) });
  });
  afterAll(async () => {
    for (const device of devices.splice(0)) device.disconnect();
    await server?.close();
  });

  async function online(userId: string, deviceName: string): Promise<ConnectDevice> {
    const device = ConnectDevice.open(server.url, await server.token(userId, deviceName));
    devices.push(device);
    await device.waitForDrained();
    return device;
  }

  const api = async (userId: string, deviceName = "phone") =>
    connectChatClient(server.url, await server.token(userId, deviceName));

  /** A chat of the given users (the first creates it), with the first user's messages 1..count sent. */
  async function chatWith(users: string[], count: number) {
    const sender = await api(users[0]!);
    const { chat } = await sender.createChat({ participantUserIds: users.slice(1) });
    const chatId = chat!.chatId;
    for (let i = 1; i <= count; i++) await sender.sendMessage({ chatId, clientMessageId: `m${i}`, text: `message ${i}` });
    return { chatId, sender };
  }

  it("tells the sender each receipt as it moves, delivered before read, never backwards", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const alicePhone = await online(alice, "phone");
    const bobPhone = await online(bob, "phone");
    const { chatId } = await chatWith([alice, bob], 3);
    await bobPhone.waitForMessages(3);

    bobPhone.ackAll();
    await alicePhone.until(() => alicePhone.receiptsIn(chatId).get(bob)?.deliveredSeq === 3n, "bob's delivery");
    expect(alicePhone.receiptsIn(chatId).get(bob)).toEqual({ deliveredSeq: 3n, readSeq: 0n });

    const bobApi = await api(bob);
    expect(await bobApi.markRead({ chatId, seq: 2n })).toMatchObject({
      receipt: { userId: bob, deliveredSeq: 3n, readSeq: 2n },
      unreadCount: 1n,
    });
    await alicePhone.until(() => alicePhone.receiptsIn(chatId).get(bob)?.readSeq === 2n, "bob's read up to 2");
    // A lower mark changes nothing and tells nobody.
    const updates = alicePhone.receiptUpdates.length;
    expect((await bobApi.markRead({ chatId, seq: 1n })).receipt?.readSeq).toBe(2n);
    // Marked read on the stream this time.
    const onStream = await bobPhone.command({ case: "markRead", value: { chatId, seq: 3n } });
    expect(onStream.outcome).toMatchObject({ case: "markRead", value: { receipt: { readSeq: 3n }, unreadCount: 0n } });
    await alicePhone.until(() => alicePhone.receiptsIn(chatId).get(bob)?.readSeq === 3n, "bob's read up to 3");
    expect(alicePhone.receiptUpdates.length).toBe(updates + 1);

    // In the order they moved, each seq only ever up, and read never ahead of delivered.
    const seen = alicePhone.receiptUpdates.filter((r) => r.userId === bob);
    expect(seen.map((r) => [r.deliveredSeq, r.readSeq])).toEqual([
      [3n, 0n],
      [3n, 2n],
      [3n, 3n],
    ]);
    // Receipts are never stored: Alice's inbox holds the chat's creation and nothing else, Bob's only what he sent.
    alicePhone.ackAll();
    await expect.poll(() => server.inbox(alice, "phone"), { timeout: 10_000 }).toEqual([]);
    expect(alicePhone.stored.every((e) => e.kind.case === "chatUpdate")).toBe(true);
  });

  it("merges the acks of many devices within a moment into one receipt per user, and counts unread per user", async () => {
    const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser) as [string, string, string];
    const alicePhone = await online(alice, "phone");
    const bobs = await Promise.all(["phone", "laptop", "tablet"].map((d) => online(bob, d)));
    const carolPhone = await online(carol, "phone");
    const { chatId } = await chatWith([alice, bob, carol], 5);
    for (const device of [...bobs, carolPhone]) await device.waitForMessages(5);

    // Every message acked on its own by each of Bob's devices and Carol's: 20 acks.
    await Promise.all(
      [...bobs, carolPhone].flatMap((device) => device.stored.map((e) => device.command({ case: "ackEvents", value: { eventIds: [e.eventId] } }))),
    );
    await alicePhone.until(
      () => [bob, carol].every((u) => alicePhone.receiptsIn(chatId).get(u)?.deliveredSeq === 5n),
      "both deliveries",
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    const perUser = (u: string) => alicePhone.receiptUpdates.filter((r) => r.userId === u).length;
    // One window, one update each; never one per ack (a second window at most, if the acks straddled two).
    expect(perUser(bob)).toBeLessThanOrEqual(2);
    expect(perUser(carol)).toBeLessThanOrEqual(2);

    const unread = async (userId: string) => (await (await api(userId)).getChat({ chatId })).chat?.unreadCount;
    expect(await unread(alice)).toBe(0n); // her own messages
    expect(await unread(bob)).toBe(5n);
    const { chats } = await (await api(carol)).listChats({});
    expect(chats.find((c) => c.chatId === chatId)).toMatchObject({ unreadCount: 5n, lastSeq: 5n });
    // Carol replies: sending marks the chat read up to her message, and the message says so to the others.
    await (await api(carol)).sendMessage({ chatId, clientMessageId: "reply", text: "thanks" });
    expect(await unread(carol)).toBe(0n);
    expect(await unread(bob)).toBe(6n);
    await alicePhone.until(() => alicePhone.receiptsIn(chatId).get(carol)?.readSeq === 6n, "carol's reply");
  });

  it("clears the unread count on the reader's other devices, not on the device that read", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const bobPhone = await online(bob, "phone");
    const bobLaptop = await online(bob, "laptop");
    const { chatId } = await chatWith([alice, bob], 2);
    await bobLaptop.waitForMessages(2);

    await bobPhone.command({ case: "markRead", value: { chatId, seq: 2n } });
    await bobLaptop.until(() => bobLaptop.receiptsIn(chatId).get(bob)?.readSeq === 2n, "the read on the phone");
    expect((await (await api(bob, "laptop")).getChat({ chatId })).chat?.unreadCount).toBe(0n);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(bobPhone.receiptUpdates.filter((r) => r.userId === bob)).toEqual([]);
  });

  it("gives a device that was offline the receipts as they are now, from GetChat and ListChats", async () => {
    const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser) as [string, string, string];
    const carolPhone = await online(carol, "phone");
    const { chatId } = await chatWith([alice, bob, carol], 4);
    // Alice's laptop is offline all along. Bob reads on the web (unary), Carol's phone receives and acks.
    await (await api(bob, "web")).markRead({ chatId, seq: 3n });
    await carolPhone.waitForMessages(4);
    carolPhone.ackAll();
    const laptopApi = await api(alice, "laptop");
    await expect
      .poll(async () => (await laptopApi.getChat({ chatId })).chat?.receipts)
      .toEqual([
        { $typeName: "palaver.chat.v1.Receipt", userId: alice, deliveredSeq: 4n, readSeq: 4n },
        { $typeName: "palaver.chat.v1.Receipt", userId: bob, deliveredSeq: 3n, readSeq: 3n },
        { $typeName: "palaver.chat.v1.Receipt", userId: carol, deliveredSeq: 4n, readSeq: 0n },
      ]);
    const aliceLaptop = await online(alice, "laptop");
    // Its backlog has no receipts: they were never stored.
    expect(aliceLaptop.receiptUpdates).toEqual([]);
  });

  it("refuses bad marks with a clear code and changes nothing", async () => {
    const [alice, bob, eve] = ["alice", "bob", "eve"].map(uniqueUser) as [string, string, string];
    const { chatId } = await chatWith([alice, bob], 2);
    const bobApi = await api(bob);
    expect(await codeOf(bobApi.markRead({ chatId, seq: 3n }))).toBe(Code.InvalidArgument);
    expect(await codeOf(bobApi.markRead({ chatId, seq: 0n }))).toBe(Code.InvalidArgument);
    expect(await codeOf(bobApi.markRead({ chatId: "not-a-uuid", seq: 1n }))).toBe(Code.InvalidArgument);
    expect(await codeOf((await api(eve)).markRead({ chatId, seq: 1n }))).toBe(Code.PermissionDenied);
    expect(await codeOf(bobApi.markRead({ chatId: crypto.randomUUID(), seq: 1n }))).toBe(Code.NotFound);
    expect((await bobApi.getChat({ chatId })).chat).toMatchObject({ unreadCount: 2n });
  });

  it("sends typing to the other participants' online devices only, lapsing, and never stores it", async () => {
    const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser) as [string, string, string];
    const alicePhone = await online(alice, "phone");
    const aliceLaptop = await online(alice, "laptop");
    const bobPhone = await online(bob, "phone");
    const bobLaptop = await online(bob, "laptop");
    const carolPhone = await online(carol, "phone");
    const { chatId, sender } = await chatWith([alice, bob, carol], 0);
    await sender.modifyChatParticipants({ chatId, userId: carol, operation: 2 }); // carol removed

    const typed = await bobPhone.command({ case: "setTyping", value: { chatId, typing: true } });
    expect(typed.outcome.case).toBe("setTyping");
    for (const device of [alicePhone, aliceLaptop]) {
      await device.until(() => device.typingIn(chatId).includes(bob), "bob typing");
    }
    expect(alicePhone.typingUpdates[0]).toMatchObject({ userId: bob, deviceId: "phone", typing: true, lapseAfter: { seconds: 6n } });
    // It lapses on its own (six seconds later, as the client reckons it)...
    expect(alicePhone.typingIn(chatId, Date.now() + 6_100)).toEqual([]);
    // ...stops when Bob stops, and when his message comes.
    await (await api(bob, "laptop")).setTyping({ chatId, typing: false });
    await alicePhone.until(() => alicePhone.typingIn(chatId).length === 0, "bob stopped");
    await bobPhone.command({ case: "setTyping", value: { chatId, typing: true } });
    await alicePhone.until(() => alicePhone.typingIn(chatId).includes(bob), "bob typing again");
    await bobPhone.command({ case: "sendMessage", value: { chatId, clientMessageId: "hi", text: "hi" } });
    await alicePhone.until(() => alicePhone.typingIn(chatId).length === 0, "bob's message");

    // Neither Bob's own devices nor Carol, removed, heard any of it; Carol may not type into the chat either.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect([...bobPhone.typingUpdates, ...bobLaptop.typingUpdates, ...carolPhone.typingUpdates]).toEqual([]);
    expect(await codeOf((await api(carol)).setTyping({ chatId, typing: true }))).toBe(Code.PermissionDenied);
    // Not stored: a device that connects now gets none of it, and the inbox holds the chat's events and the message.
    const aliceTablet = await online(alice, "tablet");
    expect(aliceTablet.typingUpdates).toEqual([]);
    alicePhone.ackAll();
    await expect.poll(() => server.inbox(alice, "phone"), { timeout: 10_000 }).toEqual([]);
    expect(alicePhone.stored.map((e) => e.kind.case)).toEqual(["chatUpdate", "chatUpdate", "newMessage"]);
  });

  it("tells a removed participant nothing, though their messages are acked and read after they left", async () => {
    const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser) as [string, string, string];
    const carolPhone = await online(carol, "phone");
    const bobPhone = await online(bob, "phone");
    const { chatId, sender } = await chatWith([alice, bob, carol], 1);
    await (await api(carol)).sendMessage({ chatId, clientMessageId: "before-leaving", text: "bye" });
    await sender.modifyChatParticipants({ chatId, userId: carol, operation: 2 });
    await bobPhone.waitForMessages(2);
    bobPhone.ackAll();
    await bobPhone.command({ case: "markRead", value: { chatId, seq: 2n } });
    await bobPhone.command({ case: "setTyping", value: { chatId, typing: true } });
    const alicePhone = await online(alice, "phone");
    await (await api(alice)).setTyping({ chatId, typing: true });
    await bobPhone.until(() => bobPhone.typingIn(chatId).includes(alice), "alice typing");
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect([...carolPhone.receiptUpdates, ...carolPhone.typingUpdates]).toEqual([]);
    expect(await codeOf((await api(carol)).markRead({ chatId, seq: 1n }))).toBe(Code.PermissionDenied);
    alicePhone.disconnect();
  });

  it("refuses a device's typing past its rate with RESOURCE_EXHAUSTED", async () => {
    const [alice, bob] = ["alice", "bob"].map(uniqueUser) as [string, string];
    const { chatId } = await chatWith([alice, bob], 0);
    const bobApi = await api(bob);
    for (let i = 0; i < TYPING_PER_MINUTE; i++) await bobApi.setTyping({ chatId, typing: i % 2 === 0 });
    expect(await codeOf(bobApi.setTyping({ chatId, typing: true }))).toBe(Code.ResourceExhausted);
    // Another device of the same user has its own allowance.
    expect(await codeOf((await api(bob, "laptop")).setTyping({ chatId, typing: true }))).toBe("ok");
  });
});
