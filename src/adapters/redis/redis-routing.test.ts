import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, describe, expect, it, onTestFinished, vi } from "vitest";
import { killConnectionNamed, redisAdmin, redisUrl } from "../../../test/support/redis.js";
import type { Fanout, RemovedDevice } from "../../ports/db.js";
import { connectRedis, type RedisLink } from "./connect.js";
import { RedisBus } from "./redis-bus.js";
import { RedisPresence, type RedisPresenceOptions } from "./redis-presence.js";

const logger = pino({ level: "silent" });
const links: RedisLink[] = [];
/** A node's link to the machine's Redis, named for the node (connections palaver-<node>-commands and -subscriber). */
const connect = async (nodeId = `t${randomBytes(6).toString("hex")}`) => {
  const link = await connectRedis(redisUrl, { nodeId, logger });
  links.push(link);
  return link;
};
afterAll(async () => {
  for (const link of links) await link.close();
});

/** Contract tests of the routing adapters against the machine's real Redis. */
describe("RedisPresence", () => {
  const unique = () => `t${randomBytes(6).toString("hex")}`;
  const options = (nodeId: string, more: Partial<RedisPresenceOptions> = {}): RedisPresenceOptions => ({
    nodeId,
    ttlSeconds: 30,
    heartbeatMs: 60_000,
    livenessCacheMs: 0,
    ...more,
  });
  const started = async (link: RedisLink, opts: RedisPresenceOptions) => {
    const presence = new RedisPresence(link, opts, logger);
    await presence.start();
    return presence;
  };

  it("locates claimed devices, and a node releases only what it still holds", async () => {
    const redis = await connect();
    const [nodeA, nodeB] = [unique(), unique()];
    const a = await started(redis, options(nodeA));
    const b = await started(redis, options(nodeB));
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

  it("counts a node's devices offline once its liveness key expires", async () => {
    const redis = await connect();
    const dead = await started(redis, options(unique(), { ttlSeconds: 1 }));
    const observer = await started(redis, options(unique()));
    const devices = [unique(), unique(), unique()];
    for (const device of devices) await dead.claim(device);
    expect((await observer.locate(devices)).size).toBe(3);
    await new Promise((r) => setTimeout(r, 1500)); // its heartbeat (every minute here) did not run
    expect((await observer.locate(devices)).size).toBe(0);
    await observer.close();
  });

  it("keeps a node's devices located while its heartbeat refreshes one key", async () => {
    const redis = await connect();
    const presence = await started(redis, options(unique(), { ttlSeconds: 1, heartbeatMs: 300 }));
    const device = unique();
    await presence.claim(device);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await presence.locate([device])).size).toBe(1);
    await presence.close();
  });

  it("does not route to a node's earlier run: a node started again with the same id deletes its old records", async () => {
    const redis = await connect();
    const nodeId = unique();
    const before = await started(redis, options(nodeId)); // dies without closing
    const device = unique();
    await before.claim(device);
    const again = await started(redis, options(nodeId));
    expect((await again.locate([device])).size).toBe(0);
    const admin = await redisAdmin();
    expect(await admin.exists(`palaver:dev:{${device}}`)).toBe(0);
    await admin.close();
    await again.close();
  });

  it("routes to a node's new run at once, though it read the earlier run alive a moment ago", async () => {
    // All within one millisecond, as on a fast machine: what the observer read is told apart by lookup, not by time.
    vi.spyOn(Date, "now").mockReturnValue(Date.now());
    onTestFinished(() => {
      vi.restoreAllMocks();
    });
    const redis = await connect();
    const nodeId = unique();
    const observer = await started(redis, options(unique(), { livenessCacheMs: 60_000 }));
    const before = await started(redis, options(nodeId)); // dies without closing
    const device = unique();
    await before.claim(device);
    expect(Object.fromEntries(await observer.locate([device]))).toEqual({ [device]: nodeId }); // the earlier run, read alive
    const again = await started(redis, options(nodeId));
    await again.claim(device); // the device reconnected to the node's new run
    expect(Object.fromEntries(await observer.locate([device]))).toEqual({ [device]: nodeId });
    const admin = await redisAdmin();
    expect(await admin.exists(`palaver:dev:{${device}}`), "the new run's record").toBe(1);
    await admin.close();
    await again.close();
    await observer.close();
  });

  it("writes its liveness key and records again on restore() after Redis lost them", async () => {
    const redis = await connect();
    const nodeId = unique();
    const presence = await started(redis, options(nodeId));
    const devices = [unique(), unique()];
    for (const device of devices) await presence.claim(device);
    const admin = await redisAdmin();
    await admin.del([...devices.map((d) => `palaver:dev:{${d}}`), `palaver:alive:{${nodeId}}`]);
    await admin.close();
    expect((await presence.locate(devices)).size).toBe(0);
    await presence.restore();
    expect((await presence.locate(devices)).size).toBe(2);
    await presence.close();
  });
});

describe("RedisBus", () => {
  it("hands events to the named node only, batching what is published in one turn", async () => {
    const nodeA = `a${randomBytes(6).toString("hex")}`;
    const nodeB = `b${randomBytes(6).toString("hex")}`;
    const a = new RedisBus(nodeA, await connect(nodeA), logger);
    const b = new RedisBus(nodeB, await connect(nodeB), logger);
    const batchesAtA: Fanout[][] = [];
    const batchesAtB: Fanout[][] = [];
    const link = { interrupted() {}, resumed() {} };
    await a.subscribe((f) => batchesAtA.push(f), link);
    await b.subscribe((f) => batchesAtB.push(f), link);

    const body = new Uint8Array([1, 2, 3]);
    // Both in one turn: one publish, which both calls see taken.
    await Promise.all([
      a.publish(nodeB, [{ body, entries: [{ deviceKey: "7", eventId: 70n }], sentAtMs: 1_700_000_000_123 }]),
      a.publish(nodeB, [{ body, entries: [{ deviceKey: "8", eventId: 80n }, { deviceKey: "9", eventId: 81n }] }]),
    ]);
    await expect.poll(() => batchesAtB.length).toBe(1);
    expect(batchesAtB[0]!.map((f) => ({ ...f, body: [...f.body] }))).toEqual([
      { body: [1, 2, 3], entries: [{ deviceKey: "7", eventId: 70n }], sentAtMs: 1_700_000_000_123 },
      { body: [1, 2, 3], entries: [{ deviceKey: "8", eventId: 80n }, { deviceKey: "9", eventId: 81n }], sentAtMs: undefined },
    ]);
    expect(batchesAtA).toEqual([]);
    await a.close();
    await b.close();
  });

  it("rejects a publish that Redis did not take, so the hub can try it again", async () => {
    const nodeA = `a${randomBytes(6).toString("hex")}`;
    const link = await connect(nodeA);
    const a = new RedisBus(nodeA, link, logger);
    await link.close(); // the commands connection fails what it is given from now on
    await expect(a.publish("elsewhere", [{ body: new Uint8Array([1]), entries: [{ deviceKey: "1", eventId: 1n }] }])).rejects.toThrow();
  });

  it("says when its channel was lost and when it is live again", async () => {
    const nodeA = `a${randomBytes(6).toString("hex")}`;
    const nodeB = `b${randomBytes(6).toString("hex")}`;
    const a = new RedisBus(nodeA, await connect(nodeA), logger);
    const b = new RedisBus(nodeB, await connect(nodeB), logger);
    const received: Fanout[][] = [];
    const link: string[] = [];
    await b.subscribe((f) => received.push(f), { interrupted: () => link.push("interrupted"), resumed: () => link.push("resumed") });

    const admin = await redisAdmin();
    await killConnectionNamed(admin, `palaver-${nodeB}-subscriber`);
    await admin.close();
    await expect.poll(() => link).toEqual(["interrupted", "resumed"]);
    // Resumed means live: a hand-off published now arrives.
    await a.publish(nodeB, [{ body: new Uint8Array([9]), entries: [{ deviceKey: "1", eventId: 1n }] }]);
    await expect.poll(() => received.length).toBe(1);
    await a.close();
    await b.close();
  });

  it("tells every node, the announcing one too, of removed devices, and says when that channel is back after a loss", async () => {
    const nodeB = `b${randomBytes(6).toString("hex")}`;
    const nodeA = `a${randomBytes(6).toString("hex")}`;
    const a = new RedisBus(nodeA, await connect(nodeA), logger);
    const b = new RedisBus(nodeB, await connect(nodeB), logger);
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

    const admin = await redisAdmin();
    await killConnectionNamed(admin, `palaver-${nodeB}-subscriber`);
    await admin.close();
    await expect.poll(() => resumed).toBe(1);
    a.announceRemovals(removed);
    await expect.poll(() => atB.filter((d) => d[0]?.userId === removed[0]!.userId)).toHaveLength(2);
    await a.close();
    await b.close();
  });
});
