import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { redisAdmin, redisUrl } from "../../test/support/redis.js";
import type { RateLimit, RateLimiters } from "../ports/rate-limiter.js";
import { memoryRateLimiters, redisRateLimiters } from "./rate-limiters.js";
import { connectRedis, type RedisLink } from "./redis/connect.js";

const logger = pino({ level: "silent" });
const links: RedisLink[] = [];
afterAll(async () => {
  for (const link of links) await link.close();
});

/** A node's link to the machine's Redis, as app.ts opens it. */
async function connect(): Promise<RedisLink> {
  const link = await connectRedis(redisUrl, { nodeId: "t", logger });
  links.push(link);
  return link;
}

/** A limit no other test (or earlier run) has counted. */
const limit = (points: number, windowSeconds = 60, options: Partial<RateLimit> = {}): RateLimit => ({
  name: `t${randomBytes(6).toString("hex")}`,
  points,
  windowSeconds,
  ...options,
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The same contract in memory and on the machine's real Redis. */
describe.each([
  ["memory", async () => memoryRateLimiters],
  ["redis", async () => redisRateLimiters(await connect())],
] as const)("rate limiters in %s", (_store, limiters: () => Promise<RateLimiters>) => {
  it("lets a key take its points in a window, then says how long until the window ends", async () => {
    const limiter = (await limiters())(limit(3));
    for (let i = 0; i < 3; i++) expect(await limiter.take("k", 1)).toBeNull();
    const waitMs = await limiter.take("k", 1);
    expect(waitMs).toBeGreaterThan(58_000);
    expect(waitMs).toBeLessThanOrEqual(60_000);
  });

  it("counts each key and each limit on its own", async () => {
    const store = await limiters();
    const [a, b] = [store(limit(1)), store(limit(1))];
    expect(await a.take("k", 1)).toBeNull();
    expect(await a.take("other", 1)).toBeNull();
    expect(await b.take("k", 1)).toBeNull();
    expect(await a.take("k", 1)).not.toBeNull();
  });

  it("takes several points at once (bytes), refusing a take that does not fit", async () => {
    const store = await limiters();
    const limiter = store(limit(100));
    expect(await limiter.take("k", 60)).toBeNull();
    expect(await limiter.take("k", 40)).toBeNull();
    expect(await limiter.take("k", 1)).not.toBeNull();
    expect(await store(limit(100)).take("k", 101)).not.toBeNull();
  });

  it("starts the count over when the window ends", async () => {
    const limiter = (await limiters())(limit(1, 1));
    expect(await limiter.take("k", 1)).toBeNull();
    expect(await limiter.take("k", 1)).toBeLessThanOrEqual(1000);
    await sleep(1100);
    expect(await limiter.take("k", 1)).toBeNull();
  });
});

describe("rate limiters on Redis", () => {
  it("count once across nodes, each on its own connection", async () => {
    const shared = limit(2);
    const [nodeA, nodeB] = [redisRateLimiters(await connect())(shared), redisRateLimiters(await connect())(shared)];
    expect(await nodeA.take("k", 1)).toBeNull();
    expect(await nodeB.take("k", 1)).toBeNull();
    expect(await nodeA.take("k", 1)).not.toBeNull();
    expect(await nodeB.take("k", 1)).not.toBeNull();
    // One key per limit and key, gone with its window.
    const admin = await redisAdmin();
    const ttl = await admin.pTTL(`palaver:limit:${shared.name}:k`);
    await admin.close();
    expect(ttl).toBeGreaterThan(58_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it("keep a node-local limit on each node", async () => {
    const local = limit(1, 60, { nodeLocal: true });
    const [nodeA, nodeB] = [redisRateLimiters(await connect())(local), redisRateLimiters(await connect())(local)];
    expect(await nodeA.take("k", 1)).toBeNull();
    expect(await nodeB.take("k", 1)).toBeNull();
    expect(await nodeA.take("k", 1)).not.toBeNull();
  });

  it("count in the node's memory while Redis cannot be reached, so the limits still hold per node", async () => {
    // A link whose connections are gone: its commands fail at once, as while Redis is down.
    const gone = await connectRedis(redisUrl, { nodeId: "t", logger });
    await gone.close();
    const limiter = redisRateLimiters(gone)(limit(2));
    expect(await limiter.take("k", 1)).toBeNull();
    expect(await limiter.take("k", 1)).toBeNull();
    const waitMs = await limiter.take("k", 1);
    expect(waitMs).toBeGreaterThan(58_000);
  });
});
