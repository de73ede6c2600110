/**
 * The Redis Cluster the cluster suite can run Palaver on (redis-cluster.ts): three primaries with a replica each, keys
 * and sharded channels spread over them, a primary killed and replaced by its replica, and the whole cluster restarted
 * empty. Checked through redis-cli and through node-redis's cluster client (as the Redis adapter connects), whose time
 * to work again after each fault is printed with the fault's own figures.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { createCluster } from "redis";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectRedis } from "../../src/adapters/redis/connect.js";
import { RedisBus } from "../../src/adapters/redis/redis-bus.js";
import { sleep, waitFor } from "./processes.js";
import { type RedisClusterPrimary, RedisCluster } from "./redis-cluster.js";

const run = promisify(execFile);

function report(name: string, data: Record<string, unknown>): void {
  console.log(`[redis-cluster] ${name}: ${JSON.stringify(data)}`);
}

/** redis-cli on one server; `-c` follows MOVED redirects to the slot's owner. */
async function cli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run("redis-cli", ["-c", "-h", "127.0.0.1", "-p", String(port), ...args], { timeout: 5000 });
  return stdout.trim();
}

/** A node-redis cluster client on the URL's seed nodes. */
function clusterClient(url: string) {
  const seeds = url.replace(/^redis\+cluster:\/\//, "").split(",");
  const client = createCluster({
    rootNodes: seeds.map((hostPort) => ({ url: `redis://${hostPort}` })),
    defaults: { socket: { connectTimeout: 1000 } },
  });
  client.on("error", () => {}); // Servers are killed on purpose; the commands that fail say so.
  return client;
}
type ClusterClient = ReturnType<typeof clusterClient>;

/**
 * Retries `attempt` (each try cut off after a second) until it succeeds; returns the milliseconds since `since`, or
 * throws the last failure after `timeoutMs`.
 */
async function untilItWorks(since: number, attempt: () => Promise<unknown>, timeoutMs = 30_000): Promise<number> {
  let last: unknown;
  try {
    await waitFor("the command to succeed", async () => {
      try {
        await Promise.race([attempt(), sleep(1000).then(() => Promise.reject(new Error("no answer within 1 s")))]);
        return true;
      } catch (error) {
        last = error;
        return false;
      }
    }, timeoutMs, 100);
  } catch {
    throw new Error(`still failing ${Date.now() - since} ms after the fault: ${(last as Error | undefined)?.message}`);
  }
  return Date.now() - since;
}

function owner(primaries: RedisClusterPrimary[], slot: number): RedisClusterPrimary {
  const found = primaries.find((p) =>
    p.slots.some((range) => {
      const [from, to = from] = range.split("-").map(Number);
      return slot >= from! && slot <= to!;
    }),
  );
  if (!found) throw new Error(`no primary owns slot ${slot}`);
  return found;
}

async function keyslot(port: number, key: string): Promise<number> {
  return Number(await cli(port, "CLUSTER", "KEYSLOT", key));
}

describe("a Redis Cluster of three primaries with a replica each", () => {
  const redis = new RedisCluster();
  let client: ClusterClient;

  beforeAll(async () => {
    const at = Date.now();
    await redis.start();
    report("start", { ms: Date.now() - at, url: redis.url });
    client = clusterClient(redis.url);
    await client.connect();
  }, 60_000);

  afterAll(async () => {
    await client?.close().catch(() => {});
    await redis.stop();
  });

  it("spreads keys and sharded channels over the three primaries, and replicates them", async () => {
    const primaries = await redis.primaries();
    expect(primaries).toHaveLength(3);
    expect(primaries.every((p) => p.replicas.length === 1 && p.pid !== undefined)).toBe(true);
    expect(new Set(primaries.flatMap((p) => [p.port, ...p.replicas])).size).toBe(6);
    expect(redis.url).toMatch(/^redis\+cluster:\/\/127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+$/);

    const keys = Array.from({ length: 300 }, (_, i) => `palaver:dev:{${i}}`);
    await Promise.all(keys.map((key, i) => client.set(key, `node-${i}`)));
    expect(await Promise.all(keys.map((key) => client.get(key)))).toEqual(keys.map((_, i) => `node-${i}`));
    const sizes = await Promise.all(primaries.map(async (p) => Number(await cli(p.port, "DBSIZE"))));
    expect(sizes.every((n) => n > 0)).toBe(true);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(keys.length);
    await waitFor("the replicas to hold their primaries' keys", async () => {
      const replicaSizes = await Promise.all(primaries.map(async (p) => Number(await cli(p.replicas[0]!, "DBSIZE"))));
      return replicaSizes.every((n, i) => n === sizes[i]);
    }, 10_000);

    // One node channel on each primary, as the bus names them.
    const channels = new Map<number, string>();
    for (let i = 0; channels.size < primaries.length && i < 100; i++) {
      const channel = `palaver:node:{n${i}}`;
      const port = owner(primaries, await keyslot(primaries[0]!.port, channel)).port;
      if (!channels.has(port)) channels.set(port, channel);
    }
    expect(channels.size).toBe(3);
    const received: string[] = [];
    for (const channel of channels.values()) await client.sSubscribe(channel, (message) => received.push(`${channel} ${message}`));
    for (const [port, channel] of channels) {
      // The subscription is on the shard that owns the channel, and only there.
      expect(await cli(port, "PUBSUB", "SHARDNUMSUB", channel)).toBe(`${channel}\n1`);
      for (const other of primaries.filter((p) => p.port !== port)) {
        expect(await cli(other.port, "PUBSUB", "SHARDCHANNELS")).not.toContain(channel);
      }
      expect(await client.sPublish(channel, "hand-off")).toBe(1);
    }
    await waitFor("the sharded messages", () => received.length === channels.size, 5000);
    expect(received.sort()).toEqual([...channels.values()].map((c) => `${c} hand-off`).sort());
    // One call per channel: node-redis sends a list of channels in one SUNSUBSCRIBE, which CROSSSLOT refuses.
    for (const channel of channels.values()) await client.sUnsubscribe(channel);
  });

  it("hands a killed primary's slots to its replica, and takes the killed server back as a replica", async () => {
    const key = "palaver:dev:{failover}";
    const before = await redis.primaries();
    const index = before.indexOf(owner(before, await keyslot(before[0]!.port, key)));
    const killed = await redis.killPrimary(index);
    const killedAt = Date.now();
    const failoverMs = await redis.waitForFailover();

    const after = await redis.primaries();
    expect(after).toHaveLength(3);
    const replacement = owner(after, await keyslot(after[0]!.port, key));
    expect(killed.replicas).toContain(replacement.port);
    expect(replacement.slots).toEqual(killed.slots);
    expect(await cli(after[0]!.port, "SET", key, "after-failover")).toBe("OK");
    expect(await cli(replacement.port, "GET", key)).toBe("after-failover");
    // node-redis: the same client, as a node's adapter would keep it through the fault.
    const clientMs = await untilItWorks(killedAt, () => client.set(key, "node-redis"));
    expect(await client.get(key)).toBe("node-redis");
    report("primary killed", { failoverMs, nodeRedisWritesAgainAfterMs: clientMs, killed: killed.port, replacement: replacement.port });

    const recoverAt = Date.now();
    await redis.recover();
    const recovered = await redis.primaries();
    expect(owner(recovered, await keyslot(recovered[0]!.port, key)).replicas).toEqual([killed.port]);
    expect(redis.nodes.every((n) => n.pid !== undefined)).toBe(true);
    report("killed server back as a replica", { ms: Date.now() - recoverAt });
  });

  it("keeps a node's hand-off channel working through Palaver's bus when its slot moves to another primary", async () => {
    const logger = pino({ level: "silent" });
    const [here, there] = await Promise.all(["slot-a", "slot-b"].map((node) => connectRedis(redis.url, { nodeId: node, logger })));
    const [busA, busB] = [new RedisBus("slot-a", here!, logger), new RedisBus("slot-b", there!, logger)];
    try {
      const received: string[] = [];
      await busA.subscribe((fanouts) => received.push(...fanouts.flatMap((f) => f.entries.map((e) => e.deviceKey))), {
        interrupted() {},
        resumed() {},
      });
      // A publish the move refuses is published again by the loop below; its rejection is not the test's business.
      const handOff = (deviceKey: string) =>
        void busB.publish("slot-a", [{ body: new Uint8Array([1]), entries: [{ deviceKey, eventId: 1n }] }]).catch(() => {});
      handOff("1");
      await waitFor("the hand-off before the move", async () => received.includes("1"), 5000);
      const moved = await redis.moveSlotOf("palaver:node:{slot-a}");
      report("slot moved", moved);
      // node-redis follows the channel to its slot's new owner: a hand-off published after the move arrives.
      await waitFor(
        "a hand-off after the move",
        async () => {
          handOff("2");
          await sleep(100);
          return received.includes("2");
        },
        10_000,
      );
    } finally {
      await Promise.all([busA.close(), busB.close()]);
      await Promise.all([here!.close(), there!.close()]);
    }
  });

  it("comes back usable and empty after a restart of every server", async () => {
    await client.set("palaver:dev:{before-restart}", "x");
    const restartAt = Date.now();
    const downMs = await redis.restartEmpty();

    const primaries = await redis.primaries();
    expect(primaries).toHaveLength(3);
    expect(primaries.every((p) => p.replicas.length === 1)).toBe(true);
    for (const node of redis.nodes) expect(await cli(node.port, "DBSIZE")).toBe("0");
    for (let i = 0; i < 30; i++) expect(await cli(primaries[0]!.port, "SET", `palaver:dev:{${i}}`, "again")).toBe("OK");
    const sizes = await Promise.all(primaries.map(async (p) => Number(await cli(p.port, "DBSIZE"))));
    expect(sizes.every((n) => n > 0)).toBe(true);

    const fresh = clusterClient(redis.url);
    try {
      await fresh.connect();
      expect(await fresh.get("palaver:dev:{before-restart}")).toBeNull();
      expect(await fresh.get("palaver:dev:{7}")).toBe("again");
    } finally {
      await fresh.close();
    }
    // The long-lived client has to find the new cluster (same addresses, new node ids) by itself. Reported, not asserted:
    // node-redis 6.3.1 may keep the slot map it read from a server that was up but not yet part of the cluster, and
    // then fails every command until it is recreated. That is for the Redis adapter to cope with, not this fixture.
    const longLived = await untilItWorks(restartAt, async () => {
      const value = await client.get("palaver:dev:{7}");
      if (value !== "again") throw new Error(`read ${value}`);
    }, 10_000).catch((error: Error) => error.message);
    report("restarted empty", { downMs, nodeRedisLongLivedClientWorksAgainAfterMs: longLived });
  });
});
