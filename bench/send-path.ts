/**
 * The database's part of sending, alone: sends at a steady rate into groups of 5 users × 2 devices (one sending
 * device per group, as the steady scenario), written through the group committer with the server's batch settings
 * into SqlDb.storeMessages. Prints sends stored, their latency (due → stored) and the CPU of this process and of the
 * machine's `postgres` processes per send. What the send statement costs without HTTP/2, the hub or the load
 * generator on the same cores.
 *
 *   npx tsx bench/send-path.ts [--url postgres://...] [--groups 2000] [--rate 1000] [--seconds 20]
 *
 * It works in a fresh schema of the database the URL names (default DATABASE_URL), dropped afterwards.
 */
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { createPostgresDriver } from "../src/adapters/sql/postgres-driver.js";
import { SqlDb } from "../src/adapters/sql/sql-db.js";
import { GroupCommitter } from "../src/features/group-commit.js";
import type { PendingSend, SendOutcome } from "../src/ports/db.js";
import { SEND_BATCHES_IN_FLIGHT_POSTGRES, SEND_GATHER_MS } from "../src/tunables.js";
import { registerDeviceKeys } from "../test/support/store-fixtures.js";
import { measure } from "./cpu.js";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: process.env.DATABASE_URL },
    groups: { type: "string", default: "2000" },
    rate: { type: "string", default: "1000" },
    seconds: { type: "string", default: "20" },
  },
});
if (!values.url) throw new Error("give --url or set DATABASE_URL");
const [groups, rate, seconds] = [Number(values.groups), Number(values.rate), Number(values.seconds)];
const SEND_BATCH_MAX = 256; // the server's default

const schema = `send_path_${process.pid}`;
const driver = createPostgresDriver(values.url, { searchPath: schema });
await driver.exec(`CREATE SCHEMA ${schema}`);
try {
  const db = new SqlDb(driver);
  await db.migrate();
  await db.ensurePartitions(new Date(), 2);
  const now = new Date();
  const users = Array.from({ length: groups * 5 }, (_, i) => `user-${i}`);
  const keys = await registerDeviceKeys(
    db,
    users.flatMap((userId) => [{ userId, deviceName: "phone" }, { userId, deviceName: "laptop" }]),
    now,
  );
  const chats: { chatId: string; sender: string; senderKey: string }[] = [];
  for (let g = 0; g < groups; g += 100) {
    chats.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(100, groups - g) }, async (_, i) => {
          const members = users.slice((g + i) * 5, (g + i) * 5 + 5);
          const { chat } = await db.createChat(
            { chatId: randomUUID(), name: "group", participantUserIds: members, createdAt: now, updateMessageId: randomUUID() },
            () => new Uint8Array(64),
          );
          return { chatId: chat.chatId, sender: members[0]!, senderKey: keys[(g + i) * 10]! };
        }),
      )),
    );
  }

  const committer = new GroupCommitter<PendingSend, SendOutcome>(
    (sends) => db.storeMessages(sends),
    SEND_BATCH_MAX,
    SEND_BATCHES_IN_FLIGHT_POSTGRES,
    { keyOf: (send) => send.chatId.toLowerCase(), gatherMs: SEND_GATHER_MS },
  );
  const body = new Uint8Array(120);
  const latencies: number[] = [];
  let stored = 0;
  const total = rate * seconds;
  const { ms, nodeCpu, postgresCpu } = await measure(async () => {
    const started = performance.now();
    const pending: Promise<void>[] = [];
    for (let i = 0; i < total; i++) {
      const due = started + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
      const chat = chats[i % chats.length]!;
      const send: PendingSend = {
        chatId: chat.chatId,
        messageId: randomUUID(),
        senderUserId: chat.sender,
        senderDeviceKey: chat.senderKey,
        clientMessageId: randomUUID(),
        sentAt: new Date(),
        attachmentIds: [],
        encode: () => body,
      };
      pending.push(
        committer.submit(send).then((outcome) => {
          if (outcome.kind === "stored") stored++;
          latencies.push(performance.now() - due);
        }),
      );
    }
    await Promise.all(pending);
  });
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!.toFixed(1);
  console.log(
    `${stored} of ${total} sends stored in ${(ms / 1000).toFixed(1)} s (${rate}/s offered); latency p50 ${at(0.5)} ms, ` +
      `p99 ${at(0.99)} ms; CPU per send: this process ${((nodeCpu * 1e6) / total).toFixed(0)} µs, ` +
      `postgres ${((postgresCpu * 1e6) / total).toFixed(0)} µs`,
  );
} finally {
  await driver.exec(`DROP SCHEMA ${schema} CASCADE`);
  await driver.close();
}
