import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Backend, openTestDb, type TestDb, testBackends } from "../../test/support/db.js";
import { encodeUpdate, registerDevice, send, uniqueUser } from "../../test/support/store-fixtures.js";
import { Refusal } from "../errors.js";
import type { DeviceAck, DeviceName, PendingSend } from "../ports/db.js";
import { GroupCommitter } from "./group-commit.js";

/**
 * Batches written to a real database with one item in them that the database refuses: values no request can carry
 * past the API's rules, handed to the stores directly, so that the isolation is shown apart from that validation.
 */
describe.each(testBackends())("a batch with an item the database refuses, on %s", (backend: Backend) => {
  let testDb: TestDb;
  beforeAll(async () => {
    testDb = await openTestDb(backend);
  });
  afterAll(() => testDb?.close());

  /** A chat of Alice and the readers, each with a phone. */
  async function chatWith(readerCount: number) {
    const users = [uniqueUser("alice"), ...Array.from({ length: readerCount }, (_, i) => uniqueUser(`reader${i}`))];
    const keys = await Promise.all(users.map((user) => registerDevice(testDb.db, user, "phone")));
    const createdAt = new Date();
    const { chat } = await testDb.db.createChat(
      { chatId: randomUUID(), name: "chat", participantUserIds: users, createdAt, updateMessageId: randomUUID() },
      encodeUpdate,
    );
    return { chatId: chat.chatId, alice: users[0]!, aliceKey: keys[0]!, readers: users.slice(1), readerKeys: keys.slice(1) };
  }

  /**
   * A committer over one of the stores' batch writes, as the features wire them, that records each batch's size. With
   * one batch in flight, the first item is written alone and the items submitted with it queue and share the next.
   */
  function committerOver<Item, Result>(writeBatch: (items: Item[]) => Promise<Result[]>) {
    const sizes: number[] = [];
    const committer = new GroupCommitter(writeBatch, 64, 1, { onBatch: (size) => sizes.push(size) });
    return { committer, sizes };
  }

  /** Settles every promise, as "ok" or the rejection's Refusal kind or SQLSTATE. */
  const outcomesOf = (calls: Promise<unknown>[]) =>
    Promise.all(
      calls.map((call) =>
        call.then(
          () => "ok",
          (error: unknown) => (error instanceof Refusal ? error.kind : (error as { code?: string }).code),
        ),
      ),
    );

  it("stores every send of the batch but the refused ones, in order", async () => {
    const { chatId, alice, aliceKey, readerKeys } = await chatWith(1);
    const { committer, sizes } = committerOver((sends: PendingSend[]) => testDb.db.storeMessages(sends));
    const sends = [
      send(chatId, alice, aliceKey), // written alone; the others queue behind it and share the next batch
      send(chatId, alice, aliceKey),
      send(chatId, alice, aliceKey, { clientMessageId: "nul\u0000id" }), // text cannot hold NUL
      send(chatId, alice, aliceKey),
      send(chatId, alice, aliceKey, { sentAt: new Date("2100-01-01T00:00:00Z") }), // no partition holds that day
      send(chatId, alice, aliceKey),
    ];
    const outcomes = await outcomesOf(sends.map((s) => committer.submit(s)));
    expect(sizes.slice(0, 2)).toEqual([1, 5]);
    expect(outcomes).toEqual(["ok", "ok", "invalid", "ok", "23514", "ok"]);
    const inbox = await testDb.db.readInbox(readerKeys[0]!, 0n, 100);
    const text = new TextDecoder();
    const innocent = [0, 1, 3, 5].map((i) => sends[i]!.messageId);
    expect(inbox.slice(1).map((event) => text.decode(event.body))).toEqual(
      innocent.map((messageId, i) => `message:${messageId}:${i + 1}`),
    );
  });

  it("deletes every device's acked events but those of the refused ack", async () => {
    const { chatId, alice, aliceKey, readers, readerKeys } = await chatWith(4);
    await testDb.db.storeMessages([send(chatId, alice, aliceKey)]);
    const inboxOf = (key: string) => testDb.db.readInbox(key, 0n, 100);
    const eventIds = await Promise.all(readerKeys.map(async (key) => (await inboxOf(key)).map((e) => e.eventId)));
    expect(eventIds.map((ids) => ids.length)).toEqual([2, 2, 2, 2]); // the chat's creation and the message
    const { committer, sizes } = committerOver(async (acks: DeviceAck[]) => {
      await testDb.db.ackEvents(acks);
      return acks.map(() => undefined);
    });
    const ack = (i: number, eventIds: bigint[]) => committer.submit({ deviceKey: readerKeys[i]!, userId: readers[i]!, eventIds });
    // Reader 2's ack names an id above the range of the column's type.
    const outcomes = await outcomesOf([
      ack(0, eventIds[0]!),
      ack(1, eventIds[1]!),
      ack(2, [2n ** 64n - 1n]),
      ack(3, eventIds[3]!),
    ]);
    expect(sizes.slice(0, 2)).toEqual([1, 3]);
    expect(outcomes).toEqual(["ok", "ok", "invalid", "ok"]);
    expect(await Promise.all(readerKeys.map(async (key) => (await inboxOf(key)).length))).toEqual([0, 0, 2, 0]);
  });

  it("gives every device its key but the one the database refuses", async () => {
    const { committer, sizes } = committerOver((devices: DeviceName[]) =>
      testDb.db.registerDevices(devices, new Date(), 10),
    );
    const users = ["first", "a", "b", "nul\u0000user", "c"].map(uniqueUser);
    const outcomes = await outcomesOf(users.map((userId) => committer.submit({ userId, deviceName: "phone" })));
    expect(sizes.slice(0, 2)).toEqual([1, 4]);
    expect(outcomes).toEqual(["ok", "ok", "ok", "invalid", "ok"]);
  });
});
