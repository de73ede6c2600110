import { Redis } from "ioredis";
import type { Logger } from "pino";

/** What a node uses a Redis connection for: presence and publishing (commands), or its bus channel (subscriber). */
export type RedisRole = "commands" | "subscriber";

export interface RedisConnectionOptions {
  nodeId: string;
  role: RedisRole;
  logger: Logger;
  /** Told of every error the connection reports (Metrics.redisErrors). */
  onError?: (role: RedisRole) => void;
  /** Told each time the connection, having lost Redis, schedules a reconnect (Metrics.redisReconnects). */
  onReconnect?: (role: RedisRole) => void;
}

/** One of a node's Redis connections, named for CLIENT LIST, its errors logged and both errors and reconnects told. */
export function connectRedis(url: string, options: RedisConnectionOptions): Redis {
  const { nodeId, role, logger } = options;
  // Commands fail fast while Redis is away (routing is best effort); the subscriber queues its SUBSCRIBE.
  const redis = new Redis(url, {
    connectionName: `palaver-${nodeId}-${role}`, // names the node and role in CLIENT LIST
    maxRetriesPerRequest: 1,
    enableOfflineQueue: role === "subscriber",
  });
  redis.on("error", (error: Error) => {
    options.onError?.(role);
    logger.warn({ err: error, role }, "redis connection error");
  });
  redis.on("reconnecting", () => options.onReconnect?.(role));
  return redis;
}
