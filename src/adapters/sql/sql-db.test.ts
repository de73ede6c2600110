import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Backend, openTestDb, type TestDb, testBackends } from "../../../test/support/db.js";
import type { AttachmentRecord, ChatRecord, ParticipantChange, PendingSend, SendOutcome } from "../../ports/db.js";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";
import { SqlDb } from "./sql-db.js";

const DAY_MS = 24 * 60 * 60 * 1000;
const utf8 = new TextEncoder();
const text = new TextDecoder();

/** A user id no other test uses (tests of a file share one database). */
const uniqueUser = (name: string) => `${name}-${randomBytes(4).toString("hex")}`;

/** The update body: enough of the chat to check that it is the chat after the change. */
const encodeUpdate = (chat: ChatRecord) =>
  utf8.encode(`update:${chat.chatId}:${chat.participantUserIds.join(",")}`);

/** The message body: says which message and seq it was encoded for. */
const messageBody = (messageId: string, seq: bigint) => utf8.encode(`message:${messageId}:${seq}`);

function send(chatId: string, senderUserId: string, senderDeviceKey: string, overrides: Partial<PendingSend> = {}): PendingSend {
  const messageId = overrides.messageId ?? randomUUID();
  return {
    chatId,
    messageId,
    senderUserId,
    senderDeviceKey,
    clientMessageId: randomUUID(),
    sentAt: new Date(),
    attachmentIds: [],
    encode: (seq) => messageBody(messageId, seq),
    ...overrides,
  };
}

function stored(outcome: SendOutcome | undefined) {
  if (outcome?.kind !== "stored") throw new Error(`expected a stored send, got ${outcome?.kind}`);
  return outcome;
}

/** Counts the statements a SqlDb sends, to check that batches stay set-based. */
function countingDriver(driver: SqlDriver): { driver: SqlDriver; statements: () => number } {
  let statements = 0;
  const counted = (db: SqlQuery): SqlQuery["query"] => (sql, params) => {
    statements++;
    return db.query(sql, params);
  };
  return {
    driver: { ...driver, query: counted(driver), transaction: (fn) => driver.transaction((tx) => fn({ query: counted(tx) })) },
    statements: () => statements,
  };
}

describe.each(testBackends())("SqlDb on %s", (backend: Backend) => {
  let testDb: TestDb;
  let db: SqlDb;
  beforeAll(async () => {
    testDb = await openTestDb(backend);
    db = testDb.db;
  });
  afterAll(() => testDb?.close());

  const now = () => new Date();
  const registered = async (userId: string, ...deviceNames: string[]) =>
    Promise.all(deviceNames.map((name) => db.registerDevice(userId, name, now())));
  async function newChat(participantUserIds: string[], name = "chat"): Promise<ChatRecord> {
    const { chat } = await db.createChat(
      { chatId: randomUUID(), name, participantUserIds, createdAt: now(), updateMessageId: randomUUID() },
      encodeUpdate,
    );
    return chat;
  }
  const rowsOfMessage = async (messageId: string) =>
    (
      await testDb.driver.query<{ n: number }>("SELECT count(*)::int AS n FROM messages WHERE message_id = $1::uuid", [
        messageId,
      ])
    )[0]!.n;
  const readAll = (deviceKey: string) => db.readInbox(deviceKey, 0n, 10_000);
  const change = (
    chatId: string,
    actorUserId: string,
    userId: string,
    operation: "add" | "remove",
    maxParticipants = 100,
  ): ParticipantChange => ({ chatId, actorUserId, userId, operation, maxParticipants, at: now(), updateMessageId: randomUUID() });

  describe("devices", () => {
    it("registers a device once and returns its key every time", async () => {
      const alice = uniqueUser("alice");
      const key = await db.registerDevice(alice, "phone", now());
      expect(key).toMatch(/^[1-9][0-9]*$/);
      expect(await db.registerDevice(alice, "phone", now())).toBe(key);
      expect(await db.registerDevice(alice, "laptop", now())).not.toBe(key);
      expect(await db.registerDevice(uniqueUser("bob"), "phone", now())).not.toBe(key);
    });

    it("gives the same key to concurrent first registrations", async () => {
      const alice = uniqueUser("alice");
      const keys = await Promise.all(Array.from({ length: 8 }, () => db.registerDevice(alice, "phone", now())));
      expect(new Set(keys).size).toBe(1);
    });

    it("has no resync cause for a new device", async () => {
      const [key] = await registered(uniqueUser("alice"), "phone");
      expect(await db.takeResync(key!)).toBeNull();
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
      const chat = { chatId, name: "lunch", participantUserIds: [alice, bob].sort(), createdAt, lastSeq: 0n };
      expect(result.chat).toEqual(chat);
      expect(text.decode(result.body)).toBe(text.decode(encodeUpdate(chat)));
      expect(result.deliveries.map((d) => d.deviceKey).sort()).toEqual([alicePhone, bobPhone, bobLaptop].sort());
      for (const { deviceKey, eventId } of result.deliveries) {
        expect(await readAll(deviceKey)).toEqual([{ eventId, body: result.body }]);
      }
      expect(await db.getChat(chatId)).toEqual(chat);
    });

    it("returns null for a chat that does not exist", async () => {
      expect(await db.getChat(randomUUID())).toBeNull();
    });

    it("lists a user's chats by chat id, in pages", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      const chats = await Promise.all([newChat([alice, bob]), newChat([alice, carol]), newChat([bob, carol])]);
      const alices = chats.filter((c) => c.participantUserIds.includes(alice)).sort((a, b) => (a.chatId < b.chatId ? -1 : 1));
      expect(await db.listChats(alice, null, 10)).toEqual(alices);
      expect(await db.listChats(alice, null, 1)).toEqual([alices[0]]);
      expect(await db.listChats(alice, alices[0]!.chatId, 10)).toEqual([alices[1]]);
      expect(await db.listChats(alice, alices[1]!.chatId, 10)).toEqual([]);
      expect(await db.listChats(uniqueUser("nobody"), null, 10)).toEqual([]);
    });

    it("says whether a user takes part in a chat", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const chat = await newChat([alice, bob]);
      expect(await db.isParticipant(chat.chatId, alice)).toBe(true);
      expect(await db.isParticipant(chat.chatId, uniqueUser("carol"))).toBe(false);
      expect(await db.isParticipant(randomUUID(), alice)).toBe(false);
    });

    it("adds a participant and tells every device of everyone in the chat after the change", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      const [[alicePhone], [bobPhone], [carolPhone]] = await Promise.all([alice, bob, carol].map((u) => registered(u, "phone")));
      const chat = await newChat([alice, bob]);
      const outcome = await db.modifyParticipants(change(chat.chatId, alice, carol, "add"), encodeUpdate);
      expect(outcome.kind).toBe("changed");
      if (outcome.kind !== "changed") return;
      expect(outcome.chat.participantUserIds).toEqual([alice, bob, carol].sort());
      expect(text.decode(outcome.body)).toBe(text.decode(encodeUpdate(outcome.chat)));
      expect(outcome.deliveries.map((d) => d.deviceKey).sort()).toEqual([alicePhone, bobPhone, carolPhone].sort());
      expect(await db.isParticipant(chat.chatId, carol)).toBe(true);
      expect((await db.getChat(chat.chatId))!.participantUserIds).toEqual([alice, bob, carol].sort());
    });

    it("removes a participant and tells the removed user's devices too", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      await registered(alice, "phone");
      const [carolPhone, carolLaptop] = await registered(carol, "phone", "laptop");
      const chat = await newChat([alice, bob, carol]);
      const outcome = await db.modifyParticipants(change(chat.chatId, alice, carol, "remove"), encodeUpdate);
      expect(outcome.kind).toBe("changed");
      if (outcome.kind !== "changed") return;
      expect(outcome.chat.participantUserIds).toEqual([alice, bob].sort());
      expect(outcome.deliveries.map((d) => d.deviceKey)).toEqual(expect.arrayContaining([carolPhone, carolLaptop]));
      expect(await db.isParticipant(chat.chatId, carol)).toBe(false);
    });

    it("changes and stores nothing when the participant is already there, or already gone", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      const [alicePhone] = await registered(alice, "phone");
      const chat = await newChat([alice, bob]);
      const depth = await db.inboxDepth(alicePhone!);
      const unchanged = { kind: "unchanged", chat };
      expect(await db.modifyParticipants(change(chat.chatId, alice, bob, "add"), encodeUpdate)).toEqual(unchanged);
      expect(await db.modifyParticipants(change(chat.chatId, alice, carol, "remove"), encodeUpdate)).toEqual(unchanged);
      expect(await db.inboxDepth(alicePhone!)).toBe(depth);
    });

    it("refuses a change to a missing chat, by a non-participant, or past the participant limit", async () => {
      const [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(uniqueUser);
      const chat = await newChat([alice!, bob!, carol!]);
      const outcome = (c: ParticipantChange) => db.modifyParticipants(c, encodeUpdate);
      expect(await outcome(change(randomUUID(), alice!, dave!, "add"))).toEqual({ kind: "chat_not_found" });
      expect(await outcome(change(chat.chatId, dave!, dave!, "add"))).toEqual({ kind: "not_participant" });
      expect(await outcome(change(chat.chatId, alice!, dave!, "add", 3))).toEqual({ kind: "too_many_participants" });
      expect(await db.isParticipant(chat.chatId, dave!)).toBe(false);
    });
  });

  describe("messages", () => {
    it("stores a batch: gap-free seqs per chat, an inbox row for every device but the sending one", async () => {
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
        expect(text.decode(outcome.body)).toBe(`message:${sends[i]!.messageId}:${i + 1}`);
      });
      expect(outcomes[0]!.deliveries.map((d) => d.deviceKey).sort()).toEqual([aliceLaptop, bobPhone].sort());
      expect(outcomes[1]!.deliveries.map((d) => d.deviceKey).sort()).toEqual([alicePhone, aliceLaptop].sort());
      expect((await db.getChat(chat.chatId))!.lastSeq).toBe(3n);

      // Bob's phone holds the chat's creation, then alice's two messages, in seq order.
      const inbox = await readAll(bobPhone!);
      expect(inbox.map((e) => text.decode(e.body))).toEqual([
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
      const depth = await db.inboxDepth(bobPhone!);
      const retry = send(chat.chatId, alice, alicePhone!, { clientMessageId: first.clientMessageId });
      const [again] = await db.storeMessages([retry]);
      expect(again).toEqual({ kind: "duplicate", messageId: first.messageId, seq: 1n, sentAt: first.sentAt });
      expect(original).toMatchObject({ kind: "stored", messageId: first.messageId, seq: 1n });
      expect(await db.inboxDepth(bobPhone!)).toBe(depth);
      expect(await rowsOfMessage(retry.messageId)).toBe(0);
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

    it("stops delivering to a removed participant", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone] = await registered(bob, "phone");
      const chat = await newChat([alice, bob, uniqueUser("carol")]);
      await db.modifyParticipants(change(chat.chatId, bob, bob, "remove"), encodeUpdate);
      const [outcome] = await db.storeMessages([send(chat.chatId, alice, alicePhone!)]);
      expect(stored(outcome).deliveries.map((d) => d.deviceKey)).not.toContain(bobPhone);
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
      const seqsInEventOrder = (await readAll(bobPhone!)).slice(1).map((e) => Number(text.decode(e.body).split(":")[2]));
      expect(seqsInEventOrder).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    });

    it("does not deadlock batches that touch the same chats in different orders, or participant changes", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [x, y] = [await newChat([alice, bob]), await newChat([alice, bob])];
      const work = Array.from({ length: 10 }, (_, i) => [
        db.storeMessages([send(x.chatId, alice, alicePhone!), send(y.chatId, alice, alicePhone!)]),
        db.storeMessages([send(y.chatId, alice, alicePhone!), send(x.chatId, alice, alicePhone!)]),
        db.modifyParticipants(change(i % 2 ? x.chatId : y.chatId, alice, uniqueUser("guest"), "add"), encodeUpdate),
      ]);
      await Promise.all(work.flat());
      expect((await db.getChat(x.chatId))!.lastSeq).toBe(20n);
      expect((await db.getChat(y.chatId))!.lastSeq).toBe(20n);
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

    it("stores a batch of 256 sends in one transaction of three statements", async () => {
      const users = Array.from({ length: 5 }, () => uniqueUser("member"));
      const devices = await Promise.all(users.map((u) => registered(u, "phone", "laptop")));
      const chats = await Promise.all(Array.from({ length: 16 }, () => newChat(users)));
      const batch = Array.from({ length: 256 }, (_, i) => send(chats[i % 16]!.chatId, users[i % 5]!, devices[i % 5]![0]!));
      const counting = countingDriver(testDb.driver);
      const started = performance.now();
      const outcomes = (await new SqlDb(counting.driver).storeMessages(batch)).map(stored);
      const ms = performance.now() - started;
      expect(counting.statements()).toBe(3);
      expect(outcomes.every((o) => o.deliveries.length === 9)).toBe(true);
      console.info(`${backend}: 256 sends, 2304 inbox rows in ${ms.toFixed(0)} ms`);
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
      expect(await db.inboxDepth(bobPhone!)).toBe(6);
      const firstPage = await db.readInbox(bobPhone!, 0n, 2);
      expect(firstPage).toEqual(all.slice(0, 2));
      expect(await db.readInbox(bobPhone!, firstPage[1]!.eventId, 10)).toEqual(all.slice(2));
      expect(await db.readInbox(bobPhone!, all[5]!.eventId, 10)).toEqual([]);
    });

    it("deletes acked events of that device only, and the message after its last device acks", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const chat = await newChat([alice, bob]);
      const [outcome] = await db.storeMessages([send(chat.chatId, alice, alicePhone!)]);
      const { messageId, deliveries } = stored(outcome);
      const eventOf = (deviceKey: string) => deliveries.find((d) => d.deviceKey === deviceKey)!.eventId;

      expect(await db.ackEvents([{ deviceKey: bobPhone!, eventIds: [eventOf(bobLaptop!)] }])).toEqual([0]); // not the phone's event
      expect(await db.inboxDepth(bobLaptop!)).toBe(2);
      expect(await db.ackEvents([{ deviceKey: bobPhone!, eventIds: [eventOf(bobPhone!), 999_999_999n] }])).toEqual([1]);
      expect(await rowsOfMessage(messageId)).toBe(1);
      expect(await db.ackEvents([{ deviceKey: bobPhone!, eventIds: [eventOf(bobPhone!)] }])).toEqual([0]);
      expect(await db.ackEvents([{ deviceKey: bobLaptop!, eventIds: [eventOf(bobLaptop!)] }])).toEqual([1]);
      expect(await rowsOfMessage(messageId)).toBe(0);
      expect(await db.ackEvents([{ deviceKey: bobLaptop!, eventIds: [] }])).toEqual([0]);
    });

    it("acks several devices' events in one call, each row counted for the first ack that names it", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const chat = await newChat([alice, bob]);
      const [outcome] = await db.storeMessages([send(chat.chatId, alice, alicePhone!)]);
      const { messageId, deliveries } = stored(outcome);
      const eventOf = (deviceKey: string) => deliveries.find((d) => d.deviceKey === deviceKey)!.eventId;

      const acks = [
        { deviceKey: bobPhone!, eventIds: [eventOf(bobPhone!)] },
        { deviceKey: bobLaptop!, eventIds: [eventOf(bobLaptop!)] },
        { deviceKey: bobPhone!, eventIds: [eventOf(bobPhone!)] },
      ];
      expect(await db.ackEvents(acks)).toEqual([1, 1, 0]);
      expect(await db.inboxDepth(bobPhone!)).toBe(1); // the chat's creation, not acked
      expect(await rowsOfMessage(messageId)).toBe(0);
    });

    it("deletes the message when its last two devices ack at the same moment", async () => {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const [alicePhone] = await registered(alice, "phone");
      const [bobPhone, bobLaptop] = await registered(bob, "phone", "laptop");
      const chat = await newChat([alice, bob]);
      const outcomes = (await db.storeMessages(Array.from({ length: 20 }, () => send(chat.chatId, alice, alicePhone!)))).map(stored);
      await Promise.all(outcomes.flatMap(({ deliveries }) => deliveries.map((d) => db.ackEvents([{ deviceKey: d.deviceKey, eventIds: [d.eventId] }]))));
      for (const { messageId } of outcomes) expect(await rowsOfMessage(messageId)).toBe(0);
      expect(await db.inboxDepth(bobPhone!)).toBe(1);
      expect(await db.inboxDepth(bobLaptop!)).toBe(1);
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
    const withOwnDb = async (fn: (own: TestDb) => Promise<void>) => {
      const own = await openTestDb(backend);
      try {
        await fn(own);
      } finally {
        await own.close();
      }
    };

    it("creates the partitions of the coming days once, also when two servers do it at the same time", async () => {
      await withOwnDb(async ({ db, driver }) => {
        const from = new Date(Date.UTC(2031, 4, 30, 13));
        const created = await Promise.all([db.ensurePartitions(from, 2), new SqlDb(driver).ensurePartitions(from, 2)]);
        expect(created.flat().sort()).toEqual(
          ["20310530", "20310531", "20310601"].flatMap((d) => [`inbox_p${d}`, `messages_p${d}`]).sort(),
        );
        expect(await db.ensurePartitions(from, 2)).toEqual([]);
      });
    });

    it("drops whole days past retention, and tells the devices that had events there to resync, once", async () => {
      await withOwnDb(async ({ db, driver }) => {
        const [alice, bob, carol] = ["alice", "bob", "carol"].map(uniqueUser);
        const [alicePhone] = await Promise.all([db.registerDevice(alice!, "phone", now())]);
        const bobPhone = await db.registerDevice(bob!, "phone", now());
        const { chat } = await db.createChat(
          { chatId: randomUUID(), name: "old", participantUserIds: [alice!, bob!], createdAt: now(), updateMessageId: randomUUID() },
          encodeUpdate,
        );
        await db.storeMessages([send(chat.chatId, alice!, alicePhone), send(chat.chatId, alice!, alicePhone)]);
        await db.ackEvents([{ deviceKey: alicePhone, eventIds: (await db.readInbox(alicePhone, 0n, 10)).map((e) => e.eventId) }]);
        const carolPhone = await db.registerDevice(carol!, "phone", now());

        const later = new Date(Date.now() + 31 * DAY_MS);
        await db.ensurePartitions(later, 2);
        const dropped = await db.dropPartitionsBefore(new Date(later.getTime() - 30 * DAY_MS));
        const today = now().toISOString().slice(0, 10).replace(/-/g, "");
        expect(dropped).toEqual(expect.arrayContaining([`messages_p${today}`, `inbox_p${today}`]));
        expect(dropped.every((name) => name.slice(-8) <= today)).toBe(true);
        const count = async (table: string) => (await driver.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`))[0]!.n;
        expect(await count("messages")).toBe(0);
        expect(await count("inbox")).toBe(0);

        // Two connects at once: one of them tells the device.
        expect((await Promise.all([db.takeResync(bobPhone), db.takeResync(bobPhone)])).sort()).toEqual([null, "retention"]);
        expect(await db.takeResync(bobPhone)).toBeNull();
        expect(await db.takeResync(alicePhone)).toBeNull(); // it had acked everything
        expect(await db.takeResync(carolPhone)).toBeNull();
        expect(await db.dropPartitionsBefore(new Date(later.getTime() - 30 * DAY_MS))).toEqual([]);

        // The chat goes on in the new days' partitions.
        const [outcome] = await db.storeMessages([send(chat.chatId, alice!, alicePhone, { sentAt: later })]);
        expect(stored(outcome).seq).toBe(3n);
        expect(await db.inboxDepth(bobPhone)).toBe(1);
      });
    });

    it("trims the oldest events of inboxes over the limit, and their messages once no inbox holds them", async () => {
      await withOwnDb(async ({ db, driver }) => {
        const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
        const alicePhone = await db.registerDevice(alice, "phone", now());
        const [bobPhone, bobLaptop] = [await db.registerDevice(bob, "phone", now()), await db.registerDevice(bob, "laptop", now())];
        const { chat } = await db.createChat(
          { chatId: randomUUID(), name: "busy", participantUserIds: [alice, bob], createdAt: now(), updateMessageId: randomUUID() },
          encodeUpdate,
        );
        const outcomes = (await db.storeMessages(Array.from({ length: 4 }, () => send(chat.chatId, alice, alicePhone)))).map(stored);
        // The laptop has read everything but the last message, so it stays under the limit.
        await db.ackEvents([{ deviceKey: bobLaptop, eventIds: (await db.readInbox(bobLaptop, 0n, 4)).map((e) => e.eventId) }]);

        expect(await db.trimInboxes(3)).toBe(1); // the phone: 5 events (creation and 4 messages)
        expect((await db.readInbox(bobPhone, 0n, 10)).map((e) => text.decode(e.body))).toEqual(
          outcomes.slice(1).map((o) => text.decode(o.body)),
        );
        expect(await db.takeResync(bobPhone)).toBe("inbox_overflow");
        expect(await db.takeResync(bobLaptop)).toBeNull();
        // The first message had only the phone's row left; the chat update still has alice's.
        expect(await rowsIn(driver, outcomes[0]!.messageId)).toBe(0);
        expect(await rowsIn(driver, outcomes[1]!.messageId)).toBe(1);
        expect(await db.trimInboxes(3)).toBe(0);
      });
    });

    it("forgets idempotency keys sent before the cutoff", async () => {
      await withOwnDb(async ({ db }) => {
        const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
        const alicePhone = await db.registerDevice(alice, "phone", now());
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

async function rowsIn(driver: SqlDriver, messageId: string): Promise<number> {
  const [row] = await driver.query<{ n: number }>("SELECT count(*)::int AS n FROM messages WHERE message_id = $1::uuid", [messageId]);
  return row!.n;
}

function newAttachment(uploaderUserId: string, createdAt = new Date()): AttachmentRecord {
  const attachmentId = randomUUID();
  return {
    attachmentId,
    uploaderUserId,
    sha256: new Uint8Array(randomBytes(32)),
    sizeBytes: 5_000_000_000n,
    contentType: "image/png",
    fileName: "cat.png",
    objectKey: `attachments/${attachmentId}`,
    createdAt,
    uploadedAt: null,
    keptAt: createdAt,
  };
}
