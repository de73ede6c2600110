import { createClient } from "redis";

/** The machine's Redis (or REDIS_URL), as the suites that need one use it. */
export const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

/** A plain node-redis connection to look at and meddle with Redis from a test; close it when done. */
export async function redisAdmin(url = redisUrl) {
  const client = createClient({ url });
  client.on("error", () => {}); // tests that restart Redis see failures in the commands themselves
  await client.connect();
  return client;
}

/** Drops the named client's connection on the server side, as a Redis restart would; the client reconnects. */
export async function killConnectionNamed(admin: Awaited<ReturnType<typeof redisAdmin>>, name: string): Promise<void> {
  const list = await admin.clientList();
  const found = list.find((client) => client.name === name);
  if (!found) throw new Error(`no Redis connection named ${name}`);
  await admin.sendCommand(["CLIENT", "KILL", "ID", String(found.id)]);
}
