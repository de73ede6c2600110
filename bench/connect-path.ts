/**
 * The database's part of a first connect, alone: N devices the server has never seen resolve their keys at once
 * through DeviceDirectory (with the server's batch settings), then open their (empty) inboxes at once as their
 * streams do. Prints, for each, the wall time and the CPU of this process and of the machine's `postgres` processes
 * (read from /proc, so only for a Postgres on this host).
 *
 *   npx tsx bench/connect-path.ts [--url postgres://...] [--devices 10000]
 *
 * It works in a fresh schema of the database the URL names (default DATABASE_URL), dropped afterwards.
 */
import { parseArgs } from "node:util";
import { createPostgresDriver } from "../src/adapters/sql/postgres-driver.js";
import { SqlDb } from "../src/adapters/sql/sql-db.js";
import { DeviceDirectory } from "../src/auth/device-directory.js";
import { DEVICE_BATCH_MAX, DEVICE_BATCHES_IN_FLIGHT, INBOX_PAGE_SIZE } from "../src/tunables.js";
import { measure } from "./cpu.js";

const { values } = parseArgs({
  options: { url: { type: "string", default: process.env.DATABASE_URL }, devices: { type: "string", default: "10000" } },
});
if (!values.url) throw new Error("give --url or set DATABASE_URL");

async function report<T>(what: string, work: () => Promise<T>): Promise<T> {
  const { result, ms, nodeCpu, postgresCpu } = await measure(work);
  console.log(
    `${what} in ${ms.toFixed(0)} ms; CPU: this process ${nodeCpu.toFixed(2)} s, postgres ${postgresCpu.toFixed(2)} s`,
  );
  return result;
}

const schema = `connect_path_${process.pid}`;
const driver = createPostgresDriver(values.url, { searchPath: schema });
await driver.exec(`CREATE SCHEMA ${schema}`);
try {
  const db = new SqlDb(driver);
  await db.migrate();
  const directory = new DeviceDirectory(db, { now: () => new Date() }, {
    maxBatch: DEVICE_BATCH_MAX,
    maxInFlight: DEVICE_BATCHES_IN_FLIGHT,
  });
  const devices = Number(values.devices);
  const keys = await report(`${devices} new devices registered`, () =>
    Promise.all(Array.from({ length: devices }, (_, i) => directory.resolve(`user-${i}`, "phone"))),
  );
  await report(`${devices} inboxes opened`, () => Promise.all(keys.map((key) => db.openInbox(key, INBOX_PAGE_SIZE))));
} finally {
  await driver.exec(`DROP SCHEMA ${schema} CASCADE`);
  await driver.close();
}
