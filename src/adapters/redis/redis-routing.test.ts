import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import type { Fanout, RemovedDevice } from "../../ports/db.js";
import { RedisBus } from "./redis-bus.js";
import { RedisPresence } from "./redis-presence.js";

const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const logger = pino({ level: "silent" });
const clients: Redis[] = [];
const connect = (connectionName?: string) => {
  const redis = new Redis(redisUrl, { connectionName });
  clients.push(redis);
  return redis;
};

/** Drops the named client's connection on the server side, as a Redis restart would; the client reconnects. */
async function killConnection(admin: Redis, connectionName: string): Promise<void> {
  const list = (await admin.client("LIST")) as string;
  const line = list.split("\n").find((l) => l.includes(` name=${connectionName} `));
  const id = /(?:^|\s)id=(\d+)/.exec(line ?? "")?.[1];
  if (!id) throw new Error(`no connection named ${connectionName}`);
  await admin.client("KILL", "ID", id);
}
afterAll(() => {
  for (const client of clients) client.disconnect();
});

/** Contract tests of the routing adapters against the machine's real Redis. */
describe("RedisPresence", () => {
  const unique = () => `t${randomBytes(6).toString("hex")}`;

  it("locates claimed devices, and a node releases only what it still holds", async () => {
    const redis = connect();
    const [nodeA, nodeB] = [unique(), unique()];
    const a = new RedisPresence(redis, { nodeId: nodeA, ttlSeconds: 30, heartbeatMs: 60_000 }, logger);
    const b = new RedisPresence(redis, { nodeId: nodeB, ttlSeconds: 30, heartbeatMs: 60_000 }, logger);
    const [d1, d2, d3] = [unique(), unique(), unique()];
    await a.claim(d1);
    await a.claim(d2);
    await b.claim(d2); // the device moved to b
    const located = await a.locate([d1, d2, d3]);
    expect(Object.fromEntries(located)).toEqual({ [d1]: nodeA, [d2]: nodeB });
    await a.release(d2); // a no longer holds it: b's record stays
    expect((await a.locate([d2])).size).toBe(1);
    await b.close();
    await a.close();
    expect((await a.locate([d1, d2])).size).toBe(0);
  });

  it("forgets a device whose node stops refreshing it", async () => {
    const redis = connect();
    const presence = new RedisPresence(redis, { nodeId: unique(), ttlSeconds: 1, heartbeatMs: 60_000 }, logger);
    const device = unique();
    await presence.claim(device);
    expect((await presence.locate([device])).size).toBe(1);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await presence.locate([device])).size).toBe(0);
    await presence.close();
  });

  it("writes its records again on restore() after Redis lost them", async () => {
    const redis = connect();
    const presence = new RedisPresence(redis, { nodeId: unique(), ttlSeconds: 30, heartbeatMs: 60_000 }, logger);
    const devices = [unique(), unique()];
    for (const device of devices) await presence.claim(device);
    await redis.del(...devices.map((d) => `palaver:dev:{${d}}`));
    expect((await presence.locate(devices)).size).toBe(0);
    await presence.restore();
    expect((await presence.locate(devices)).size).toBe(2);
    await presence.close();
  });

  it("keeps a device located while its node's heartbeat refreshes it", async () => {
    const redis = connect();
    const presence = new RedisPresence(redis, { nodeId: unique(), ttlSeconds: 1, heartbeatMs: 300 }, logger);
    const device = unique();
    await presence.claim(device);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await presence.locate([device])).size).toBe(1);
    await presence.close();
  });
});

describe("RedisBus", () => {
  it("hands events to the named node only, batching what is published in one turn", async () => {
    const nodeA = `a${randomBytes(6).toString("hex")}`;
    const nodeB = `b${randomBytes(6).toString("hex")}`;
    const a = new RedisBus(nodeA, connect(), connect(), logger);
    const b = new RedisBus(nodeB, connect(), connect(), logger);
    const batchesAtA: Fanout[][] = [];
    const batchesAtB: Fanout[][] = [];
    const link = { interrupted() {}, resumed() {} };
    await a.subscribe((f) => batchesAtA.push(f), link);
    await b.subscribe((f) => batchesAtB.push(f), link);

    const body = new Uint8Array([1, 2, 3]);
    a.publish(nodeB, [{ body, entries: [{ deviceKey: "7", eventId: 70n }], sentAtMs: 1_700_000_000_123 }]);
    a.publish(nodeB, [{ body, entries: [{ deviceKey: "8", eventId: 80n }, { deviceKey: "9", eventId: 81n }] }]);
    await expect.poll(() => batchesAtB.length).toBe(1);
    expect(batchesAtB[0]!.map((f) => ({ ...f, body: [...f.body] }))).toEqual([
      { body: [1, 2, 3], entries: [{ deviceKey: "7", eventId: 70n }], sentAtMs: 1_700_000_000_123 },
      { body: [1, 2, 3], entries: [{ deviceKey: "8", eventId: 80n }, { deviceKey: "9", eventId: 81n }], sentAtMs: undefined },
    ]);
    expect(batchesAtA).toEqual([]);
    await a.close();
    await b.close();
  });

  it("says when its channel was lost and when it is live again", async () => {
    const nodeA = `a${randomBytes(6).toString("hex")}`;
    const nodeB = `b${randomBytes(6).toString("hex")}`;
    const a = new RedisBus(nodeA, connect(), connect(), logger);
    const b = new RedisBus(nodeB, connect(), connect(`sub-${nodeB}`), logger);
    const received: Fanout[][] = [];
    const link: string[] = [];
    await b.subscribe((f) => received.push(f), { interrupted: () => link.push("interrupted"), resumed: () => link.push("resumed") });

    await killConnection(connect(), `sub-${nodeB}`);
    await expect.poll(() => link).toEqual(["interrupted", "resumed"]);
    // Resumed means live: a hand-off published now arrives.
    a.publish(nodeB, [{ body: new Uint8Array([9]), entries: [{ deviceKey: "1", eventId: 1n }] }]);
    await expect.poll(() => received.length).toBe(1);
    await a.close();
    await b.close();
  });

  it("tells every node, the announcing one too, of removed devices, and says when that channel is back after a loss", async () => {
    const nodeB = `b${randomBytes(6).toString("hex")}`;
    const a = new RedisBus(`a${randomBytes(6).toString("hex")}`, connect(), connect(), logger);
    const b = new RedisBus(nodeB, connect(), connect(`sub-${nodeB}`), logger);
    const [atA, atB]: RemovedDevice[][][] = [[], []];
    let resumed = 0;
    await a.subscribeRemovals((devices) => atA.push(devices), { resumed() {} });
    await b.subscribeRemovals((devices) => atB.push(devices), { resumed: () => resumed++ });
    // The same connection carries the node's hand-offs, which still come alone.
    const handoffs: Fanout[][] = [];
    await b.subscribe((f) => handoffs.push(f), { interrupted() {}, resumed() {} });

    const removed = [{ deviceKey: "12", userId: `alice-${nodeB}`, deviceName: "phone" }];
    a.announceRemovals(removed);
    await expect.poll(() => atB.filter((d) => d[0]?.userId === removed[0]!.userId)).toEqual([removed]);
    await expect.poll(() => atA.filter((d) => d[0]?.userId === removed[0]!.userId)).toEqual([removed]);
    expect(handoffs).toEqual([]);

    await killConnection(connect(), `sub-${nodeB}`);
    await expect.poll(() => resumed).toBe(1);
    a.announceRemovals(removed);
    await expect.poll(() => atB.filter((d) => d[0]?.userId === removed[0]!.userId)).toHaveLength(2);
    await a.close();
    await b.close();
  });
});
