import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Backend, openTestDb, type TestDb, testBackends } from "../../../test/support/db.js";
import {
  encodeUpdate,
  registerDevice,
  registerDeviceKeys,
  send,
  stored,
  uniqueUser,
} from "../../../test/support/store-fixtures.js";
import { DAY_MS } from "../../ports/clock.js";
import type { ChatRecord } from "../../ports/db.js";
import type { SqlDriver, SqlQuery } from "../../ports/sql.js";
import { SqlDb } from "./sql-db.js";

/** Counts the statements and transactions a SqlDb sends, to check that batches stay set-based. */
function countingDriver(driver: SqlDriver): { driver: SqlDriver; statements: () => number; transactions: () => number } {
  let statements = 0;
  let transactions = 0;
  const counted = (db: SqlQuery): SqlQuery["query"] => (sql, params) => {
    statements++;
    return db.query(sql, params);
  };
  return {
    driver: {
      ...driver,
      query: counted(driver),
      transaction: (fn) => {
        transactions++;
        return driver.transaction((tx) => fn({ query: counted(tx) }));
      },
    },
    statements: () => statements,
    transactions: () => transactions,
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

  it("registers a batch of 500 new devices with one read and one transaction, and finds them again with one read without using identity values", async () => {
    const users = Array.from({ length: 100 }, () => uniqueUser("member"));
    const batch = users.flatMap((userId) => ["a", "b", "c", "d", "e"].map((deviceName) => ({ userId, deviceName })));
    const counting = countingDriver(testDb.driver);
    const counted = new SqlDb(counting.driver);
    const keys = await registerDeviceKeys(counted, batch, now());
    // The read, then the users' locks and the insert in one transaction.
    expect([counting.statements(), counting.transactions()]).toEqual([3, 1]);
    expect(new Set(keys).size).toBe(500);
    // Known devices (with one repeated) are found, not inserted: no identity value goes to a skipped insert.
    expect(await registerDeviceKeys(counted, [...batch, batch[0]!], now())).toEqual([...keys, keys[0]]);
    expect([counting.statements(), counting.transactions()]).toEqual([4, 1]);
    const last = keys.map(BigInt).reduce((a, b) => (a > b ? a : b));
    expect(await registerDevice(db, uniqueUser("next"), "phone", now())).toBe(String(last + 1n));
  });

  it("never lets concurrent batches register more than the limit of one user's devices", async () => {
    const alice = uniqueUser("alice");
    const batches = Array.from({ length: 8 }, (_, i) => [0, 1, 2].map((j) => ({ userId: alice, deviceName: `d${i}-${j}` })));
    const results = await Promise.all(batches.map((batch) => db.registerDevices(batch, now(), 5)));
    const kinds = results.flat().map((registration) => registration.kind);
    expect(kinds.filter((kind) => kind === "device")).toHaveLength(5);
    expect(kinds.filter((kind) => kind === "too_many_devices")).toHaveLength(19);
    expect(await db.listDevices(alice)).toHaveLength(5);
  });

  it("does not deadlock batches that register the same new devices in opposite orders", async () => {
    // Each batch's users are locked in one order whatever the batch's own order, and the same new device is inserted
    // by the first batch to hold its user; the others find it.
    for (let round = 0; round < 3; round++) {
      const users = Array.from({ length: 30 }, () => uniqueUser("member"));
      const shared = Array.from({ length: 300 }, (_, i) => ({ userId: users[i % 30]!, deviceName: `device-${i}` }));
      const batches = Array.from({ length: 8 }, (_, i) => (i % 2 ? shared.toReversed() : shared));
      const results = await Promise.all(batches.map((batch) => registerDeviceKeys(db, batch, now())));
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
    const userOf = new Map(devices.map((d, i) => [d!, users[i]!]));
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
          [{ deviceKey: deviceKey!, userId: userOf.get(deviceKey!)!, eventIds: forwards }],
          [
            { deviceKey: deviceKey!, userId: userOf.get(deviceKey!)!, eventIds: forwards.toReversed() },
            { deviceKey: other, userId: userOf.get(other)!, eventIds: eventsOf.get(other)! },
          ],
        ];
      });
      await Promise.all(acks.map((batch) => db.ackEvents(batch)));
      const messageIds = outcomes.map((o) => stored(o).messageId);
      expect(await countRows(testDb.driver, "inbox", messageIds)).toBe(0);
      expect(await countRows(testDb.driver, "messages", messageIds)).toBe(0);
    }
  });

  it("stores a batch of 256 sends in two statements (the chats' last seqs, the write), and the next in one", async () => {
    const users = Array.from({ length: 5 }, () => uniqueUser("member"));
    const devices = await Promise.all(users.map((u) => registered(u, "phone", "laptop")));
    const chats = await Promise.all(Array.from({ length: 16 }, () => newChat(users)));
    const batch = () => Array.from({ length: 256 }, (_, i) => send(chats[i % 16]!.chatId, users[i % 5]!, devices[i % 5]![0]!));
    const counting = countingDriver(testDb.driver);
    const counted = new SqlDb(counting.driver);
    const started = performance.now();
    const first = (await counted.storeMessages(batch())).map(stored);
    const ms = performance.now() - started;
    expect([counting.transactions(), counting.statements()]).toEqual([0, 2]);
    expect(first.every((o) => o.fanout.entries.length === 9)).toBe(true);
    console.info(`${backend}: 256 sends, 2304 inbox entries in ${ms.toFixed(0)} ms`);

    // This node now knows the chats' last seqs: the batch is one statement.
    const second = (await counted.storeMessages(batch())).map(stored);
    expect([counting.transactions(), counting.statements()]).toEqual([0, 3]);
    expect(second.map((o) => o.seq)).toEqual(first.map((o) => o.seq + 16n));
    expect(second.every((o) => o.fanout.entries.length === 9)).toBe(true);
  });

  it("takes the next seqs when another server sent to the chat since this one last did", async () => {
    const [alice, bob] = [uniqueUser("alice"), uniqueUser("bob")];
    const [alicePhone] = await registered(alice, "phone");
    const [bobPhone] = await registered(bob, "phone");
    const chat = await newChat([alice, bob]);
    const counting = countingDriver(testDb.driver);
    const [here, there] = [new SqlDb(counting.driver), new SqlDb(testDb.driver)];
    expect(stored((await here.storeMessages([send(chat.chatId, alice, alicePhone!)]))[0]).seq).toBe(1n);
    expect(stored((await there.storeMessages([send(chat.chatId, bob, bobPhone!)]))[0]).seq).toBe(2n);

    // Here guesses seq 2: the statement writes nothing; the chat's last seq is read again and 3 and 4 are written.
    const before = counting.statements();
    const outcomes = (await here.storeMessages([send(chat.chatId, alice, alicePhone!), send(chat.chatId, alice, alicePhone!)])).map(stored);
    expect([counting.transactions(), counting.statements() - before]).toEqual([0, 3]);
    expect(outcomes.map((o) => o.seq)).toEqual([3n, 4n]);
    expect(new TextDecoder().decode(outcomes[0]!.fanout.body)).toBe(`message:${outcomes[0]!.messageId}:3`);
    expect(outcomes.every((o) => o.fanout.entries.length === 1)).toBe(true);
    const rows = await testDb.driver.query<{ seq: bigint; body: Uint8Array }>(
      "SELECT seq, body FROM messages WHERE chat_id = $1::uuid AND seq IS NOT NULL ORDER BY seq",
      [chat.chatId],
    );
    expect(rows.map((r) => r.seq)).toEqual([1n, 2n, 3n, 4n]);
    expect(new TextDecoder().decode(rows[3]!.body)).toBe(`message:${outcomes[1]!.messageId}:4`);
    expect((await db.getChat(chat.chatId))!.lastSeq).toBe(4n);
  });

  // Postgres only: PGlite is one connection, so no other transaction can hold the chat's lock while a send waits.
  if (backend === "postgres") {
    it("fans a send out to a participant added while the send waited for the chat's lock", async () => {
      const [alice, bob, carol] = [uniqueUser("alice"), uniqueUser("bob"), uniqueUser("carol")];
      const [alicePhone] = await registered(alice, "phone");
      await registered(bob, "phone");
      const [carolPhone] = await registered(carol, "phone");
      const chat = await newChat([alice, bob]);
      stored((await db.storeMessages([send(chat.chatId, alice, alicePhone!)]))[0]); // db now knows the last seq
      const sending = await testDb.driver.transaction(async (tx) => {
        // Carol joins as modifyParticipants adds her; the send's snapshot, taken before this commits, lacks her.
        const [locked] = await tx.query<{ pid: number }>(
          "SELECT pg_backend_pid() AS pid FROM chats WHERE chat_id = $1::uuid FOR UPDATE",
          [chat.chatId],
        );
        await tx.query(
          `WITH participant AS (INSERT INTO chat_participants (chat_id, user_id) VALUES ($1::uuid, $2::text))
           UPDATE chats SET participants_version = participants_version + 1 WHERE chat_id = $1::uuid`,
          [chat.chatId, carol],
        );
        const pending = db.storeMessages([send(chat.chatId, alice, alicePhone!)]);
        const waiting = async () =>
          (await testDb.driver.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))",
            [locked!.pid],
          ))[0]!.n > 0;
        while (!(await waiting())) await new Promise((resolve) => setTimeout(resolve, 10));
        return { pending };
      });
      const outcome = stored((await sending.pending)[0]);
      expect(outcome.seq).toBe(2n);
      expect(outcome.fanout.entries.map((e) => e.deviceKey)).toContain(carolPhone);
    });
  }

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
