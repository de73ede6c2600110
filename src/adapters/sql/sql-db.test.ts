import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Backend, openTestDb, type TestDb, testBackends } from "../../../test/support/db.js";
import { encodeUpdate, registerDevice, send, stored, uniqueUser } from "../../../test/support/store-fixtures.js";
import { DAY_MS } from "../../ports/clock.js";
import type { ChatRecord } from "../../ports/db.js";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";
import { SqlDb } from "./sql-db.js";

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

/**
 * What only the SQL implementation has: partition tables, row locks between concurrent transactions, statement
 * counts. What every Db must do is in ../db.contract.test.ts.
 */
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
    Promise.all(deviceNames.map((name) => registerDevice(db, userId, name, now())));
  async function newChat(participantUserIds: string[]): Promise<ChatRecord> {
    const { chat } = await db.createChat(
      { chatId: randomUUID(), name: "chat", participantUserIds, createdAt: now(), updateMessageId: randomUUID() },
      encodeUpdate,
    );
    return chat;
  }

  it("registers a batch of 500 new devices in one statement, and finds them again in one without using identity values", async () => {
    const users = Array.from({ length: 100 }, () => uniqueUser("member"));
    const batch = users.flatMap((userId) => ["a", "b", "c", "d", "e"].map((deviceName) => ({ userId, deviceName })));
    const counting = countingDriver(testDb.driver);
    const counted = new SqlDb(counting.driver);
    const keys = await counted.registerDevices(batch, now());
    expect(counting.statements()).toBe(1);
    expect(new Set(keys).size).toBe(500);
    // Known devices (with one repeated) are found, not inserted: no identity value goes to a skipped insert.
    expect(await counted.registerDevices([...batch, batch[0]!], now())).toEqual([...keys, keys[0]]);
    expect(counting.statements()).toBe(2);
    const last = keys.map(BigInt).reduce((a, b) => (a > b ? a : b));
    expect(await registerDevice(db, uniqueUser("next"), "phone", now())).toBe(String(last + 1n));
  });

  // Postgres only: PGlite is one connection, so no other transaction can hold a row the batch waits on.
  if (backend === "postgres") {
    it(
      "looks again for a new device that another transaction inserted after the statement's snapshot",
      async () => {
        const alice = uniqueUser("alice");
        const counting = countingDriver(testDb.driver);
        const registration = testDb.driver.transaction(async (tx) => {
          const [inserted] = await tx.query<{ device_key: bigint; pid: number }>(
            `INSERT INTO devices (user_id, device_name, created_at) VALUES ($1::text, 'phone', now())
             RETURNING device_key, pg_backend_pid() AS pid`,
            [alice],
          );
          // The batch's INSERT waits for this uncommitted row; the row is committed once the batch waits on it.
          const pending = new SqlDb(counting.driver).registerDevices([{ userId: alice, deviceName: "phone" }], now());
          const waiting = async () =>
            (await testDb.driver.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))",
              [inserted!.pid],
            ))[0]!.n > 0;
          while (!(await waiting())) await new Promise((resolve) => setTimeout(resolve, 10));
          return { key: String(inserted!.device_key), pending };
        });
        const { key, pending } = await registration;
        expect(await pending).toEqual([key]);
        expect(counting.statements()).toBe(2); // the batch, and the second look for the device it could not see
      },
    );
  }

  it("does not deadlock batches that register the same new devices in opposite orders", async () => {
    // Each batch's INSERT waits on the uncommitted rows of another's for the devices they share: in the batches' own
    // orders those waits would form cycles, and Postgres would abort one statement as a deadlock.
    for (let round = 0; round < 3; round++) {
      const users = Array.from({ length: 30 }, () => uniqueUser("member"));
      const shared = Array.from({ length: 300 }, (_, i) => ({ userId: users[i % 30]!, deviceName: `device-${i}` }));
      const batches = Array.from({ length: 8 }, (_, i) => (i % 2 ? shared.toReversed() : shared));
      const results = await Promise.all(batches.map((batch) => db.registerDevices(batch, now())));
      for (const [i, keys] of results.entries()) expect(i % 2 ? keys.toReversed() : keys).toEqual(results[0]);
    }
  });

  it("does not deadlock batches that touch the same chats in different orders, or participant changes", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const [alicePhone] = await registered(alice, "phone");
    const [x, y] = [await newChat([alice, bob]), await newChat([alice, bob])];
    const work = Array.from({ length: 10 }, (_, i) => [
      db.storeMessages([send(x.chatId, alice, alicePhone!), send(y.chatId, alice, alicePhone!)]),
      db.storeMessages([send(y.chatId, alice, alicePhone!), send(x.chatId, alice, alicePhone!)]),
      db.modifyParticipants(
        {
          chatId: i % 2 ? x.chatId : y.chatId,
          actorUserId: alice,
          userId: uniqueUser("guest"),
          operation: "add",
          maxParticipants: 100,
          at: now(),
          updateMessageId: randomUUID(),
        },
        encodeUpdate,
      ),
    ]);
    await Promise.all(work.flat());
    expect((await db.getChat(x.chatId))!.lastSeq).toBe(20n);
    expect((await db.getChat(y.chatId))!.lastSeq).toBe(20n);
  });

  it("acks from many devices at once, in any order and repeated, without an error", async () => {
    // Concurrent ack statements delete the same messages (a message goes with its last inbox entry) and, when a
    // device repeats an ack, the same inbox entries: they must take their row locks in one order, or Postgres
    // aborts one of them as a deadlock and the device sees INTERNAL.
    const users = Array.from({ length: 8 }, () => uniqueUser("member"));
    const [sender] = await registered(users[0]!, "sender");
    const devices = (await Promise.all(users.map((u) => registered(u, "phone")))).flat();
    const chat = await newChat(users);
    for (let round = 0; round < 4; round++) {
      const outcomes = await db.storeMessages(Array.from({ length: 100 }, () => send(chat.chatId, users[0]!, sender!)));
      const eventsOf = new Map<string, bigint[]>(devices.map((d) => [d!, []]));
      for (const { deviceKey, eventId } of outcomes.flatMap((o) => stored(o).fanout.entries)) {
        eventsOf.get(deviceKey)!.push(eventId);
      }
      // Each device acks its events twice, forwards and backwards, and pairs of devices share a statement.
      const acks = devices.flatMap((deviceKey, i) => {
        const forwards = eventsOf.get(deviceKey!)!;
        const other = devices[(i + 1) % devices.length]!;
        return [
          [{ deviceKey: deviceKey!, eventIds: forwards }],
          [{ deviceKey: deviceKey!, eventIds: forwards.toReversed() }, { deviceKey: other, eventIds: eventsOf.get(other)! }],
        ];
      });
      await Promise.all(acks.map((batch) => db.ackEvents(batch)));
      const messageIds = outcomes.map((o) => stored(o).messageId);
      expect(await countRows(testDb.driver, "inbox", messageIds)).toBe(0);
      expect(await countRows(testDb.driver, "messages", messageIds)).toBe(0);
    }
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
    expect(outcomes.every((o) => o.fanout.entries.length === 9)).toBe(true);
    console.info(`${backend}: 256 sends, 2304 inbox entries in ${ms.toFixed(0)} ms`);
  });

  it("creates each partition table once when two servers create the coming days' partitions at the same time", async () => {
    const own = await openTestDb(backend);
    try {
      const from = new Date(Date.UTC(2031, 4, 30, 13));
      const created = await Promise.all([own.db.ensurePartitions(from, 2), new SqlDb(own.driver).ensurePartitions(from, 2)]);
      expect(created.flat().sort()).toEqual(
        ["20310530", "20310531", "20310601"].flatMap((d) => [`inbox_p${d}`, `messages_p${d}`]).sort(),
      );
    } finally {
      await own.close();
    }
  });

  it("drops the rows of messages and inbox with the day's partitions", async () => {
    const own = await openTestDb(backend);
    try {
      const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
      const alicePhone = await registerDevice(own.db, alice, "phone", now());
      await registerDevice(own.db, bob, "phone", now());
      const { chat } = await own.db.createChat(
        { chatId: randomUUID(), name: "old", participantUserIds: [alice, bob], createdAt: now(), updateMessageId: randomUUID() },
        encodeUpdate,
      );
      await own.db.storeMessages([send(chat.chatId, alice, alicePhone)]);
      const later = new Date(Date.now() + 31 * DAY_MS);
      await own.db.ensurePartitions(later, 2);
      await own.db.dropPartitionsBefore(new Date(later.getTime() - 30 * DAY_MS));
      const count = async (table: string) =>
        (await own.driver.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`))[0]!.n;
      expect(await count("messages")).toBe(0);
      expect(await count("inbox")).toBe(0);
    } finally {
      await own.close();
    }
  });
});

async function countRows(driver: SqlDriver, table: "inbox" | "messages", messageIds: string[]): Promise<number> {
  const [row] = await driver.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${table} WHERE message_id = ANY($1::uuid[])`,
    [messageIds],
  );
  return row!.n;
}
