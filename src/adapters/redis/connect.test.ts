import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { type RedisRole, connectRedis } from "./connect.js";

const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const logger = pino({ level: "silent" });
const clients: Redis[] = [];
afterAll(() => {
  for (const client of clients) client.disconnect();
});

describe("connectRedis", () => {
  it("names the connection by node and role, and tells of each reconnect after Redis dropped it", async () => {
    const nodeId = `t${randomBytes(6).toString("hex")}`;
    const reconnects: RedisRole[] = [];
    const onReconnect = (role: RedisRole) => reconnects.push(role);
    const redis = connectRedis(redisUrl, { nodeId, role: "subscriber", logger, onReconnect });
    const admin = new Redis(redisUrl);
    clients.push(redis, admin);
    await redis.ping();
    const list = (await admin.client("LIST")) as string;
    const line = list.split("\n").find((l) => l.includes(` name=palaver-${nodeId}-subscriber `));
    const id = /(?:^|\s)id=(\d+)/.exec(line ?? "")?.[1];
    expect(id).toBeDefined();
    const ready = new Promise((resolve) => redis.once("ready", resolve));
    await admin.client("KILL", "ID", id!);
    await ready;
    expect(reconnects).toEqual(["subscriber"]);
  });

  it("tells of each error, for instance while Redis cannot be reached", async () => {
    const errors: RedisRole[] = [];
    // Port 1 on loopback refuses connections.
    const onError = (role: RedisRole) => errors.push(role);
    const redis = connectRedis("redis://127.0.0.1:1", { nodeId: "t", role: "commands", logger, onError });
    clients.push(redis);
    await new Promise((resolve) => redis.once("error", resolve)); // after connectRedis's own listener
    expect(errors).toEqual(["commands"]);
  });
});
