import { randomUUID } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../../test/support/features.js";
import { encodeUpdate, newAttachment, registerDevice, send, uniqueUser } from "../../../test/support/store-fixtures.js";
import { MemoryDb } from "../../adapters/memory/memory-db.js";
import { type Clock, DAY_MS } from "../../ports/clock.js";
import { Retention, type RetentionReport } from "./retention.js";

/** Noon UTC, so a day's move never lands on a partition boundary by accident. */
const START = Date.UTC(2030, 0, 10, 12);
const day = (offset: number) => new Date(START + offset * DAY_MS).toISOString().slice(0, 10).replace(/-/g, "");
const partitionsOf = (...offsets: number[]) => offsets.flatMap((o) => [`messages_p${day(o)}`, `inbox_p${day(o)}`]);

describe("Retention", () => {
  let db: MemoryDb;
  let clock: Clock & { at: number };
  let deletedObjects: string[];
  let reports: (RetentionReport | undefined)[];
  let retention: Retention;
  beforeEach(async () => {
    db = new MemoryDb();
    clock = { at: START, now: () => new Date(clock.at) };
    deletedObjects = [];
    reports = [];
    retention = new Retention(
      db,
      { delete: async (keys) => void deletedObjects.push(...keys) },
      clock,
      { retentionDays: 30, maxInboxEvents: 3, partitionsAhead: 2, idempotencyMs: 2 * DAY_MS },
      silentLogger,
      (report) => reports.push(report),
    );
    await retention.prepare();
  });
  const advanceDays = (days: number) => (clock.at += days * DAY_MS);

  /** Alice sends `count` messages to bob's phone at the clock's time; returns bob's device key. */
  async function bobReceives(count: number) {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const alicePhone = await registerDevice(db, alice, "phone", clock.now());
    const bobPhone = await registerDevice(db, bob, "phone", clock.now());
    const { chat } = await db.createChat(
      { chatId: randomUUID(), name: "c", participantUserIds: [alice, bob], createdAt: clock.now(), updateMessageId: randomUUID() },
      encodeUpdate,
    );
    await db.storeMessages(Array.from({ length: count }, () => send(chat.chatId, alice, alicePhone, { sentAt: clock.now() })));
    return bobPhone;
  }

  it("prepares today's and the coming days' partitions, and a later run makes the new days'", async () => {
    expect(await db.ensurePartitions(clock.now(), 2)).toEqual([]);
    advanceDays(1);
    const report = await retention.run();
    expect(report.partitionsCreated).toEqual(partitionsOf(3));
    expect(report.partitionsDropped).toEqual([]);
  });

  it("drops the days past retention and marks the devices that had unread events there for a resync", async () => {
    const bobPhone = await bobReceives(2);
    advanceDays(30);
    expect((await retention.run()).partitionsDropped).toEqual([]); // day 0 is 30 days old: kept
    expect(await db.readInbox(bobPhone, 0n, 10)).toHaveLength(3);

    advanceDays(1);
    const report = await retention.run();
    expect(report.partitionsDropped).toEqual(partitionsOf(0));
    expect(await db.readInbox(bobPhone, 0n, 10)).toEqual([]);
    expect((await db.openInbox(bobPhone, 10)).resync).toBe("retention");
  });

  it("trims inboxes over the limit to their newest events and marks those devices for a resync", async () => {
    const bobPhone = await bobReceives(4); // the chat's creation and 4 messages
    const newest = (await db.readInbox(bobPhone, 0n, 10)).slice(-3);
    expect((await retention.run()).inboxesTrimmed).toBe(1);
    expect(await db.readInbox(bobPhone, 0n, 10)).toEqual(newest);
    expect((await db.openInbox(bobPhone, 10)).resync).toBe("inbox_overflow");
    expect((await retention.run()).inboxesTrimmed).toBe(0);
  });

  it("forgets idempotency keys once they are older than their time (two days here)", async () => {
    await bobReceives(1);
    advanceDays(1);
    expect((await retention.run()).idempotencyKeysForgotten).toBe(0);
    advanceDays(1.5);
    expect((await retention.run()).idempotencyKeysForgotten).toBe(1);
  });

  it("deletes attachments and their objects once their lifetime after the last message that carried them is over", async () => {
    const attachment = newAttachment(uniqueUser("alice"), clock.now());
    await db.createAttachment(attachment);
    advanceDays(31);
    await db.ensurePartitions(clock.now(), 0);
    expect((await retention.run()).attachmentsDeleted).toBe(0); // 30 days of retention and 2 of grace
    advanceDays(1.5);
    expect((await retention.run()).attachmentsDeleted).toBe(1);
    expect(deletedObjects).toEqual([attachment.objectKey]);
    expect(await db.getAttachment(attachment.attachmentId)).toBeNull();
  });

  it("reports every run, a failed one as undefined", async () => {
    const report = await retention.run();
    expect(reports).toEqual([report]);
    db.trimInboxes = async () => {
      throw new Error("database is down");
    };
    await expect(retention.run()).rejects.toThrow("database is down");
    expect(reports).toEqual([report, undefined]);
  });
});
