import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccountService } from "../../gen/palaver/chat/v1/account_pb.js";
import { ParticipantOperation } from "../../gen/palaver/chat/v1/chat_pb.js";
import { ResyncReason } from "../../gen/palaver/chat/v1/event_pb.js";
import { ConnectDevice, connectChatClient, connectTransport } from "../../src/client/device.js";
import { codeOf } from "../support/codes.js";
import { testBackends } from "../support/db.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";

const DAY_MS = 24 * 60 * 60 * 1000;

/** The error a call failed with, or undefined when it succeeded. */
async function errorOf(call: Promise<unknown>) {
  return call.then(
    () => undefined,
    (error: unknown) => error as Error & { code: Code },
  );
}

describe.each(testBackends())("AccountService on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(backend);
  });
  afterAll(() => server?.close());

  /** The chat and account clients of one device, with a token issued now (or at `issuedAt`). */
  async function device(userId: string, deviceName = "phone", issuedAt?: Date) {
    const token = await server.token(userId, deviceName, { now: issuedAt });
    return {
      token,
      chat: connectChatClient(server.url, token),
      account: createClient(AccountService, connectTransport(server.url, token)),
    };
  }

  describe("blocking", () => {
    it("keeps the blocked user from putting the blocker into a chat, storing nothing, until unblocked", async () => {
      const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser) as [string, string, string];
      const [a, b] = [await device(alice), await device(bob)];
      await a.account.blockUser({ userId: bob });

      expect(await codeOf(b.chat.createChat({ name: "hi", participantUserIds: [alice] }))).toBe(Code.PermissionDenied);
      const group = await errorOf(b.chat.createChat({ name: "party", participantUserIds: [carol, alice] }));
      expect(group?.code).toBe(Code.PermissionDenied);
      expect(group?.message).toContain(alice);
      const { chat } = await b.chat.createChat({ name: "bob and carol", participantUserIds: [carol] });
      const add = { chatId: chat!.chatId, userId: alice, operation: ParticipantOperation.ADD };
      expect(await codeOf(b.chat.modifyChatParticipants(add))).toBe(Code.PermissionDenied);
      expect((await b.chat.listChats({})).chats.map((c) => c.participantUserIds)).toEqual([[bob, carol].sort()]);
      expect((await a.chat.listChats({})).chats).toEqual([]);
      expect(await server.inbox(alice, "phone")).toEqual([]);

      // Others may still put them together, and the blocker may add the blocked user.
      const c = await device(carol);
      expect(await codeOf(c.chat.createChat({ participantUserIds: [alice, bob] }))).toBe("ok");
      expect(await codeOf(a.chat.createChat({ participantUserIds: [bob] }))).toBe("ok");

      await a.account.unblockUser({ userId: bob });
      expect(await codeOf(b.chat.modifyChatParticipants(add))).toBe("ok");
      expect(await codeOf(b.chat.createChat({ participantUserIds: [alice] }))).toBe("ok");
    });

    it("refuses the blocked user's messages in a chat of two, on the unary call and on the stream, storing nothing; groups go on", async () => {
      const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser) as [string, string, string];
      const [a, b] = [await device(alice), await device(bob)];
      const direct = (await a.chat.createChat({ participantUserIds: [bob] })).chat!.chatId;
      const group = (await a.chat.createChat({ participantUserIds: [bob, carol] })).chat!.chatId;
      const alicePhone = ConnectDevice.open(server.url, a.token);
      await alicePhone.waitForDrained();
      await a.account.blockUser({ userId: bob });

      expect(await codeOf(b.chat.sendMessage({ chatId: direct, clientMessageId: "u1", text: "hello?" }))).toBe(
        Code.PermissionDenied,
      );
      const bobPhone = ConnectDevice.open(server.url, await server.token(bob, "laptop"));
      const framed = await bobPhone.command({
        case: "sendMessage",
        value: { chatId: direct, clientMessageId: "s1", text: "hello??" },
      });
      expect(framed.outcome.case === "error" && framed.outcome.value.code).toBe(Code.PermissionDenied);
      expect(await server.messageCount(direct)).toBe(0);
      expect((await a.chat.getChat({ chatId: direct })).chat?.lastSeq).toBe(0n);

      // In a group the two still hear each other, and the blocker may still write to the blocked user.
      await b.chat.sendMessage({ chatId: group, clientMessageId: "g1", text: "hi all" });
      await a.chat.sendMessage({ chatId: direct, clientMessageId: "a1", text: "I blocked you" });
      await alicePhone.waitForMessages(1);
      expect(alicePhone.messages.map((m) => m.text)).toEqual(["hi all"]);

      await a.account.unblockUser({ userId: bob });
      expect(await codeOf(b.chat.sendMessage({ chatId: direct, clientMessageId: "u1", text: "hello?" }))).toBe("ok");
      await alicePhone.waitForMessages(2);
      alicePhone.disconnect();
      bobPhone.disconnect();
    });

    it("lists blocked users in pages, and refuses blocking oneself or a malformed id", async () => {
      const alice = uniqueUser("alice");
      const a = await device(alice);
      const others = ["bob", "carol", "dave"].map((name) => `${alice}-${name}`);
      for (const other of others) await a.account.blockUser({ userId: other });
      await a.account.blockUser({ userId: others[0]! }); // again: nothing changes
      const first = await a.account.listBlockedUsers({ pageSize: 2 });
      const second = await a.account.listBlockedUsers({ pageSize: 2, pageToken: first.nextPageToken });
      expect([...first.blockedUsers, ...second.blockedUsers].map((u) => u.userId)).toEqual(others);
      expect(second.nextPageToken).toBe("");
      expect(first.blockedUsers[0]?.blockedAt).toBeDefined();
      expect((await a.account.listBlockedUsers({})).blockedUsers).toHaveLength(3);

      expect(await codeOf(a.account.blockUser({ userId: alice }))).toBe(Code.InvalidArgument);
      expect(await codeOf(a.account.blockUser({ userId: "not a user id" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(a.account.unblockUser({ userId: "bob\u0000" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(a.account.listBlockedUsers({ pageToken: "not a user id" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(a.account.listBlockedUsers({ pageSize: 1001 }))).toBe(Code.InvalidArgument);
      const anonymous = createClient(AccountService, connectTransport(server.url));
      expect(await codeOf(anonymous.listBlockedUsers({}))).toBe(Code.Unauthenticated);
    });
  });

  describe("devices", () => {
    it("lists a user's devices and refuses a ninth with FAILED_PRECONDITION until one is removed", async () => {
      const alice = uniqueUser("alice");
      const names = Array.from({ length: 8 }, (_, i) => `device-${i}`);
      for (const name of names) await (await device(alice, name)).chat.listChats({});
      const ninth = await device(alice, "ninth");
      const refused = await errorOf(ninth.chat.listChats({}));
      expect(refused?.code).toBe(Code.FailedPrecondition);
      expect(refused?.message).toContain("MAX_DEVICES_PER_USER");
      expect(await codeOf(ninth.account.listDevices({}))).toBe(Code.FailedPrecondition);

      const first = await device(alice, names[0]);
      const { devices } = await first.account.listDevices({});
      expect(devices.map((d) => d.deviceId)).toEqual(names);
      for (const d of devices) expect(d.lastSeenAt!.seconds).toBeGreaterThanOrEqual(d.createdAt!.seconds);
      await first.account.removeDevice({ deviceId: names[7]! });
      expect(await codeOf(ninth.chat.listChats({}))).toBe("ok");
      expect((await first.account.listDevices({})).devices.map((d) => d.deviceId)).toEqual([...names.slice(0, 7), "ninth"]);
    });

    it("removes a device: ends its stream with UNAUTHENTICATED, refuses its older tokens, deletes its inbox and the messages no device needs", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const laptop = await device(alice, "laptop");
      await laptop.chat.listChats({}); // the laptop exists from its first call
      const phone = await device(alice, "phone");
      const phoneStream = ConnectDevice.open(server.url, phone.token);
      await phoneStream.waitForDrained();
      const phoneKey = await server.deviceKey(alice, "phone");
      const b = await device(bob);
      const chatId = (await b.chat.createChat({ participantUserIds: [alice] })).chat!.chatId;
      await b.chat.sendMessage({ chatId, clientMessageId: "m1", text: "one" });
      await b.chat.sendMessage({ chatId, clientMessageId: "m2", text: "two" });
      await phoneStream.waitForMessages(2);
      // The laptop handled the creation and the first message; only the phone still needs them.
      const laptopInbox = await server.inbox(alice, "laptop");
      await laptop.chat.ackEvents({ eventIds: laptopInbox.slice(0, 2).map((e) => e.eventId) });
      expect(await server.messageCount(chatId)).toBe(2);

      await laptop.account.removeDevice({ deviceId: "phone" });
      await phoneStream.waitForEnd();
      expect(phoneStream.ended?.code).toBe(Code.Unauthenticated);
      expect(await server.app.db.readInbox(phoneKey, 0n, 100)).toEqual([]);
      expect(await server.messageCount(chatId)).toBe(1); // the second: the laptop has not acked it
      expect((await laptop.account.listDevices({})).devices.map((d) => d.deviceId)).toEqual(["laptop"]);
      expect(await codeOf(laptop.account.removeDevice({ deviceId: "phone" }))).toBe(Code.NotFound);
      expect(await codeOf(laptop.account.removeDevice({ deviceId: "bad name!" }))).toBe(Code.InvalidArgument);

      // Its token from before the removal is refused, on calls and streams; a newer one makes it a new device.
      const refused = await errorOf(phone.chat.listChats({}));
      expect(refused?.code).toBe(Code.Unauthenticated);
      expect(refused?.message).toContain("removed");
      const again = ConnectDevice.open(server.url, phone.token);
      await again.waitForEnd();
      expect(again.ended?.code).toBe(Code.Unauthenticated);
      const relinked = await device(alice, "phone", new Date(Date.now() + 1500));
      expect((await relinked.chat.listChats({})).chats.map((c) => c.chatId)).toEqual([chatId]);
      const back = ConnectDevice.open(server.url, relinked.token);
      await back.waitForDrained();
      expect(back.stored).toEqual([]); // nothing stored before it existed again
      await b.chat.sendMessage({ chatId, clientMessageId: "m3", text: "three" });
      await back.waitForMessages(1);
      back.disconnect();
    });

    it("lets a device remove itself", async () => {
      const alice = uniqueUser("alice");
      const phone = await device(alice, "phone");
      await phone.account.removeDevice({ deviceId: "phone" });
      expect(await codeOf(phone.account.listDevices({}))).toBe(Code.Unauthenticated);
    });

    // Last: it moves the clock a month ahead, past every other test's devices.
    it("removes in the retention run the devices that have not connected for RETENTION_DAYS", async () => {
      const alice = uniqueUser("alice");
      const tablet = await device(alice, "tablet");
      const phone = await device(alice, "phone");
      const b = await device(uniqueUser("bob"));
      const chatId = (await b.chat.createChat({ participantUserIds: [alice] })).chat!.chatId;
      const tabletKey = await server.deviceKey(alice, "tablet");

      server.clock.advance(31 * DAY_MS);
      // The phone connects on the new day; the tablet stays away.
      const phoneStream = ConnectDevice.open(server.url, phone.token);
      await phoneStream.waitForDrained();
      const report = await server.app.retention.run();
      expect(report.devicesRemoved).toBeGreaterThanOrEqual(1);
      expect((await phone.account.listDevices({})).devices.map((d) => d.deviceId)).toEqual(["phone"]);
      expect(await server.app.db.readInbox(tabletKey, 0n, 100)).toEqual([]);
      expect(phoneStream.ended).toBeUndefined();
      phoneStream.disconnect();

      // The tablet was not unlinked by its user: its token still works, and it comes back told to resync.
      const tabletStream = ConnectDevice.open(server.url, tablet.token);
      await tabletStream.waitForDrained();
      expect(tabletStream.events[0]?.kind.case === "resync" && tabletStream.events[0].kind.value.reason).toBe(
        ResyncReason.RETENTION,
      );
      await b.chat.sendMessage({ chatId, clientMessageId: "later", text: "welcome back" });
      await tabletStream.waitForMessages(1);
      tabletStream.disconnect();
      expect(await server.deviceKey(alice, "tablet")).not.toBe(tabletKey);
    });
  });
});

describe.each(testBackends())("device removal across nodes on %s", (backend) => {
  let server: TestServer;
  let otherNode: { url: string };
  beforeAll(async () => {
    server = await startTestServer(backend, { REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379" });
    otherNode = await server.addNode();
  });
  afterAll(() => server?.close());

  it("ends the removed device's stream on the node that holds it, and that node refuses its token", async () => {
    const alice = uniqueUser("alice");
    const phoneToken = await server.token(alice, "phone");
    const phoneStream = ConnectDevice.open(otherNode.url, phoneToken);
    await phoneStream.waitForDrained();
    const laptop = createClient(AccountService, connectTransport(server.url, await server.token(alice, "laptop")));

    await laptop.removeDevice({ deviceId: "phone" });
    await phoneStream.waitForEnd();
    expect(phoneStream.ended?.code).toBe(Code.Unauthenticated);
    // The other node had the phone's key cached from its stream: the removal reached it there too.
    expect(await codeOf(connectChatClient(otherNode.url, phoneToken).listChats({}))).toBe(Code.Unauthenticated);
  });
});
