import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { killConnectionNamed, redisAdmin, redisUrl } from "../../../test/support/redis.js";
import { connectRedis, parseRedisUrl, type RedisLink, type RedisRole } from "./connect.js";

const logger = pino({ level: "silent" });
const links: RedisLink[] = [];
afterAll(async () => {
  for (const link of links) await link.close();
});

describe("parseRedisUrl", () => {
  it("reads one Redis, or a cluster's seed nodes with credentials for each", () => {
    expect(parseRedisUrl("redis://127.0.0.1:6379")).toEqual({ cluster: false, urls: ["redis://127.0.0.1:6379"] });
    expect(parseRedisUrl("rediss+cluster://u:p@a:7000,b:7001/")).toEqual({
      cluster: true,
      urls: ["rediss://u:p@a:7000", "rediss://u:p@b:7001"],
    });
    expect(parseRedisUrl("redis+cluster://a:7000")).toEqual({ cluster: true, urls: ["redis://a:7000"] });
  });

  it("refuses what names no Redis", () => {
    for (const text of ["http://a:1", "redis+cluster://", "redis+cluster://a:1,,b:2", "redis:nohost", "a:6379"]) {
      expect(parseRedisUrl(text), text).toBeNull();
    }
  });
});

describe("connectRedis", () => {
  it("names each connection by node and role, and tells of the error and the reconnect when Redis drops one", async () => {
    const nodeId = `t${randomBytes(6).toString("hex")}`;
    const told: string[] = [];
    const link = await connectRedis(redisUrl, {
      nodeId,
      logger,
      onError: (role: RedisRole) => told.push(`error ${role}`),
      onReconnect: (role: RedisRole) => told.push(`reconnect ${role}`),
    });
    links.push(link);
    const admin = await redisAdmin();
    try {
      const names = (await admin.clientList()).map((c) => c.name);
      expect(names).toEqual(expect.arrayContaining([`palaver-${nodeId}-commands`, `palaver-${nodeId}-subscriber`]));
      await killConnectionNamed(admin, `palaver-${nodeId}-subscriber`);
      await expect.poll(() => told).toEqual(["error subscriber", "reconnect subscriber"]);
      // And it works again.
      await link.set(`palaver:test:${nodeId}`, "1", 5);
      expect(await link.get(`palaver:test:${nodeId}`)).toBe("1");
    } finally {
      await admin.close();
    }
  });
});
