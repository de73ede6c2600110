import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openMemoryDb, openTestDb, testBackends } from "../../test/support/db.js";
import {
  encodeUpdate,
  newAttachment,
  registerDevice,
  registerDeviceKeys,
  send,
  stored,
  uniqueUser,
} from "../../test/support/store-fixtures.js";
import { DAY_MS } from "../ports/clock.js";
import { type ChatRecord, type Db, type DeviceAck, type ParticipantChange, participantsOf } from "../ports/db.js";

const text = new TextDecoder();

/** A database of its own for one suite (or one test), and how to throw it away. */
interface Backend {
  name: string;
  open(): Promise<{ db: Db; close(): Promise<void> }>;
}

/**
 * The Db ports' contract: what the features may count on, held against every implementation. The SQL on PGlite and on
 * Postgres (when DATABASE_URL is set) is the real thing; MemoryDb must behave the same for feature unit tests to mean
 * anything. What only SQL has (partition tables, row locks, statement counts) is in sql/sql-db.test.ts.
 */
const backends: Backend[] = [
  ...testBackends().map((backend) => ({ name: `SqlDb on ${backend}`, open: () => openTestDb(backend) })),
  {
    name: "MemoryDb",
    async open() {
      const db = await openMemoryDb();
      return { db, close: () => db.close() };
    },
  },
];

describe.each(backends)("the Db contract: $name", (backend) => {
  let db: Db;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ db, close } = await backend.open());
  });
  afterAll(() => close?.());

  const now = () => new Date();
  /** Each device registered here, and its user: an ack names both, as the device's token does. */
  const users = new Map<string, string>();
  const register = async (userId: string, deviceName: string, on = db) => {
    const deviceKey = await registerDevice(on, userId, deviceName, now());
    users.set(deviceKey, userId);
    return deviceKey;
  };
  const registered = async (userId: string, ...deviceNames: string[]) =>
    Promise.all(deviceNames.map((name) => register(userId, name)));
  const ack = (deviceKey: string, eventIds: readonly bigint[]): DeviceAck => ({ deviceKey, userId: users.get(deviceKey)!, eventIds });
  async function newChat(participantUserIds: string[], name = "chat"): Promise<ChatRecord> {
    const { chat } = await db.createChat(
      { chatId: randomUUID(), name, participantUserIds, createdAt: now(), updateMessageId: randomUUID() },
      encodeUpdate,
    );
    return chat;
  }
  const readAll = (deviceKey: string) => db.readInbox(deviceKey, 0n, 10_000);
  /** The resync cause a stream of the device opening now would get (and clear). */
  const takeResync = async (on: Db, deviceKey: string) => (await on.openInbox(deviceKey, 1)).resync;
  const bodiesOf = async (deviceKey: string) => (await readAll(deviceKey)).map((e) => text.decode(e.body));
  const change = (
    chatId: string,
    actorUserId: string,
    userId: string,
    operation: "add" | "remove",
    maxParticipants = 100,
  ): ParticipantChange => ({ chatId, actorUserId, userId, operation, maxParticipants, at: now(), updateMessageId: randomUUID() });
  const storedParticipants = async (chatId: string) => participantsOf((await db.getChat(chatId))!);

  describe("devices", () => {
    it("registers a device once and returns its key every time", async () => {
      const alice = uniqueUser("alice");
      const key = await registerDevice(db, alice, "phone", now());
      expect(key).toMatch(/^[1-9][0-9]*$/);
      expect(await registerDevice(db, alice, "phone", now())).toBe(key);
      expect(await registerDevice(db, alice, "laptop", now())).not.toBe(key);
      expect(await registerDevice(db, uniqueUser("bob"), "phone", now())).not.toBe(key);
    });

    it("gives the same key to concurrent first registrations", async () => {
      const alice = uniqueUser("alice");
      const keys = await Promise.all(Array.from({ length: 8 }, () => registerDevice(db, alice, "phone", now())));
      expect(new Set(keys).size).toBe(1);
    });

    it("registers a batch of new and known devices, repeated pairs included, and returns their keys in its order", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const alicePhone = await registerDevice(db, alice, "phone", now());
      const batch = [
        { userId: alice, deviceName: "laptop" }, // new
        { userId: alice, deviceName: "phone" }, // known
        { userId: bob, deviceName: "phone" }, // new: the same name as alice's, another user's
        { userId: alice, deviceName: "laptop" }, // new, again in the same batch
        { userId: alice, deviceName: "phone" }, // known, again
      ];
      const keys = await registerDeviceKeys(db, batch, now());
      expect(keys).toHaveLength(5);
      for (const key of keys) expect(key).toMatch(/^[1-9][0-9]*$/);
      const [aliceLaptop, phone, bobPhone] = keys;
      expect(keys).toEqual([aliceLaptop, alicePhone, bobPhone, aliceLaptop, alicePhone]);
      expect(new Set([aliceLaptop, alicePhone, bobPhone]).size).toBe(3);
      expect(phone).toBe(alicePhone);
      // The same keys later, alone or in another batch.
      expect(await registerDevice(db, bob, "phone", now())).toBe(bobPhone);
      expect(await registerDeviceKeys(db, batch.toReversed(), now())).toEqual(keys.toReversed());
    });

    it("answers an empty batch with no keys", async () => {
      expect(await db.registerDevices([], now(), 8)).toEqual([]);
    });

    it("gives concurrent batches that register the same new devices the same keys", async () => {
      const users = Array.from({ length: 4 }, () => uniqueUser("member"));
      const shared = users.flatMap((userId) => ["phone", "laptop", "tablet"].map((deviceName) => ({ userId, deviceName })));
      // Each batch has the shared devices in its own order, and a device of its own.
      const batches = Array.from({ length: 8 }, (_, i) => {
        const rotated = [...shared.slice(i), ...shared.slice(0, i)];
        return [...(i % 2 ? rotated.toReversed() : rotated), { userId: users[0]!, deviceName: `own-${i}` }];
      });
      const results = await Promise.all(batches.map((batch) => registerDeviceKeys(db, batch, now())));
      const keyOf = new Map<string, string>();
      batches.forEach((batch, b) =>
        batch.forEach(({ userId, deviceName }, i) => {
          const id = `${userId}/${deviceName}`;
          const key = results[b]![i]!;
          expect(keyOf.get(id) ?? key).toBe(key);
          keyOf.set(id, key);
        }),
      );
      expect(keyOf.size).toBe(shared.length + batches.length);
      expect(new Set(keyOf.values()).size).toBe(keyOf.size);
    });

    it("has no resync cause for a new device", async () => {
      const [key] = await registered(uniqueUser("alice"), "phone");
      expect(await takeResync(db, key!)).toBeNull();
    });

    it("records at most maxPerUser devices of a user, a batch's new ones in name order, and always finds known ones", async () => {
      const alice = uniqueUser("alice");
      const [phone] = await registered(alice, "phone");
      const batch = ["d", "b", "c", "phone", "a"].map((deviceName) => ({ userId: alice, deviceName }));
      const kinds = (await db.registerDevices(batch, now(), 3)).map((r) => r.kind);
      expect(kinds).toEqual(["too_many_devices", "device", "too_many_devices", "device", "device"]);
      expect((await db.listDevices(alice)).map((d) => d.deviceName)).toEqual(["a", "b", "phone"]);
      // A lower limit refuses new devices only: the ones there are still found.
      const again = await db.registerDevices([{ userId: alice, deviceName: "phone" }, { userId: alice, deviceName: "e" }], now(), 1);
      expect(again).toEqual([{ kind: "device", deviceKey: phone, tokensNotBefore: null }, { kind: "too_many_devices" }]);
    });

    it("removes a device with its inbox and the messages no other device needs, and refuses its older tokens", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const chat = await newChat([alice, bob]);
      const [onlyPhone, both] = [randomUUID(), randomUUID()];
      await db.ackEvents([ack(bobLaptop!, (await readAll(bobLaptop!)).map((e) => e.eventId))]);
      const [first] = await db.storeMessages([send(chat.chatId, alice, alicePhone!, { messageId: onlyPhone })]);
      await db.ackEvents([ack(bobLaptop!, stored(first).fanout.entries.filter((e) => e.deviceKey === bobLaptop).map((e) => e.eventId))]);
      await db.storeMessages([send(chat.chatId, alice, alicePhone!, { messageId: both })]);

      const issued = new Date(Date.now() - 60_000);
      const at = now();
      expect(await db.removeDevice({ userId: bob, deviceName: "phone" }, at)).toEqual({
        deviceKey: bobPhone,
        userId: bob,
        deviceName: "phone",
      });
      expect(await db.removeDevice({ userId: bob, deviceName: "phone" }, at)).toBeNull();
      expect(await readAll(bobPhone!)).toEqual([]);
      expect(await db.pendingFanout(chat.chatId, onlyPhone)).toBeNull(); // only the phone still needed it
      expect((await db.pendingFanout(chat.chatId, both))?.entries.map((e) => e.deviceKey)).toEqual([bobLaptop]);
      expect((await db.listDevices(bob)).map((d) => d.deviceName)).toEqual(["laptop"]);
      expect(await db.existingDevices([bobPhone!, bobLaptop!])).toEqual([bobLaptop]);
      // Sends reach the devices that are left.
      const [later] = await db.storeMessages([send(chat.chatId, alice, alicePhone!)]);
      expect(stored(later).fanout.entries.map((e) => e.deviceKey)).toEqual([bobLaptop]);

      // A token from before the removal does not bring the device back; a newer one makes a new device.
      const phone = { userId: bob, deviceName: "phone" };
      expect(await db.registerDevices([{ ...phone, issuedAt: issued }, phone], now(), 8)).toEqual([
        { kind: "removed", tokensNotBefore: at },
        { kind: "removed", tokensNotBefore: at },
      ]);
      const newer = new Date(at.getTime() + 1000);
      const [older, back] = await db.registerDevices([{ ...phone, issuedAt: issued }, { ...phone, issuedAt: newer }], now(), 8);
      expect(back).toMatchObject({ kind: "device", tokensNotBefore: at });
      expect(older).toEqual(back); // the batch's newest token registers it; the caller checks each token's age
      expect(back!.kind === "device" && back!.deviceKey).not.toBe(bobPhone);
      expect(await takeResync(db, back!.kind === "device" ? back!.deviceKey : "")).toBeNull();
    });

    it("removes devices not seen since a cutoff, which may come back with their tokens and a RETENTION resync", async () => {
      const alice = uniqueUser("alice");
      // Registered long ago, so that the cutoff leaves the other tests' devices alone.
      const longAgo = new Date(Date.UTC(2001, 0, 1));
      const [phone, laptop, tablet] = await registerDeviceKeys(
        db,
        ["phone", "laptop", "tablet"].map((deviceName) => ({ userId: alice, deviceName })),
        longAgo,
      );
      const cutoff = new Date(Date.UTC(2001, 0, 2));
      await db.markDevicesSeen([phone!, tablet!], new Date(Date.UTC(2001, 0, 3)));
      await db.markDevicesSeen([tablet!], longAgo); // never moves back
      const removed: string[] = [];
      for (let batch; (batch = await db.removeDevicesSeenBefore(cutoff, 1)).length > 0; ) {
        removed.push(...batch.map((d) => `${d.userId}/${d.deviceName}`));
      }
      expect(removed).toEqual([`${alice}/laptop`]);
      expect((await db.listDevices(alice)).map((d) => d.deviceName)).toEqual(["phone", "tablet"]);
      const [back] = await db.registerDevices([{ userId: alice, deviceName: "laptop", issuedAt: new Date(0) }], now(), 8);
      expect(back).toMatchObject({ kind: "device", tokensNotBefore: null });
      const key = back!.kind === "device" ? back!.deviceKey : "";
      expect(key).not.toBe(laptop);
      expect(await takeResync(db, key)).toBe("retention");
      // Taken once: a later removal and return of the same device by its user starts clean.
      await db.removeDevice({ userId: alice, deviceName: "laptop" }, now());
      const [again] = await registerDeviceKeys(db, [{ userId: alice, deviceName: "laptop", issuedAt: new Date(Date.now() + 1000) }]);
      expect(await takeResync(db, again!)).toBeNull();
    });
  });

  describe("blocks", () => {
    it("blocks, lists in pages by user id, and unblocks", async () => {
      const [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(uniqueUser);
      const at = new Date(Date.UTC(2030, 0, 1));
      for (const blocked of [dave!, bob!, carol!]) await db.blockUser(alice!, blocked, at);
      await db.blockUser(alice!, bob!, now()); // again: keeps its time
      expect(await db.listBlockedUsers(alice!, null, 2)).toEqual([
        { userId: bob, blockedAt: at },
        { userId: carol, blockedAt: at },
      ]);
      expect(await db.listBlockedUsers(alice!, carol!, 2)).toEqual([{ userId: dave, blockedAt: at }]);
      await db.unblockUser(alice!, carol!);
      await db.unblockUser(alice!, carol!);
      expect((await db.listBlockedUsers(alice!, null, 10)).map((b) => b.userId)).toEqual([bob, dave]);
      expect(await db.listBlockedUsers(bob!, null, 10)).toEqual([]);
    });

    it("names who of a list blocked a user", async () => {
      const [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(uniqueUser);
      await db.blockUser(carol!, alice!, now());
      await db.blockUser(bob!, alice!, now());
      await db.blockUser(alice!, dave!, now()); // the other way: not a blocker of alice
      expect(await db.blockersAmong(alice!, [dave!, carol!, bob!, alice!])).toEqual([bob, carol].sort());
      expect(await db.blockersAmong(dave!, [alice!, bob!])).toEqual([alice]);
      expect(await db.blockersAmong(alice!, [])).toEqual([]);
    });
  });

  describe("chats", () => {
    it("creates a chat and delivers the CREATED update to every device of every participant", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const chatId = randomUUID();
      const createdAt = now();
      const result = await db.createChat(
        { chatId, name: "lunch", participantUserIds: [bob, alice], createdAt, updateMessageId: randomUUID() },
        encodeUpdate,
      );
      const participantUserIds = [alice, bob].sort();
      const receipts = participantUserIds.map((userId) => ({ userId, deliveredSeq: 0n, readSeq: 0n }));
      const chat = { chatId, name: "lunch", createdAt, lastSeq: 0n, receipts };
      expect(result.chat).toEqual(chat);
      expect(text.decode(result.fanout.body)).toBe(text.decode(encodeUpdate(chat)));
      expect(result.fanout.entries.map((e) => e.deviceKey).sort()).toEqual([alicePhone, bobPhone, bobLaptop].sort());
      for (const { deviceKey, eventId } of result.fanout.entries) {
        expect(await readAll(deviceKey)).toEqual([{ eventId, body: result.fanout.body }]);
      }
      expect(await db.getChat(chatId)).toEqual(chat);
    });

    it("returns null for a chat that does not exist", async () => {
      expect(await db.getChat(randomUUID())).toBeNull();
    });

    it("takes chat ids in any case and gives them back in lower case", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const chatId = randomUUID();
      await db.createChat(
        { chatId: chatId.toUpperCase(), name: "c", participantUserIds: [alice, bob], createdAt: now(), updateMessageId: randomUUID() },
        encodeUpdate,
      );
      expect((await db.getChat(chatId.toUpperCase()))?.chatId).toBe(chatId);
      const outcomes = await db.storeMessages([
        send(chatId.toUpperCase(), alice, alicePhone!),
        send(chatId, alice, alicePhone!),
      ]);
      expect(outcomes.map((o) => stored(o).seq)).toEqual([1n, 2n]);
    });

    it("lists a user's chats by chat id, in pages", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      const chats = await Promise.all([newChat([alice, bob]), newChat([alice, carol]), newChat([bob, carol])]);
      const alices = chats.filter((c) => participantsOf(c).includes(alice)).sort((a, b) => (a.chatId < b.chatId ? -1 : 1));
      expect(await db.listChats(alice, null, 10)).toEqual(alices);
      expect(await db.listChats(alice, null, 1)).toEqual([alices[0]]);
      expect(await db.listChats(alice, alices[0]!.chatId, 10)).toEqual([alices[1]]);
      expect(await db.listChats(alice, alices[1]!.chatId, 10)).toEqual([]);
      expect(await db.listChats(uniqueUser("nobody"), null, 10)).toEqual([]);
    });

    it("adds a participant and tells every device of everyone in the chat after the change", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      const [[alicePhone], [bobPhone], [carolPhone]] = await Promise.all([alice, bob, carol].map((u) => registered(u, "phone")));
      const chat = await newChat([alice, bob]);
      const outcome = await db.modifyParticipants(change(chat.chatId, alice, carol, "add"), encodeUpdate);
      expect(outcome.kind).toBe("changed");
      if (outcome.kind !== "changed") return;
      expect(participantsOf(outcome.chat)).toEqual([alice, bob, carol].sort());
      expect(text.decode(outcome.fanout.body)).toBe(text.decode(encodeUpdate(outcome.chat)));
      expect(outcome.fanout.entries.map((e) => e.deviceKey).sort()).toEqual([alicePhone, bobPhone, carolPhone].sort());
      expect(await bodiesOf(carolPhone!)).toEqual([text.decode(outcome.fanout.body)]);
      expect(await storedParticipants(chat.chatId)).toEqual([alice, bob, carol].sort());
    });

    it("removes a participant and tells the removed user's devices too", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      await registered(alice, "phone");
      const [carolPhone, carolLaptop] = await registered(carol, "phone", "laptop");
      const chat = await newChat([alice, bob, carol]);
      const outcome = await db.modifyParticipants(change(chat.chatId, alice, carol, "remove"), encodeUpdate);
      expect(outcome.kind).toBe("changed");
      if (outcome.kind !== "changed") return;
      expect(participantsOf(outcome.chat)).toEqual([alice, bob].sort());
      expect(outcome.fanout.entries.map((e) => e.deviceKey)).toEqual(expect.arrayContaining([carolPhone, carolLaptop]));
      expect(await storedParticipants(chat.chatId)).toEqual([alice, bob].sort());
    });

    it("changes and stores nothing when the participant is already there, or already gone", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      const [alicePhone] = await registered(alice, "phone");
      const chat = await newChat([alice, bob]);
      const inbox = await readAll(alicePhone!);
      const unchanged = { kind: "unchanged", chat };
      expect(await db.modifyParticipants(change(chat.chatId, alice, bob, "add"), encodeUpdate)).toEqual(unchanged);
      expect(await db.modifyParticipants(change(chat.chatId, alice, carol, "remove"), encodeUpdate)).toEqual(unchanged);
      expect(await readAll(alicePhone!)).toEqual(inbox);
    });

    it("refuses a change to a missing chat, by a non-participant, or past the participant limit", async () => {
      const [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(uniqueUser);
      const chat = await newChat([alice!, bob!, carol!]);
      const outcome = (c: ParticipantChange) => db.modifyParticipants(c, encodeUpdate);
      expect(await outcome(change(randomUUID(), alice!, dave!, "add"))).toEqual({ kind: "chat_not_found" });
      expect(await outcome(change(chat.chatId, dave!, dave!, "add"))).toEqual({ kind: "not_participant" });
      expect(await outcome(change(chat.chatId, alice!, dave!, "add", 3))).toEqual({ kind: "too_many_participants" });
      expect(await storedParticipants(chat.chatId)).toEqual(participantsOf(chat));
    });
  });

  describe("messages", () => {
    it("stores a batch: gap-free seqs per chat, an inbox entry for every device but the sending one", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone, aliceLaptop] = await registered(alice, "phone", "laptop");
      const [bobPhone] = await registered(bob, "phone");
      const chat = await newChat([alice, bob]);
      const sends = [send(chat.chatId, alice, alicePhone!), send(chat.chatId, bob, bobPhone!), send(chat.chatId, alice, alicePhone!)];
      const outcomes = (await db.storeMessages(sends)).map(stored);
      expect(outcomes.map((o) => o.seq)).toEqual([1n, 2n, 3n]);
      outcomes.forEach((outcome, i) => {
        expect(outcome.messageId).toBe(sends[i]!.messageId);
        expect(outcome.sentAt).toEqual(sends[i]!.sentAt);
        expect(outcome.fanout.sentAtMs).toBe(sends[i]!.sentAt.getTime());
        expect(text.decode(outcome.fanout.body)).toBe(`message:${sends[i]!.messageId}:${i + 1}`);
      });
      expect(outcomes[0]!.fanout.entries.map((e) => e.deviceKey).sort()).toEqual([aliceLaptop, bobPhone].sort());
      expect(outcomes[1]!.fanout.entries.map((e) => e.deviceKey).sort()).toEqual([alicePhone, aliceLaptop].sort());
      expect((await db.getChat(chat.chatId))!.lastSeq).toBe(3n);

      // Bob's phone holds the chat's creation, then alice's two messages, in seq order.
      expect(await bodiesOf(bobPhone!)).toEqual([
        text.decode(encodeUpdate(chat)),
        `message:${sends[0]!.messageId}:1`,
        `message:${sends[2]!.messageId}:3`,
      ]);
    });

    it("returns the first result for a retried send and stores nothing", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone] = await registered(bob, "phone");
      const chat = await newChat([alice, bob]);
      const first = send(chat.chatId, alice, alicePhone!);
      const [original] = await db.storeMessages([first]);
      const inbox = await readAll(bobPhone!);
      const retry = send(chat.chatId, alice, alicePhone!, { clientMessageId: first.clientMessageId });
      const [again] = await db.storeMessages([retry]);
      expect(again).toEqual({ kind: "duplicate", messageId: first.messageId, seq: 1n, sentAt: first.sentAt });
      expect(original).toMatchObject({ kind: "stored", messageId: first.messageId, seq: 1n });
      expect(await readAll(bobPhone!)).toEqual(inbox);
      expect(await db.pendingFanout(chat.chatId, retry.messageId)).toBeNull();
      expect((await db.getChat(chat.chatId))!.lastSeq).toBe(1n);
    });

    it("treats a key repeated within one batch as a duplicate of its first send", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const chat = await newChat([alice, bob]);
      const first = send(chat.chatId, alice, alicePhone!);
      const outcomes = await db.storeMessages([first, send(chat.chatId, alice, alicePhone!, { clientMessageId: first.clientMessageId })]);
      expect(outcomes[1]).toEqual({ kind: "duplicate", messageId: first.messageId, seq: 1n, sentAt: first.sentAt });
      expect((await db.getChat(chat.chatId))!.lastSeq).toBe(1n);
    });

    it("refuses sends to a missing chat or from a non-participant without affecting the rest of the batch", async () => {
      const [alice, bob, mallory] = ["alice", "bob", "mallory"].map(uniqueUser);
      const [alicePhone] = await registered(alice!, "phone");
      const [malloryPhone] = await registered(mallory!, "phone");
      const chat = await newChat([alice!, bob!]);
      const outcomes = await db.storeMessages([
        send(chat.chatId, alice!, alicePhone!),
        send(chat.chatId, mallory!, malloryPhone!),
        send(randomUUID(), alice!, alicePhone!),
        send(chat.chatId, alice!, alicePhone!),
      ]);
      expect(outcomes.map((o) => o.kind)).toEqual(["stored", "not_participant", "chat_not_found", "stored"]);
      expect(outcomes.filter((o) => o.kind === "stored").map((o) => stored(o).seq)).toEqual([1n, 2n]);
      // A refused send records no key: once mallory is in the chat, the same send is stored.
      const refused = send(chat.chatId, mallory!, malloryPhone!);
      expect((await db.storeMessages([refused]))[0]!.kind).toBe("not_participant");
      await db.modifyParticipants(change(chat.chatId, alice!, mallory!, "add"), encodeUpdate);
      expect((await db.storeMessages([refused]))[0]).toMatchObject({ kind: "stored", seq: 3n });
    });

    it("refuses a send into a chat of two whose other participant blocked the sender, without affecting the rest", async () => {
      const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser);
      const [alicePhone] = await registered(alice!, "phone");
      const [bobPhone] = await registered(bob!, "phone");
      const direct = await newChat([alice!, bob!]);
      const group = await newChat([alice!, bob!, carol!]);
      await db.blockUser(alice!, bob!, now());
      const refused = send(direct.chatId, bob!, bobPhone!);
      const outcomes = await db.storeMessages([
        refused,
        send(direct.chatId, alice!, alicePhone!), // the blocker may still write
        send(group.chatId, bob!, bobPhone!), // groups are not 1:1
      ]);
      expect(outcomes.map((o) => o.kind)).toEqual(["blocked", "stored", "stored"]);
      expect(stored(outcomes[1]).seq).toBe(1n);
      expect(await db.readInbox(alicePhone!, 0n, 10)).toHaveLength(3); // the two chats' creation, bob's group message
      // A refused send records no key: once unblocked, the same send is stored.
      await db.unblockUser(alice!, bob!);
      expect((await db.storeMessages([refused]))[0]).toMatchObject({ kind: "stored", seq: 2n });
    });

    it("stops delivering to a removed participant", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone] = await registered(bob, "phone");
      const chat = await newChat([alice, bob, uniqueUser("carol")]);
      await db.modifyParticipants(change(chat.chatId, bob, bob, "remove"), encodeUpdate);
      const [outcome] = await db.storeMessages([send(chat.chatId, alice, alicePhone!)]);
      expect(stored(outcome).fanout.entries.map((e) => e.deviceKey)).not.toContain(bobPhone);
    });

    it("keeps no message that no device will read, but still gives it its seq and key", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const chat = await newChat([alice, bob]); // bob has no device yet
      const first = send(chat.chatId, alice, alicePhone!);
      const { messageId, fanout } = stored((await db.storeMessages([first]))[0]);
      expect(fanout.entries).toEqual([]);
      expect(await db.pendingFanout(chat.chatId, messageId)).toBeNull();
      const [retry] = await db.storeMessages([send(chat.chatId, alice, alicePhone!, { clientMessageId: first.clientMessageId })]);
      expect(retry).toMatchObject({ kind: "duplicate", messageId, seq: 1n });
    });

    it("keeps seqs gap-free and event ids in seq order under concurrent batches to one chat", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const senders = await registered(alice, "a", "b", "c", "d");
      const [bobPhone] = await registered(bob, "phone");
      const chat = await newChat([alice, bob]);
      const batches = Array.from({ length: 8 }, (_, b) =>
        Array.from({ length: 25 }, () => send(chat.chatId, alice, senders[b % senders.length]!)),
      );
      const outcomes = (await Promise.all(batches.map((batch) => db.storeMessages(batch)))).flat().map(stored);
      expect(outcomes.map((o) => o.seq).sort((a, b) => Number(a - b))).toEqual(Array.from({ length: 200 }, (_, i) => BigInt(i + 1)));
      expect((await db.getChat(chat.chatId))!.lastSeq).toBe(200n);
      const seqsInEventOrder = (await bodiesOf(bobPhone!)).slice(1).map((body) => Number(body.split(":")[2]));
      expect(seqsInEventOrder).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    });

    it("records attachments as sent in the chat, for download permission", async () => {
      const [alice, bob, eve] = ["alice", "bob", "eve"].map(uniqueUser);
      const [alicePhone] = await registered(alice!, "phone");
      const chat = await newChat([alice!, bob!]);
      const { attachment } = await db.createAttachment(newAttachment(alice!));
      await db.storeMessages([send(chat.chatId, alice!, alicePhone!, { attachmentIds: [attachment.attachmentId] })]);
      expect(await db.canDownloadAttachment(attachment.attachmentId, bob!)).toBe(true);
      expect(await db.canDownloadAttachment(attachment.attachmentId, eve!)).toBe(false);
    });

    it("gives a stored message's event and the inbox entries it still has, for a retry to push again", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const chat = await newChat([alice, bob]);
      const { messageId, fanout } = stored((await db.storeMessages([send(chat.chatId, alice, alicePhone!)]))[0]);
      const phoneEntry = fanout.entries.find((e) => e.deviceKey === bobPhone)!;
      expect(await db.pendingFanout(chat.chatId, messageId)).toEqual({ body: fanout.body, entries: fanout.entries });
      await db.ackEvents([ack(bobLaptop!, fanout.entries.filter((e) => e !== phoneEntry).map((e) => e.eventId))]);
      expect(await db.pendingFanout(chat.chatId, messageId)).toEqual({ body: fanout.body, entries: [phoneEntry] });
      expect(await db.pendingFanout(chat.chatId, randomUUID())).toBeNull();
    });
  });

  describe("inbox", () => {
    it("reads the inbox after an event id, oldest first, in pages", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone] = await registered(bob, "phone");
      const chat = await newChat([alice, bob]);
      await db.storeMessages(Array.from({ length: 5 }, () => send(chat.chatId, alice, alicePhone!)));
      const all = await readAll(bobPhone!);
      expect(all).toHaveLength(6);
      const firstPage = await db.readInbox(bobPhone!, 0n, 2);
      expect(firstPage).toEqual(all.slice(0, 2));
      expect(await db.openInbox(bobPhone!, 2)).toEqual({ resync: null, events: firstPage });
      expect(await db.openInbox(bobPhone!, 10)).toEqual({ resync: null, events: all });
      expect(await db.readInbox(bobPhone!, firstPage[1]!.eventId, 10)).toEqual(all.slice(2));
      expect(await db.readInbox(bobPhone!, all[5]!.eventId, 10)).toEqual([]);
    });

    /** Alice's message in a chat with Bob, who has a phone and a laptop; eventOf gives each device's event id. */
    async function messageToBobsTwoDevices() {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const chat = await newChat([alice, bob]);
      const [outcome] = await db.storeMessages([send(chat.chatId, alice, alicePhone!)]);
      const { messageId, fanout } = stored(outcome);
      const eventOf = (deviceKey: string) => fanout.entries.find((e) => e.deviceKey === deviceKey)!.eventId;
      return { chat, bobPhone: bobPhone!, bobLaptop: bobLaptop!, messageId, fanout, eventOf };
    }

    it("deletes acked events of that device only, and the message after its last device acks", async () => {
      const { chat, bobPhone, bobLaptop, messageId, fanout, eventOf } = await messageToBobsTwoDevices();
      const creation = text.decode(encodeUpdate(chat));
      const message = text.decode(fanout.body);

      await db.ackEvents([ack(bobPhone!, [eventOf(bobLaptop!)])]); // not the phone's event
      expect(await bodiesOf(bobLaptop!)).toEqual([creation, message]);
      expect(await bodiesOf(bobPhone!)).toEqual([creation, message]);
      await db.ackEvents([ack(bobPhone!, [eventOf(bobPhone!), 999_999_999n])]);
      expect(await bodiesOf(bobPhone!)).toEqual([creation]);
      expect(await db.pendingFanout(chat.chatId, messageId)).not.toBeNull();
      await db.ackEvents([ack(bobPhone!, [eventOf(bobPhone!)])]); // again: nothing to delete
      await db.ackEvents([ack(bobLaptop!, [eventOf(bobLaptop!)])]);
      expect(await bodiesOf(bobLaptop!)).toEqual([creation]);
      expect(await db.pendingFanout(chat.chatId, messageId)).toBeNull();
      await db.ackEvents([ack(bobLaptop!, [])]);
      expect(await bodiesOf(bobLaptop!)).toEqual([creation]);
    });

    it("acks several devices' events in one call, an event named twice deleted once", async () => {
      const { chat, bobPhone, bobLaptop, messageId, eventOf } = await messageToBobsTwoDevices();

      await db.ackEvents([
        ack(bobPhone!, [eventOf(bobPhone!)]),
        ack(bobLaptop!, [eventOf(bobLaptop!)]),
        ack(bobPhone!, [eventOf(bobPhone!)]),
      ]);
      // The chat's creation, not acked, is all either device has left.
      expect(await bodiesOf(bobPhone!)).toEqual([text.decode(encodeUpdate(chat))]);
      expect(await bodiesOf(bobLaptop!)).toEqual([text.decode(encodeUpdate(chat))]);
      expect(await db.pendingFanout(chat.chatId, messageId)).toBeNull();
    });

    it("acks entries stored days ago and on the next day (a clock ahead) in the same batch as today's, and deletes their messages", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone] = await registered(bob, "phone");
      const chat = await newChat([alice, bob]);
      const daysAgo = new Date(Date.now() - 3 * DAY_MS);
      const tomorrow = new Date(Date.now() + DAY_MS);
      await db.ensurePartitions(daysAgo, 5);
      const sends = [daysAgo, new Date(), tomorrow].map((sentAt) => send(chat.chatId, alice, alicePhone!, { sentAt }));
      const outcomes = (await db.storeMessages(sends)).map(stored);
      const eventIds = outcomes.map(({ fanout }) => fanout.entries.find((e) => e.deviceKey === bobPhone)!.eventId);

      await db.ackEvents([ack(bobPhone!, eventIds)]);
      const left = (await readAll(bobPhone!)).map((e) => e.eventId);
      for (const eventId of eventIds) expect(left).not.toContain(eventId);
      for (const { messageId } of outcomes) expect(await db.pendingFanout(chat.chatId, messageId)).toBeNull();
      expect((await db.getChat(chat.chatId))!.receipts.find((r) => r.userId === bob)!.deliveredSeq).toBe(3n);
    });

    it("deletes the message when its last two devices ack at the same moment", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const chat = await newChat([alice, bob]);
      const outcomes = (await db.storeMessages(Array.from({ length: 20 }, () => send(chat.chatId, alice, alicePhone!)))).map(stored);
      await Promise.all(outcomes.flatMap(({ fanout }) => fanout.entries.map((e) => db.ackEvents([ack(e.deviceKey, [e.eventId])]))));
      for (const { messageId } of outcomes) expect(await db.pendingFanout(chat.chatId, messageId)).toBeNull();
      expect(await readAll(bobPhone!)).toHaveLength(1);
      expect(await readAll(bobLaptop!)).toHaveLength(1);
    });
  });

  describe("receipts", () => {
    const receiptsOf = async (chatId: string) =>
      Object.fromEntries((await db.getChat(chatId))!.receipts.map((r) => [r.userId, [r.deliveredSeq, r.readSeq]]));

    it("moves a sender's receipt to each message sent, and starts an added user at the chat's last seq", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      const [alicePhone] = await registered(alice, "phone");
      const chat = await newChat([alice, bob]);
      expect(await receiptsOf(chat.chatId)).toEqual({ [alice]: [0n, 0n], [bob]: [0n, 0n] });
      await db.storeMessages([send(chat.chatId, alice, alicePhone!), send(chat.chatId, alice, alicePhone!)]);
      expect(await receiptsOf(chat.chatId)).toEqual({ [alice]: [2n, 2n], [bob]: [0n, 0n] });
      const added = await db.modifyParticipants(change(chat.chatId, alice, carol, "add"), encodeUpdate);
      expect(added.kind === "changed" && added.chat.receipts.find((r) => r.userId === carol)).toEqual({
        userId: carol,
        deliveredSeq: 2n,
        readSeq: 2n,
      });
      expect(await receiptsOf(chat.chatId)).toMatchObject({ [carol]: [2n, 2n] });
    });

    it("moves what a user received with their devices' acks, once per user, for those who sent since", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const [carolPhone] = await registered(carol, "phone");
      const chat = await newChat([alice, bob, carol]);
      const sent = (await db.storeMessages([send(chat.chatId, alice, alicePhone!), send(chat.chatId, carol, carolPhone!)]))
        .map(stored);
      const eventOf = (i: number, deviceKey: string) => sent[i]!.fanout.entries.find((e) => e.deviceKey === deviceKey)!.eventId;

      // Bob's phone acks Alice's message: Bob received up to 1, which those who sent since his 0 hear of (Carol's
      // message, not acked yet, is after it: she is told too, as the receipt's users are whoever sent past its old seq).
      const first = await db.ackEvents([ack(bobPhone!, [eventOf(0, bobPhone!)])]);
      expect(first.map((c) => ({ ...c, notifyUserIds: c.notifyUserIds.toSorted() }))).toEqual([
        {
          chatId: chat.chatId,
          receipt: { userId: bob, deliveredSeq: 1n, readSeq: 0n },
          notifyUserIds: [alice, carol].toSorted(),
        },
      ]);
      // Both of Bob's devices ack everything in one batch: one change, for Carol, who alone sent past 1.
      const second = await db.ackEvents([
        ack(bobLaptop!, [eventOf(0, bobLaptop!), eventOf(1, bobLaptop!)]),
        ack(bobPhone!, [eventOf(1, bobPhone!)]),
      ]);
      expect(second).toEqual([
        { chatId: chat.chatId, receipt: { userId: bob, deliveredSeq: 2n, readSeq: 0n }, notifyUserIds: [carol] },
      ]);
      // A chat update acked moves nothing; Alice acking Carol's message tells Carol (Alice's own is below already).
      const creations = await Promise.all([bobPhone!, alicePhone!].map((d) => readAll(d)));
      expect(await db.ackEvents([ack(bobPhone!, [creations[0]![0]!.eventId])])).toEqual([]);
      expect(await db.ackEvents([ack(alicePhone!, [eventOf(1, alicePhone!)])])).toEqual([
        { chatId: chat.chatId, receipt: { userId: alice, deliveredSeq: 2n, readSeq: 1n }, notifyUserIds: [carol] },
      ]);
      expect(await receiptsOf(chat.chatId)).toEqual({ [alice]: [2n, 1n], [bob]: [2n, 0n], [carol]: [2n, 2n] });
    });

    it("moves each chat's receipt to the highest seq acked when one batch spans many chats and devices", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const chats = await Promise.all(Array.from({ length: 30 }, () => newChat([alice, bob])));
      const sent = (await db.storeMessages(chats.flatMap((chat) => [0, 1, 2].map(() => send(chat.chatId, alice, alicePhone!)))))
        .map(stored);
      const eventOf = (chat: number, message: number, deviceKey: string) =>
        sent[chat * 3 + message]!.fanout.entries.find((e) => e.deviceKey === deviceKey)!.eventId;
      // Chat i: Bob's phone acks its first message; his laptop acks message i % 3 (the phone's own ack is higher in
      // the chats where i % 3 is 0). One batch, both devices, every chat.
      const changes = await db.ackEvents([
        ack(bobPhone!, chats.map((_, i) => eventOf(i, 0, bobPhone!))),
        ack(bobLaptop!, chats.map((_, i) => eventOf(i, i % 3, bobLaptop!))),
      ]);
      const expected = chats.map((chat, i) => ({
        chatId: chat.chatId,
        receipt: { userId: bob, deliveredSeq: BigInt((i % 3) + 1), readSeq: 0n },
        notifyUserIds: [alice],
      }));
      const byChat = (a: { chatId: string }, b: { chatId: string }) => a.chatId.localeCompare(b.chatId);
      expect(changes.toSorted(byChat)).toEqual(expected.toSorted(byChat));
      for (const [i, chat] of chats.entries()) {
        expect(await receiptsOf(chat.chatId)).toEqual({ [alice]: [3n, 3n], [bob]: [BigInt((i % 3) + 1), 0n] });
      }
    });

    it("moves what a user read only forward, up to the chat's last seq, and says whom it concerns", async () => {
      const [alice, bob, carol, eve] = ["alice", "bob", "carol", "eve"].map(uniqueUser);
      const [alicePhone] = await registered(alice!, "phone");
      const [carolPhone] = await registered(carol!, "phone");
      const chat = await newChat([alice!, bob!, carol!]);
      await db.storeMessages([
        send(chat.chatId, alice!, alicePhone!),
        send(chat.chatId, alice!, alicePhone!),
        send(chat.chatId, carol!, carolPhone!),
      ]);
      const mark = (userId: string, seq: bigint, chatId = chat.chatId) => ({ chatId, userId, seq });

      const [read] = await db.markRead([mark(bob!, 2n)]);
      // Read implies received; Alice sent what it covers (Carol sent only later: told too, as a sender past the
      // point Bob had read to); Bob's own user, for his other devices.
      expect(read).toEqual({
        kind: "read",
        receipt: { userId: bob, deliveredSeq: 2n, readSeq: 2n },
        lastSeq: 3n,
        change: {
          chatId: chat.chatId,
          receipt: { userId: bob, deliveredSeq: 2n, readSeq: 2n },
          notifyUserIds: expect.arrayContaining([alice, carol, bob]),
        },
      });
      expect((read as { change: { notifyUserIds: string[] } }).change.notifyUserIds).toHaveLength(3);
      const [lower, again, beyond, stranger, missing] = await db.markRead([
        mark(bob!, 1n),
        mark(bob!, 2n),
        mark(bob!, 4n),
        mark(eve!, 1n),
        mark(bob!, 1n, randomUUID()),
      ]);
      const unchanged = { kind: "read", receipt: { userId: bob, deliveredSeq: 2n, readSeq: 2n }, lastSeq: 3n, change: null };
      expect([lower, again]).toEqual([unchanged, unchanged]);
      expect(beyond).toEqual({ kind: "beyond_last_seq", lastSeq: 3n });
      expect(stranger).toEqual({ kind: "not_participant" });
      expect(missing).toEqual({ kind: "chat_not_found" });
      // Past Alice's messages, only Carol's third is new to Bob: she alone is told (and Bob's own devices).
      const [last] = await db.markRead([mark(bob!, 3n)]);
      expect(last).toMatchObject({ change: { notifyUserIds: [carol, bob] } });
      expect(await receiptsOf(chat.chatId)).toEqual({ [alice!]: [2n, 2n], [bob!]: [3n, 3n], [carol!]: [3n, 3n] });
    });

    it("keeps receipts consistent under concurrent sends, acks and read marks in the same chats", async () => {
      const users = Array.from({ length: 4 }, () => uniqueUser("member"));
      const keys = await Promise.all(users.map((u) => registered(u, "phone", "laptop")));
      const chats = await Promise.all([0, 1, 2].map(() => newChat(users)));
      const rounds = await Promise.all(
        Array.from({ length: 6 }, async (_, round) => {
          const sends = chats.map((chat, i) => send(chat.chatId, users[(round + i) % 4]!, keys[(round + i) % 4]![0]!));
          const sent = (await db.storeMessages(sends)).map(stored);
          // Every device acks (in an order of its own) while the readers mark what they have.
          await Promise.all([
            ...sent.flatMap(({ fanout }) =>
              fanout.entries.toReversed().map((e) => db.ackEvents([ack(e.deviceKey, [e.eventId])])),
            ),
            ...sent.map(async ({ seq }, i) => {
              const outcomes = await db.markRead(users.map((userId) => ({ chatId: chats[i]!.chatId, userId, seq })));
              // Never more read than there is, even when a later mark committed first.
              for (const outcome of outcomes) {
                if (outcome.kind !== "read") throw new Error(`mark refused: ${outcome.kind}`);
                expect(outcome.lastSeq).toBeGreaterThanOrEqual(outcome.receipt.readSeq);
              }
            }),
          ]);
          return sent;
        }),
      );
      expect(rounds.flat()).toHaveLength(18);
      for (const chat of chats) {
        const record = (await db.getChat(chat.chatId))!;
        expect(record.lastSeq).toBe(6n);
        for (const receipt of record.receipts) expect([receipt.deliveredSeq, receipt.readSeq]).toEqual([6n, 6n]);
      }
    });
  });

  describe("attachments", () => {
    it("returns the uploader's existing attachment for the same bytes instead of a new one", async () => {
      const alice = uniqueUser("alice");
      const first = newAttachment(alice);
      expect(await db.createAttachment(first)).toEqual({ attachment: first, existing: false });
      const again = { ...newAttachment(alice), sha256: first.sha256, sizeBytes: first.sizeBytes };
      expect(await db.createAttachment(again)).toEqual({ attachment: first, existing: true });
      expect(await db.getAttachment(again.attachmentId)).toBeNull();
      const bobs = { ...newAttachment(uniqueUser("bob")), sha256: first.sha256, sizeBytes: first.sizeBytes };
      expect((await db.createAttachment(bobs)).existing).toBe(false);
    });

    it("records the upload once and lets only the uploader download an unsent attachment", async () => {
      const alice = uniqueUser("alice");
      const attachment = newAttachment(alice);
      await db.createAttachment(attachment);
      const uploadedAt = now();
      await db.markAttachmentUploaded(attachment.attachmentId, uploadedAt);
      await db.markAttachmentUploaded(attachment.attachmentId, new Date(uploadedAt.getTime() + 1000));
      expect(await db.getAttachment(attachment.attachmentId)).toEqual({ ...attachment, uploadedAt });
      expect(await db.canDownloadAttachment(attachment.attachmentId, alice)).toBe(true);
      expect(await db.canDownloadAttachment(attachment.attachmentId, uniqueUser("bob"))).toBe(false);
      expect(await db.canDownloadAttachment(randomUUID(), alice)).toBe(false);
    });

    it("deletes attachments last kept before the cutoff, oldest first, up to the limit", async () => {
      const alice = uniqueUser("alice");
      const old = [0, 1, 2, 3].map((i) => newAttachment(alice, new Date(Date.UTC(2000, 0, 1, i))));
      for (const a of old) await db.createAttachment(a);
      const kept = new Date(Date.UTC(2000, 0, 3));
      await db.markAttachmentKept(old[3]!.attachmentId, kept);
      await db.markAttachmentKept(old[3]!.attachmentId, new Date(Date.UTC(2000, 0, 2))); // never moves back
      const cutoff = new Date(Date.UTC(2000, 0, 2));
      expect(await db.deleteAttachmentsKeptBefore(cutoff, 2)).toEqual(old.slice(0, 2));
      expect(await db.deleteAttachmentsKeptBefore(cutoff, 10)).toEqual([old[2]]);
      expect(await db.getAttachment(old[0]!.attachmentId)).toBeNull();
      expect(await db.getAttachment(old[3]!.attachmentId)).toEqual({ ...old[3], keptAt: kept });
      expect(await db.deleteAttachmentsKeptBefore(cutoff, 10)).toEqual([]);
    });
  });

  describe("retention", () => {
    // Each test drops or trims across the whole database, so it gets one of its own.
    const withOwnDb = async (fn: (own: Db) => Promise<void>) => {
      const own = await backend.open();
      try {
        await fn(own.db);
      } finally {
        await own.close();
      }
    };

    it("creates the partitions of the coming days once", async () => {
      await withOwnDb(async (db) => {
        const from = new Date(Date.UTC(2031, 4, 30, 13));
        expect((await db.ensurePartitions(from, 2)).sort()).toEqual(
          ["20310530", "20310531", "20310601"].flatMap((d) => [`inbox_p${d}`, `messages_p${d}`]).sort(),
        );
        expect(await db.ensurePartitions(from, 2)).toEqual([]);
      });
    });

    it("drops whole days past retention, and tells the devices that had events there to resync, once", async () => {
      await withOwnDb(async (db) => {
        const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser);
        const alicePhone = await register(alice!, "phone", db);
        const bobPhone = await registerDevice(db, bob!, "phone", now());
        const { chat } = await db.createChat(
          { chatId: randomUUID(), name: "old", participantUserIds: [alice!, bob!], createdAt: now(), updateMessageId: randomUUID() },
          encodeUpdate,
        );
        const outcomes = (await db.storeMessages([send(chat.chatId, alice!, alicePhone), send(chat.chatId, alice!, alicePhone)])).map(stored);
        await db.ackEvents([ack(alicePhone, (await db.readInbox(alicePhone, 0n, 10)).map((e) => e.eventId))]);
        const carolPhone = await registerDevice(db, carol!, "phone", now());

        const later = new Date(Date.now() + 31 * DAY_MS);
        await db.ensurePartitions(later, 2);
        const dropped = await db.dropPartitionsBefore(new Date(later.getTime() - 30 * DAY_MS));
        const today = now().toISOString().slice(0, 10).replace(/-/g, "");
        expect(dropped).toEqual(expect.arrayContaining([`messages_p${today}`, `inbox_p${today}`]));
        expect(dropped.every((name) => name.slice(-8) <= today)).toBe(true);
        expect(await db.readInbox(bobPhone, 0n, 10)).toEqual([]);
        for (const { messageId } of outcomes) expect(await db.pendingFanout(chat.chatId, messageId)).toBeNull();

        // Two connects at once: one of them tells the device.
        expect((await Promise.all([takeResync(db, bobPhone), takeResync(db, bobPhone)])).sort()).toEqual([null, "retention"]);
        expect(await takeResync(db, bobPhone)).toBeNull();
        expect(await takeResync(db, alicePhone)).toBeNull(); // it had acked everything
        expect(await takeResync(db, carolPhone)).toBeNull();
        expect(await db.dropPartitionsBefore(new Date(later.getTime() - 30 * DAY_MS))).toEqual([]);

        // The chat goes on in the new days' partitions.
        const [outcome] = await db.storeMessages([send(chat.chatId, alice!, alicePhone, { sentAt: later })]);
        expect(stored(outcome).seq).toBe(3n);
        expect(await db.readInbox(bobPhone, 0n, 10)).toHaveLength(1);
      });
    });

    it("refuses to store a message for a day whose partition does not exist, and stores nothing of its batch", async () => {
      await withOwnDb(async (db) => {
        const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
        const alicePhone = await registerDevice(db, alice, "phone", now());
        const bobPhone = await registerDevice(db, bob, "phone", now());
        const { chat } = await db.createChat(
          { chatId: randomUUID(), name: "c", participantUserIds: [alice, bob], createdAt: now(), updateMessageId: randomUUID() },
          encodeUpdate,
        );
        const farAhead = new Date(Date.now() + 100 * DAY_MS);
        await expect(
          db.storeMessages([send(chat.chatId, alice, alicePhone), send(chat.chatId, alice, alicePhone, { sentAt: farAhead })]),
        ).rejects.toThrow();
        expect((await db.getChat(chat.chatId))!.lastSeq).toBe(0n);
        expect(await db.readInbox(bobPhone, 0n, 10)).toHaveLength(1); // the chat's creation only
      });
    });

    it("trims the oldest events of inboxes over the limit, and their messages once no inbox holds them", async () => {
      await withOwnDb(async (db) => {
        const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
        const alicePhone = await registerDevice(db, alice, "phone", now());
        const [bobPhone, bobLaptop] = [await registerDevice(db, bob, "phone", now()), await register(bob, "laptop", db)];
        const { chat } = await db.createChat(
          { chatId: randomUUID(), name: "busy", participantUserIds: [alice, bob], createdAt: now(), updateMessageId: randomUUID() },
          encodeUpdate,
        );
        const outcomes = (await db.storeMessages(Array.from({ length: 4 }, () => send(chat.chatId, alice, alicePhone)))).map(stored);
        // The laptop has read everything but the last message, so it stays under the limit.
        await db.ackEvents([ack(bobLaptop, (await db.readInbox(bobLaptop, 0n, 4)).map((e) => e.eventId))]);

        expect(await db.trimInboxes(3, [alicePhone, bobLaptop])).toBe(0); // the phone is over the limit, but not asked for
        expect(await db.trimInboxes(3)).toBe(1); // the phone: 5 events (creation and 4 messages)
        // The phone's next stream is told to resync, with what is left, in the same read.
        const opened = await db.openInbox(bobPhone, 10);
        expect(opened.resync).toBe("inbox_overflow");
        expect(opened.events.map((e) => text.decode(e.body))).toEqual(outcomes.slice(1).map((o) => text.decode(o.fanout.body)));
        expect(await takeResync(db, bobPhone)).toBeNull();
        expect(await takeResync(db, bobLaptop)).toBeNull();
        // The first message had only the phone's entry left; the second still has it.
        expect(await db.pendingFanout(chat.chatId, outcomes[0]!.messageId)).toBeNull();
        expect((await db.pendingFanout(chat.chatId, outcomes[1]!.messageId))?.entries.map((e) => e.deviceKey)).toEqual([bobPhone]);
        expect(await db.trimInboxes(3)).toBe(0);
      });
    });

    it("forgets idempotency keys sent before the cutoff", async () => {
      await withOwnDb(async (db) => {
        const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
        const alicePhone = await registerDevice(db, alice, "phone", now());
        const { chat } = await db.createChat(
          { chatId: randomUUID(), name: "c", participantUserIds: [alice, bob], createdAt: now(), updateMessageId: randomUUID() },
          encodeUpdate,
        );
        const first = send(chat.chatId, alice, alicePhone, { sentAt: new Date(Date.now() - 60_000) });
        await db.storeMessages([first, send(chat.chatId, alice, alicePhone)]);
        expect(await db.forgetSendsBefore(new Date(Date.now() - 30_000))).toBe(1);
        const [retry] = await db.storeMessages([send(chat.chatId, alice, alicePhone, { clientMessageId: first.clientMessageId })]);
        expect(retry).toMatchObject({ kind: "stored", seq: 3n });
      });
    });
  });
});
