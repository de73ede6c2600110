/** Wiring for feature unit tests on MemoryDb: no server, no database, no network. */
import { pino } from "pino";
import type { MemoryDb } from "../../src/adapters/memory/memory-db.js";
import { DeliveryHub, type Routing } from "../../src/features/delivery/hub.js";
import { Metrics } from "../../src/features/operations/metrics.js";
import type { Caller } from "../../src/ports/caller.js";
import { registerDevice, uniqueUser } from "./store-fixtures.js";

export const silentLogger = pino({ level: "silent" });

export function newHub(db: MemoryDb, routing: Routing | null = null): DeliveryHub {
  const options = { queueLimit: 100, pageSize: 10, batchSize: 4, recentIds: 64, lateHandOffMs: 1000 };
  const retry = { delayMs: 20, forMs: 1000, max: 100 };
  return new DeliveryHub(db, options, silentLogger, new Metrics(() => 0), routing, null, retry);
}

/** A new user's device, registered in the database as authentication would. */
export async function newCaller(db: MemoryDb, name: string, deviceName = "phone"): Promise<Caller> {
  const userId = uniqueUser(name);
  const deviceKey = await registerDevice(db, userId, deviceName, new Date());
  return { userId, deviceName, deviceKey, tokenExpiresAt: new Date(Date.now() + 3_600_000) };
}

/** Another device of the same user. */
export async function otherDevice(db: MemoryDb, caller: Caller, deviceName: string): Promise<Caller> {
  return { ...caller, deviceName, deviceKey: await registerDevice(db, caller.userId, deviceName, new Date()) };
}
